//! Batch loaders: nested fields of many parents cost one statement per kind, not one per parent.
//!
//! Each request gets its own loaders over the request's [`Db`], so batched reads see the same snapshot as the
//! rest of the request, and the request's own task runs their batches ([`Loaders::drive`]): a field asks for its
//! key and waits; once the request can go no further, every key asked for so far is one batch per kind. Nothing
//! waits on a timer, and no other thread can start a batch while a list's fields are still asking (with
//! async-graphql's `DataLoader`, which spawns each batch after a timer of at least a millisecond, the runtime's
//! other thread sometimes did, splitting a batch).

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::ops::Deref;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures::future::{BoxFuture, poll_fn};
use futures::stream::{FuturesUnordered, Stream};
use service::db::Db;
use service::entity::{account, entry, transfer, user};
use service::{ledger, users};
use tokio::sync::oneshot;

type Shared = Arc<service::Error>;

/// The most keys one statement takes; more make several statements.
const MAX_BATCH: usize = 1000;

/// Reads the values of many keys of one kind at once.
pub trait Load<K>: Send + Sync + 'static {
    type Value: Clone + Send + Sync + 'static;

    /// The value of each key that has one.
    fn load(&self, keys: &[K]) -> impl Future<Output = Result<HashMap<K, Self::Value>, service::Error>> + Send;
}

type Batch<K, V> = Arc<Result<HashMap<K, V>, Shared>>;

/// One kind of key's loader, and the keys asked for since its last batch.
pub struct Batched<L: Load<K>, K> {
    loader: Arc<L>,
    waiting: Mutex<Waiting<K, L::Value>>,
}

struct Waiting<K, V> {
    keys: HashSet<K>,
    callers: Vec<oneshot::Sender<Batch<K, V>>>,
}

impl<K, V> Default for Waiting<K, V> {
    fn default() -> Self {
        Self { keys: HashSet::new(), callers: Vec::new() }
    }
}

impl<L: Load<K>, K: Clone + Eq + Hash + Send + Sync + 'static> Batched<L, K> {
    fn new(loader: L) -> Self {
        Self { loader: Arc::new(loader), waiting: Mutex::default() }
    }

    pub async fn load_one(&self, key: K) -> Result<Option<L::Value>, Shared> {
        Ok(self.load_many([key.clone()]).await?.remove(&key))
    }

    /// The values of `keys` that have one, read in the request's next batch of this kind.
    pub async fn load_many(&self, keys: impl IntoIterator<Item = K>) -> Result<HashMap<K, L::Value>, Shared> {
        let keys: Vec<K> = keys.into_iter().collect();
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            waiting.keys.extend(keys.iter().cloned());
            waiting.callers.push(tx);
        }
        // Only a request that is not driven (a bug) or has ended drops its batches.
        let batch = rx.await.map_err(|_| Arc::new(service::Error::internal("a batch load was dropped")))?;
        match &*batch {
            Ok(found) => Ok(keys.into_iter().filter_map(|key| Some((key.clone(), found.get(&key)?.clone()))).collect()),
            Err(err) => Err(err.clone()),
        }
    }

    /// The load of every key asked for since the last batch, which answers everyone who asked.
    fn take(&self) -> Option<BoxFuture<'static, ()>> {
        let Waiting { keys, callers } =
            std::mem::take(&mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner));
        if callers.is_empty() {
            return None;
        }
        let loader = self.loader.clone();
        Some(Box::pin(async move {
            let keys: Vec<K> = keys.into_iter().collect();
            let mut found = HashMap::with_capacity(keys.len());
            let mut failed = None;
            for chunk in keys.chunks(MAX_BATCH) {
                match loader.load(chunk).await {
                    Ok(values) => found.extend(values),
                    Err(err) => {
                        failed = Some(Arc::new(err));
                        break;
                    }
                }
            }
            let batch: Batch<K, L::Value> = Arc::new(failed.map_or(Ok(found), Err));
            for caller in callers {
                let _ = caller.send(batch.clone());
            }
        }))
    }
}

/// All loaders of one request (or of one socket's subscriptions), shared by its fields and its driver.
#[derive(Clone)]
pub struct Loaders(Arc<Kinds>);

pub struct Kinds {
    pub accounts_by_owner: Batched<AccountsByOwner, String>,
    pub account: Batched<AccountById, i64>,
    pub user: Batched<UserByName, String>,
    pub transfer: Batched<TransferById, i64>,
    pub entry: Batched<EntryById, i64>,
    pub emails: Batched<EmailsByUser, String>,
}

