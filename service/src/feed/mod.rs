//! The change feed: one per server process, telling subscribers that an account's ledger grew or that a user's
//! sessions may have ended.
//!
//! The database is the source of truth and the feed only says where to look: a subscriber keeps its own cursor
//! (an entry's `account_seq`) and, when woken, reads every entry after it. So a lost or coalesced wake-up costs
//! nothing but latency, as long as some later wake-up comes; and one does, since every reconnect of the listener
//! wakes everyone ([`Feed::resync`]). A subscription costs no database work while nothing happens to its account.
//!
//! - PostgreSQL: a transaction that writes entries announces them with `pg_notify` on [`CHANNEL`] (one small
//!   notification per transaction), so only committed entries are announced, and every server process on the
//!   database hears them through one `LISTEN` connection ([`listener`]).
//! - SQLite (one process): the same announcements are published in-process once their transaction committed.

mod listener;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use entity::entry;
use futures_core::Stream;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::Error;

/// The notification channel on PostgreSQL.
pub const CHANNEL: &str = "bank_feed";
/// How many entries a subscriber reads per statement while catching up.
const BATCH: u64 = 100;
/// Session changes buffered per listening socket; one that falls further behind re-checks its session anyway.
const SESSION_BUFFER: usize = 1024;

/// What one notification announces. On PostgreSQL its JSON is the payload (`{"entries":[[account_id, seq], …]}`,
/// `{"sessions_ended":"alice"}`), built by SQL as well as by [`Feed::announce`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Entries committed: each account with its newest `account_seq`.
    Entries(Vec<(i64, i64)>),
    /// Some session of this user ended (logout, password change, deletion, a copied refresh token), or what the user
    /// may do changed (a new role): their sockets re-check.
    SessionsEnded(String),
}

/// What a socket hears about sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionChange {
    /// Sessions of this user may have ended.
    Of(Arc<str>),
    /// Anyone's may have: announcements may have been lost (the listener reconnected, or the socket fell behind).
    Anyone,
}

/// The process's change feed. Cheap to clone.
#[derive(Clone)]
pub struct Feed(Arc<Inner>);

struct Inner {
    backend: DbBackend,
    /// One watch per account with subscribers, holding the newest `account_seq` announced.
    accounts: Mutex<HashMap<i64, watch::Sender<i64>>>,
    sessions: broadcast::Sender<SessionChange>,
    /// Every change committed from now on will be heard here: always on SQLite; on PostgreSQL while `LISTEN` holds.
    hearing: AtomicBool,
}

impl Feed {
    /// The feed for `db`'s database: on PostgreSQL it starts listening (a task that lives as long as the feed).
    pub fn start(db: &DatabaseConnection) -> Self {
        let feed = Self(Arc::new(Inner {
            backend: db.get_database_backend(),
            accounts: Mutex::default(),
            sessions: broadcast::channel(SESSION_BUFFER).0,
            hearing: AtomicBool::new(db.get_database_backend() != DbBackend::Postgres),
        }));
        if feed.0.backend == DbBackend::Postgres {
            let pool = db.get_postgres_connection_pool().clone();
            tokio::spawn(listener::run(pool, Arc::downgrade(&feed.0)));
        }
        feed
    }

