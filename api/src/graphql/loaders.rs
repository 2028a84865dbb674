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
        let mut request = pin!(request);
        let mut loads = FuturesUnordered::new();
        poll_fn(|cx| {
            loop {
                if let Poll::Ready(response) = request.as_mut().poll(cx) {
                    return Poll::Ready(response);
                }
                if !self.run(&mut loads, cx) {
                    return Poll::Pending;
                }
            }
        })
        .await
    }

    /// [`Self::drive`] for a socket's stream of responses.
    pub fn drive_stream<S: Stream + Send>(&self, responses: S) -> impl Stream<Item = S::Item> + Send {
        let (loaders, mut responses, mut loads) = (self.clone(), Box::pin(responses), FuturesUnordered::new());
        futures::stream::poll_fn(move |cx| {
            loop {
                if let Poll::Ready(response) = responses.as_mut().poll_next(cx) {
                    // What other subscriptions asked for meanwhile starts now, not at the next poll.
                    loaders.run(&mut loads, cx);
                    return Poll::Ready(response);
                }
                if !loaders.run(&mut loads, cx) {
                    return Poll::Pending;
                }
            }
        })
    }

    /// Starts a batch of each kind that has keys waiting and polls the loads running; true if one finished, so
    /// that those who waited on it may go on.
    fn run(&self, loads: &mut FuturesUnordered<BoxFuture<'static, ()>>, cx: &mut Context<'_>) -> bool {
        let kinds = &self.0;
        loads.extend(
            [
                kinds.accounts_by_owner.take(),
                kinds.account.take(),
                kinds.user.take(),
                kinds.transfer.take(),
                kinds.entry.take(),
                kinds.emails.take(),
            ]
            .into_iter()
            .flatten(),
        );
        let mut finished = false;
        while let Poll::Ready(Some(())) = Pin::new(&mut *loads).poll_next(cx) {
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