impl Deref for Loaders {
    type Target = Kinds;

    fn deref(&self) -> &Kinds {
        &self.0
    }
}

impl Loaders {
    pub fn new(db: &Db) -> Self {
        Self(Arc::new(Kinds {
            accounts_by_owner: Batched::new(AccountsByOwner(db.clone())),
            account: Batched::new(AccountById(db.clone())),
            user: Batched::new(UserByName(db.clone())),
            transfer: Batched::new(TransferById(db.clone())),
            entry: Batched::new(EntryById(db.clone())),
            emails: Batched::new(EmailsByUser(db.clone())),
        }))
    }

    /// Runs `request`, whose fields load through these loaders, and their batches beside it in the same task.
    pub async fn drive<F: Future>(&self, request: F) -> F::Output {
        drive(request, || self.batches()).await
    }

    /// [`Self::drive`] for a socket's stream of responses.
    pub fn drive_stream<S: Stream + Send>(&self, responses: S) -> impl Stream<Item = S::Item> + Send {
        let (loaders, mut responses, mut loads) = (self.clone(), Box::pin(responses), Loads::default());
        futures::stream::poll_fn(move |cx| {
            loop {
                if let Poll::Ready(response) = responses.as_mut().poll_next(cx) {
                    // What other subscriptions asked for meanwhile starts now, not at the next poll.
                    loads.run(loaders.batches(), cx);
                    return Poll::Ready(response);
                }
                if !loads.run(loaders.batches(), cx) {
                    return Poll::Pending;
                }
            }
        })
    }

    /// A batch of each kind that has keys waiting.
    fn batches(&self) -> impl Iterator<Item = BoxFuture<'static, ()>> {
        let kinds = &self.0;
        [
            kinds.accounts_by_owner.take(),
            kinds.account.take(),
            kinds.user.take(),
            kinds.transfer.take(),
            kinds.entry.take(),
            kinds.emails.take(),
        ]
        .into_iter()
        .flatten()
    }
}

/// Runs `request` and, whenever it can go no further, the batches `batches` hands out, in the same task.
async fn drive<F: Future, I: IntoIterator<Item = BoxFuture<'static, ()>>>(
    request: F,
    batches: impl Fn() -> I,
) -> F::Output {
    let mut request = pin!(request);
    let mut loads = Loads::default();
    poll_fn(|cx| {
        loop {
            if let Poll::Ready(response) = request.as_mut().poll(cx) {
                return Poll::Ready(response);
            }
            if !loads.run(batches(), cx) {
                return Poll::Pending;
            }
        }
    })
    .await
}

