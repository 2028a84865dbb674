//! The change feed: one per server process, carrying an account's new entries to its subscribers and telling
//! sockets that a user's sessions may have ended.
//!
//! An announcement carries the entries themselves, so a subscriber that is up to date delivers them with no
//! database work at all; each account keeps its latest few ([`RECENT`]) for subscribers woken late. The database
//! stays the source of truth: a subscriber keeps its own cursor (an entry's `account_seq`), and whenever what the
//! feed holds does not continue that cursor (it fell further behind, or announcements were lost while the listener
//! reconnected, which wakes everyone: [`Inner::resync`]) it reads the entries after its cursor from the database.
//! A subscription costs no database work while nothing happens to its account.
//!
//! - PostgreSQL: committed entries are announced with `pg_notify` on [`CHANNEL`] by each process's announcing
//!   connection ([`notifier`], which says why not inside the transaction that writes them), and every server
//!   process on the database hears them through one `LISTEN` connection ([`listener`]). An account's entries
//!   commit in `account_seq` order (each is numbered under the account's row lock) and are mostly announced in it;
//!   where they are not (two processes, or two requests of one, announcing at once), the feed sees a gap and its
//!   subscribers read the database, and the late announcement brings nothing new. Ended sessions are announced
//!   inside the transaction that ends them ([`Feed::announce`]): rare, and never to be lost.
//! - SQLite (one process): the same announcements are published in-process once their transaction committed.

mod listener;
mod notifier;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::entry;
use futures::Stream;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::Error;
use crate::db::Pool;
use crate::replicas::{Position, Positions};

/// The notification channel on PostgreSQL.
pub const CHANNEL: &str = "bank_feed";
/// How many entries a subscriber reads per statement while catching up.
const BATCH: u64 = 100;
/// How many of an account's latest announced entries the feed holds for its subscribers. A subscriber woken after
/// more than these were announced (a busy socket, a slow client) reads the rest from the database.
const RECENT: usize = 32;
/// Session changes buffered per listening socket; one that falls further behind re-checks its session anyway.
const SESSION_BUFFER: usize = 1024;
/// Fences waiting for the listener; more wait for room.
const FENCES: usize = 1024;
/// The longest a fence is waited for.
const FENCE_TIMEOUT: Duration = Duration::from_secs(1);

/// What one notification announces. On PostgreSQL its JSON is the payload (`{"entries":[[id, account_id, amount,
/// transfer_id, balance_after, account_seq, created_at], …]}`, `{"sessions_ended":"alice"}`, `"resync"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Entries committed, whole.
    Entries(Vec<Announced>),
    /// Some session of this user ended (logout, password change, deletion, a copied refresh token), or what the user
    /// may do changed (a new role): their sockets re-check.
    SessionsEnded(String),
    /// Announcements may have been lost (a process restarted, or its announcing connection broke): everyone
    /// re-reads, as after the listener reconnects.
    Resync,
    /// This user wrote up to this position of the primary's log: their queries must see it (see
    /// [`crate::replicas`]).
    Wrote(String, Position),
}

/// An entry as a notification carries it: a JSON array, the shape SQL's `json_build_array` builds cheaply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announced(i64, i64, i64, Option<i64>, i64, i64, DateTime<Utc>);

impl From<&entry::Model> for Announced {
    fn from(e: &entry::Model) -> Self {
        Self(e.id, e.account_id, e.amount, e.transfer_id, e.balance_after, e.account_seq, e.created_at)
    }
}

impl From<Announced> for entry::Model {
    fn from(Announced(id, account_id, amount, transfer_id, balance_after, account_seq, created_at): Announced) -> Self {
        Self { id, account_id, amount, created_at, transfer_id, balance_after, account_seq }
    }
}

impl Change {
    /// `entries`, committed.
    pub(crate) fn entries<'a>(entries: impl IntoIterator<Item = &'a entry::Model>) -> Self {
        Self::Entries(entries.into_iter().map(Announced::from).collect())
    }
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
    /// PostgreSQL: where committed entries are announced from.
    notifier: Option<notifier::Notifier>,
    /// One watch per account with subscribers, holding the account's latest announced entries.
    accounts: Mutex<HashMap<i64, watch::Sender<Recent>>>,
    sessions: broadcast::Sender<SessionChange>,
    /// Every change committed from now on will be heard here: always on SQLite; on PostgreSQL while `LISTEN` holds.
    hearing: AtomicBool,
    /// Where the positions users wrote up to go.
    positions: Arc<Positions>,
    /// Fences for the listener (PostgreSQL).
    fences: Option<mpsc::Sender<listener::Fence>>,
}