    /// Announces `change` inside the transaction (or after the statement) `db` runs, before it commits: on
    /// PostgreSQL with `pg_notify`, which delivers only if the transaction commits. Nothing on SQLite, where
    /// [`Feed::committed`] publishes after the commit.
    pub(crate) async fn announce(&self, db: &impl ConnectionTrait, change: &Change) -> Result<(), Error> {
        if self.0.backend != DbBackend::Postgres {
            return Ok(());
        }
        let payload = serde_json::to_string(change)
            .map_err(|err| Error::internal_from("serialising a change for the feed", err))?;
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_notify($1, $2)",
            [CHANNEL.into(), payload.into()],
        ))
        .await?;
        Ok(())
    }

    /// Publishes a committed `change` in this process (SQLite). On PostgreSQL the listener publishes what the
    /// database delivers, for every process alike; ended sessions are also published here at once, so that this
    /// process's next request no longer finds them live (see [`crate::sessions`]) even before the listener heard.
    pub(crate) fn committed(&self, change: Change) {
        if self.0.backend != DbBackend::Postgres || matches!(change, Change::SessionsEnded(_)) {
            self.0.publish(change);
        }
    }

    /// Whether every change committed from now on will be heard in this process: always on SQLite; on PostgreSQL
    /// while the listener's `LISTEN` holds (what is announced while it is down is lost).
    pub fn hearing(&self) -> bool {
        self.0.hearing.load(Ordering::Acquire)
    }

    /// Every entry of `account_id` after the cursor `after` (an `account_seq`), oldest first, then each new entry
    /// as it commits; without `after`, only entries committed after this call. Each entry once, in ledger order.
    /// Access is for the caller to check first.
    pub fn entries(
        &self,
        db: DatabaseConnection,
        account_id: i64,
        after: Option<i64>,
    ) -> impl Stream<Item = Result<entry::Model, Error>> + Send + use<> {
        // Watching starts before the starting point is read, so that nothing committed in between goes unnoticed.
        let mut watch = self.watch(account_id);
        async_stream::try_stream! {
            let mut cursor = match after {
                Some(after) => after,
                None => newest_seq(&db, account_id).await?,
            };
            loop {
                let batch = entries_after(&db, account_id, cursor).await?;
                let caught_up = (batch.len() as u64) < BATCH;
                for entry in batch {
                    cursor = entry.account_seq;
                    yield entry;
                }
                if caught_up && watch.changed().await.is_err() {
                    // The feed is gone: the server is stopping.
                    break;
                }
            }
        }
    }

    /// Session changes from now on.
    pub fn sessions(&self) -> broadcast::Receiver<SessionChange> {
        self.0.sessions.subscribe()
    }

    fn watch(&self, account_id: i64) -> AccountWatch {
        let mut accounts = self.0.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        let receiver = accounts.entry(account_id).or_insert_with(|| watch::channel(0).0).subscribe();
        AccountWatch { feed: self.0.clone(), account_id, receiver: Some(receiver) }
    }
}

impl Inner {
    fn publish(&self, change: Change) {
        match change {
            Change::Entries(entries) => {
                let accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
                for (account_id, seq) in entries {
                    if let Some(sender) = accounts.get(&account_id) {
                        sender.send_modify(|newest| *newest = Ord::max(*newest, seq));
                    }
                }
            }
            Change::SessionsEnded(username) => {
                // Nobody listening is no failure.
                let _ = self.sessions.send(SessionChange::Of(username.into()));
            }
        }
    }

    /// Nothing announced from now on is heard until the next [`Inner::resync`].
    fn deaf(&self) {
        self.hearing.store(false, Ordering::Release);
    }

    /// Wakes every subscriber to re-read from its cursor and every socket to re-check its session: what was
    /// announced while nobody listened is lost, what was committed is not.
    fn resync(&self) {
        for sender in self.accounts.lock().unwrap_or_else(PoisonError::into_inner).values() {
            sender.send_modify(|_| {});
        }
        let _ = self.sessions.send(SessionChange::Anyone);
        // After the wake-up, so that whoever sees the feed hearing again has the wake-up waiting too.
        self.hearing.store(true, Ordering::Release);
    }
}

/// A subscriber's wake-ups for one account; the account leaves the registry with its last subscriber.
struct AccountWatch {
    feed: Arc<Inner>,
    account_id: i64,
    /// `None` only while dropping, so that the registry's count no longer includes it.
    receiver: Option<watch::Receiver<i64>>,
}

impl AccountWatch {
    async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        match &mut self.receiver {
            Some(receiver) => receiver.changed().await,
            None => std::future::pending().await,
        }
    }
}

impl Drop for AccountWatch {
    fn drop(&mut self) {
        let mut accounts = self.feed.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        // Given up under the lock, so that of two last watches dropping at once, the second sees no receiver left.
        drop(self.receiver.take());
        if accounts.get(&self.account_id).is_some_and(|sender| sender.receiver_count() == 0) {
            accounts.remove(&self.account_id);
        }
    }
}

/// The account's newest `account_seq` (0 before its first entry).
async fn newest_seq(db: &DatabaseConnection, account_id: i64) -> Result<i64, Error> {
    let newest: Option<Option<i64>> = entry::Entity::find()
        .select_only()
        .column_as(entry::Column::AccountSeq.max(), "newest")
        .filter(entry::Column::AccountId.eq(account_id))
        .into_tuple()
        .one(db)
        .await?;
    Ok(newest.flatten().unwrap_or(0))
}

/// Up to [`BATCH`] entries of the account after `cursor`, oldest first.
async fn entries_after(db: &DatabaseConnection, account_id: i64, cursor: i64) -> Result<Vec<entry::Model>, Error> {
    Ok(entry::Entity::find()
        .filter(entry::Column::AccountId.eq(account_id))
        .filter(entry::Column::AccountSeq.gt(cursor))
        .order_by_asc(entry::Column::AccountSeq)
        .limit(BATCH)
        .all(db)
        .await?)
}