/// The batches running.
#[derive(Default)]
struct Loads(FuturesUnordered<BoxFuture<'static, ()>>);

impl Loads {
    /// Starts `batches` and polls every batch running; true if one finished, so that those who waited on it may go
    /// on.
    fn run(&mut self, batches: impl IntoIterator<Item = BoxFuture<'static, ()>>, cx: &mut Context<'_>) -> bool {
        self.0.extend(batches);
        let mut finished = false;
        while let Poll::Ready(Some(())) = Pin::new(&mut self.0).poll_next(cx) {
            finished = true;
        }
        finished
    }
}

pub struct AccountsByOwner(Db);

impl Load<String> for AccountsByOwner {
    type Value = Vec<account::Model>;

    async fn load(&self, owners: &[String]) -> Result<HashMap<String, Self::Value>, service::Error> {
        let mut by_owner: HashMap<String, Self::Value> = HashMap::new();
        for account in ledger::accounts_of_owners(&self.0, owners).await? {
            by_owner.entry(account.owner.clone()).or_default().push(account);
        }
        Ok(by_owner)
    }
}

pub struct AccountById(Db);

impl Load<i64> for AccountById {
    type Value = account::Model;

    async fn load(&self, ids: &[i64]) -> Result<HashMap<i64, Self::Value>, service::Error> {
        Ok(ledger::accounts_by_ids(&self.0, ids).await?.into_iter().map(|a| (a.id, a)).collect())
    }
}

pub struct UserByName(Db);

impl Load<String> for UserByName {
    type Value = user::Model;

    async fn load(&self, names: &[String]) -> Result<HashMap<String, Self::Value>, service::Error> {
        Ok(users::by_usernames(&self.0, names).await?.into_iter().map(|u| (u.username.clone(), u)).collect())
    }
}

pub struct TransferById(Db);

impl Load<i64> for TransferById {
    type Value = transfer::Model;

    async fn load(&self, ids: &[i64]) -> Result<HashMap<i64, Self::Value>, service::Error> {
        Ok(ledger::transfers_by_ids(&self.0, ids).await?.into_iter().map(|t| (t.id, t)).collect())
    }
}

pub struct EntryById(Db);

impl Load<i64> for EntryById {
    type Value = entry::Model;

    async fn load(&self, ids: &[i64]) -> Result<HashMap<i64, Self::Value>, service::Error> {
        Ok(ledger::entries_by_ids(&self.0, ids).await?.into_iter().map(|e| (e.id, e)).collect())
    }
}

pub struct EmailsByUser(Db);

impl Load<String> for EmailsByUser {
    type Value = Vec<String>;

    async fn load(&self, names: &[String]) -> Result<HashMap<String, Self::Value>, service::Error> {
        let mut by_user: HashMap<String, Self::Value> = HashMap::new();
        for email in users::emails_of(&self.0, names).await? {
            by_user.entry(email.username).or_default().push(email.email);
        }
        Ok(by_user)
    }
}

#[cfg(test)]
mod tests {
    use futures::future::join_all;

    use super::*;

    /// Squares its keys, noting the keys of each call; -1 has no square and fails the whole batch.
    #[derive(Clone, Default)]
    struct Squares(Arc<Mutex<Vec<Vec<i64>>>>);

    impl Squares {
        fn calls(&self) -> Vec<Vec<i64>> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
        }
    }

    impl Load<i64> for Squares {
        type Value = i64;

        async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, i64>, service::Error> {
            let mut sorted = keys.to_vec();
            sorted.sort_unstable();
            self.0.lock().unwrap_or_else(PoisonError::into_inner).push(sorted);
            // A database answers later.
            tokio::task::yield_now().await;
            if keys.contains(&-1) {
                return Err(service::Error::internal("no square"));
            }
            Ok(keys.iter().map(|key| (*key, key * key)).collect())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_key_asked_before_the_request_waits_is_one_batch_however_busy_the_other_thread() {
        let busy = tokio::spawn(async {
            loop {
                tokio::task::yield_now().await;
            }
        });
        for _ in 0..50 {
            let squares = Squares::default();
            let batched = Batched::new(squares.clone());
            let found = drive(join_all((1..=100).map(|key| batched.load_one(key))), || batched.take()).await;
            let found: Vec<Option<i64>> = found.into_iter().map(|value| value.expect("loaded")).collect();
            assert_eq!(found, (1..=100).map(|key| Some(key * key)).collect::<Vec<_>>());
            assert_eq!(squares.calls(), vec![(1..=100).collect::<Vec<_>>()]);
        }
        busy.abort();
    }

    #[tokio::test]
    async fn a_key_asked_once_a_batch_answered_goes_in_the_next_batch() {
        let squares = Squares::default();
        let batched = Batched::new(squares.clone());
        let request = async {
            let two = batched.load_one(2).await?.expect("a square");
            batched.load_many([two, 3, 3]).await
        };
        let found = drive(request, || batched.take()).await.expect("loaded");
        assert_eq!(found, HashMap::from([(4, 16), (3, 9)]));
        assert_eq!(squares.calls(), vec![vec![2], vec![3, 4]]);
    }

    #[tokio::test]
    async fn a_failed_batch_fails_everyone_who_waited_on_it_and_only_them() {
        let batched = Batched::new(Squares::default());
        let request = async {
            let first = futures::join!(batched.load_one(-1), batched.load_one(5));
            (first, batched.load_one(6).await)
        };
        let ((failed, also_failed), later) = drive(request, || batched.take()).await;
        assert!(failed.is_err() && also_failed.is_err());
        assert_eq!(later.expect("its own batch"), Some(36));
    }

    #[tokio::test]
    async fn keys_that_name_nothing_are_absent_and_no_keys_load_nothing() {
        struct Evens;
        impl Load<i64> for Evens {
            type Value = i64;

            async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, i64>, service::Error> {
                Ok(keys.iter().filter(|key| *key % 2 == 0).map(|key| (*key, *key)).collect())
            }
        }
        let batched = Batched::new(Evens);
        let found = drive(batched.load_many([1, 2, 3]), || batched.take()).await.expect("loaded");
        assert_eq!(found, HashMap::from([(2, 2)]));
        let none = drive(batched.load_many([]), || batched.take()).await.expect("nothing to load");
        assert!(none.is_empty());
    }
}