impl Feed {
    /// The feed for `db`'s database: on PostgreSQL it starts listening on one of `db`'s connections (a task that
    /// lives as long as the feed) and announcing on another, and the write positions it hears go to `positions`.
    pub fn start(db: &DatabaseConnection, positions: Arc<Positions>) -> Self {
        let postgres = db.get_database_backend() == DbBackend::Postgres;
        let (fences, waiting) = mpsc::channel(FENCES);
        let feed = Self(Arc::new(Inner {
            backend: db.get_database_backend(),
            notifier: postgres.then(|| {
                notifier::Notifier::start(db.get_postgres_connection_pool().connect_options().as_ref().clone())
            }),
            accounts: Mutex::default(),
            sessions: broadcast::channel(SESSION_BUFFER).0,
            hearing: AtomicBool::new(!postgres),
            positions,
            fences: postgres.then_some(fences),
        }));
        if postgres {
            let pool = db.get_postgres_connection_pool().clone();
            tokio::spawn(listener::run(pool, Arc::downgrade(&feed.0), waiting));
        }
        feed
    }

    /// Announces ended sessions inside the transaction `db` runs, before it commits: on PostgreSQL with
    /// `pg_notify`, which delivers only if the transaction commits, so that no process misses it. Nothing on
    /// SQLite, where [`Feed::committed`] publishes after the commit.
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

    /// Publishes a committed `change`: on SQLite in this process; on PostgreSQL entries are announced to every
    /// process (this returns once the notification is sent) and the listener publishes what the database
    /// delivers, for every process alike, while ended sessions (announced by their transaction) are also published
    /// here at once, so that this process's next request no longer finds them live (see [`crate::sessions`]) even
    /// before the listener heard.
    pub(crate) async fn committed(&self, change: Change) {
        match (&self.0.notifier, change) {
            (Some(notifier), Change::Entries(entries)) => notifier.announce(entries).await,
            (Some(_), Change::Resync) => {}
            (_, change) => self.0.publish(change),
        }
    }

    /// Tells every process that `user` wrote: the primary's position now, past every commit `user` has been answered
    /// for, goes out with `pg_notify` (PostgreSQL only).
    pub async fn announce_position(&self, db: &Pool, user: &str) -> Result<(), Error> {
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_notify($1, json_build_object('wrote', json_build_array($2::text, pg_current_wal_lsn()::text))::text)",
            [CHANNEL.into(), user.into()],
        ))
        .await?;
        Ok(())
    }

    /// Waits (at most [`FENCE_TIMEOUT`]) until this process has heard everything committed before the call: true
    /// then; false when it cannot tell (it is not listening, or the fence failed). One round trip on the listening
    /// connection, shared by the calls made meanwhile.
    pub async fn fence(&self) -> bool {
        let Some(fences) = &self.0.fences else { return self.hearing() };
        let (fence, passed) = oneshot::channel();
        if !self.hearing() || fences.send(fence).await.is_err() {
            return false;
        }
        matches!(tokio::time::timeout(FENCE_TIMEOUT, passed).await, Ok(Ok(()))) && self.hearing()
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
        db: Pool,
        account_id: i64,
        after: Option<i64>,
    ) -> impl Stream<Item = Result<entry::Model, Error>> + Send + use<> {
        // Watching starts before the starting point is read, so that nothing committed in between goes unnoticed.
        let mut watch = self.watch(account_id);
        // The reads are boxed: the stream's state, which an idle subscription holds all its life, is as large as the
        // largest future it awaits in place, and a query's future is kilobytes.
        async_stream::try_stream! {
            // Without `after` nothing before now is wanted, so there is nothing to read until the feed is behind.
            let (mut cursor, mut behind) = match after {
                Some(after) => (after, true),
                None => (Box::pin(newest_seq(&db, account_id)).await?, false),
            };
            loop {
                while behind {
                    let batch = Box::pin(entries_after(&db, account_id, cursor)).await?;
                    behind = batch.len() as u64 == BATCH;
                    for entry in batch {
                        cursor = entry.account_seq;
                        yield entry;
                    }
                }
                if watch.changed().await.is_err() {
                    // The feed is gone: the server is stopping.
                    break;
                }
                match watch.after(cursor) {
                    Some(entries) => {
                        for entry in entries {
                            cursor = entry.account_seq;
                            yield entry;
                        }
                    }
                    None => behind = true,
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
        let receiver = accounts.entry(account_id).or_insert_with(|| watch::channel(Recent::default()).0).subscribe();
        AccountWatch { feed: self.0.clone(), account_id, receiver: Some(receiver) }
    }
}

impl Inner {
    fn publish(&self, change: Change) {
        match change {
            Change::Entries(entries) => {
                let accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
                for entry in entries {
                    if let Some(sender) = accounts.get(&entry.1) {
                        sender.send_modify(|recent| recent.push(entry.into()));
                    }
                }
            }
            Change::SessionsEnded(username) => {
                // Nobody listening is no failure.
                let _ = self.sessions.send(SessionChange::Of(username.into()));
            }
            Change::Resync => self.resync(),
            Change::Wrote(username, position) => self.positions.heard(&username, position),
        }
    }

    /// Nothing announced from now on is heard until the next [`Inner::resync`].
    fn deaf(&self) {
        self.hearing.store(false, Ordering::Release);
        self.positions.deaf();
    }

    /// Wakes every subscriber to re-read from its cursor and every socket to re-check its session: what was
    /// announced while nobody listened is lost, what was committed is not.
    fn resync(&self) {
        for sender in self.accounts.lock().unwrap_or_else(PoisonError::into_inner).values() {
            sender.send_modify(|recent| recent.0.clear());
        }
        let _ = self.sessions.send(SessionChange::Anyone);
        // After the wake-up, so that whoever sees the feed hearing again has the wake-up waiting too.
        self.hearing.store(true, Ordering::Release);
        self.positions.hearing();
    }
}

/// An account's latest announced entries, consecutive in `account_seq` (empty after a resync, when some may have been
/// lost).
#[derive(Default)]
struct Recent(VecDeque<Arc<entry::Model>>);

impl Recent {
    fn push(&mut self, entry: entry::Model) {
        match self.0.back() {
            // Announced twice (a duplicated delivery): nothing new.
            Some(last) if entry.account_seq <= last.account_seq => return,
            // A gap: what came before cannot be vouched for.
            Some(last) if entry.account_seq != last.account_seq + 1 => self.0.clear(),
            _ => {}
        }
        if self.0.len() == RECENT {
            self.0.pop_front();
        }
        self.0.push_back(Arc::new(entry));
    }
}

/// A subscriber's wake-ups for one account; the account leaves the registry with its last subscriber.
struct AccountWatch {
    feed: Arc<Inner>,
    account_id: i64,
    /// `None` only while dropping, so that the registry's count no longer includes it.
    receiver: Option<watch::Receiver<Recent>>,
}

impl AccountWatch {
    /// The announced entries after `cursor`, if what the feed holds continues it; `None` when the database must say.
    fn after(&mut self, cursor: i64) -> Option<Vec<entry::Model>> {
        let recent = self.receiver.as_mut()?.borrow_and_update();
        let first = recent.0.front()?;
        (first.account_seq <= cursor + 1).then(|| {
            recent.0.iter().filter(|entry| entry.account_seq > cursor).map(|entry| entry::Model::clone(entry)).collect()
        })
    }

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
async fn newest_seq(db: &impl ConnectionTrait, account_id: i64) -> Result<i64, Error> {
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
async fn entries_after(db: &impl ConnectionTrait, account_id: i64, cursor: i64) -> Result<Vec<entry::Model>, Error> {
    Ok(entry::Entity::find()
        .filter(entry::Column::AccountId.eq(account_id))
        .filter(entry::Column::AccountSeq.gt(cursor))
        .order_by_asc(entry::Column::AccountSeq)
        .limit(BATCH)
        .all(db)
        .await?)
}
