//! The application's database: where reads go (per-request snapshots among them) and how writes are made.
//!
//! PostgreSQL runs many transactions at once, so a write simply takes a pooled connection. SQLite runs one writer at
//! a time and makes each commit durable with a sync to disk, so there every write goes through one writer task that
//! commits whatever has queued meanwhile as one transaction (group commit), each write in a savepoint of its own;
//! reads use read-only connections beside it, which WAL lets read while the writer writes.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database as Connector, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    ExecResult, QueryResult, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};

use crate::Error;

/// Connects one pool to `url` with the settings the server relies on: what the server writes through, and what a
/// process of its own (the `set-role` command, the tests) uses.
///
/// SQLite: one connection (SQLite runs one writer at a time; a single connection turns contention into a queue
/// instead of `database is locked` errors), WAL with `synchronous=FULL` so a committed transfer survives a crash,
/// foreign keys enforced, and a busy timeout for other processes sharing the file.
/// PostgreSQL: a pool of up to `max_connections` that fails fast when the server is away, so requests do not hang.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    Connector::connect(options(url, max_connections)).await
}

/// The server's default pool size on PostgreSQL, for writes (query snapshots have as many again). PostgreSQL does
/// the most with a few busy connections per core: past that, requests only queue inside it and wait on each other's
/// locks. On the 2-core benchmark machine, 8 rather than 16 took the transfer p99 from about 22 ms to 17 ms and
/// cut the database's CPU per transfer by a sixth.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 8;

/// The server's default number of read-only connections on SQLite. A read is CPU work in this process, so a few
/// more connections than cores keep the cores busy while some wait for their request's next statement.
pub const DEFAULT_SQLITE_READ_CONNECTIONS: u32 = 4;

/// The most writes the SQLite writer commits as one transaction: by a few dozen the sync's cost is spread thin,
/// while every write of a batch waits for its last one.
const MAX_BATCH: usize = 64;

/// Writes waiting for the SQLite writer; more wait for room, so that a flood queues in its requests.
const QUEUE: usize = 1024;

fn options(url: &str, max_connections: u32) -> ConnectOptions {
    let mut options = ConnectOptions::new(url);
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        // sqlx pings a connection when it leaves the pool and again when it returns: two round trips besides the
        // request's own. A connection used within the last half second is alive (HikariCP's rule); one that died
        // meanwhile (PostgreSQL restarted) fails one request with SERVICE_UNAVAILABLE, and the ping on its
        // return takes it out of the pool.
        .test_before_acquire_if_idle_for(Duration::from_millis(500))
        .map_sqlx_sqlite_opts(|sqlite| {
            sqlite
                .create_if_missing(true)
                .foreign_keys(true)
                .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
        });
    if url.starts_with("sqlite:") {
        options.max_connections(1);
    } else {
        options.max_connections(max_connections.max(1)).min_connections(1);
    }
    options
}

/// The server's database: reads outside a snapshot, per-request snapshots, and writes. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    /// PostgreSQL: the pool, for writes and for reads outside a snapshot. SQLite: the read-only connections.
    pool: DatabaseConnection,
    /// Where query snapshots open: on PostgreSQL, connections of their own whose every transaction is REPEATABLE
    /// READ and READ ONLY (set once, when each connects); on SQLite, the read-only connections.
    snapshots: DatabaseConnection,
    /// SQLite's writer, which every write goes through; `None` on PostgreSQL, whose writes take the pool.
    writer: Option<mpsc::Sender<Box<dyn Pending>>>,
}

impl Database {
    /// Connects to `url`: on PostgreSQL two pools of up to `max_connections` (writes, query snapshots); on SQLite
    /// the writer's one connection and `read_connections` read-only ones. `on_statement` sees every statement.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        read_connections: u32,
        on_statement: impl Fn(&sea_orm::metric::Info<'_>) + Clone + Send + Sync + 'static,
    ) -> Result<Self, DbErr> {
        let mut writes = connect(url, max_connections).await?;
        writes.set_metric_callback(on_statement.clone());
        if writes.get_database_backend() == DbBackend::Postgres {
            let mut options = options(url, max_connections);
            options.map_sqlx_postgres_opts(|pg| {
                pg.options([
                    ("default_transaction_isolation", "repeatable read"),
                    ("default_transaction_read_only", "on"),
                ])
            });
            let mut snapshots = Connector::connect(options).await?;
            snapshots.set_metric_callback(on_statement);
            return Ok(Self { pool: writes, snapshots, writer: None });
        }
        // The writer's connection came first, so the file exists and is in WAL mode, which readers cannot set.
        let mut options = options(url, read_connections);
        options
            .max_connections(read_connections.max(1))
            .map_sqlx_sqlite_opts(|sqlite| sqlite.read_only(true).busy_timeout(Duration::from_secs(10)));
        let mut reads = Connector::connect(options).await?;
        reads.set_metric_callback(on_statement);
        let (writer, queue) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(writes, queue));
        Ok(Self { pool: reads.clone(), snapshots: reads, writer: Some(writer) })
    }

    /// For reads outside a snapshot (a mutation's, a socket's), which never wait for a write on either backend.
    pub fn reads(&self) -> &DatabaseConnection {
        &self.pool
    }

    /// A snapshot for one query request's reads. On PostgreSQL it costs one round trip to open (`BEGIN`) and none
    /// to end: nothing in it can have changed anything, so it is rolled back in the background once the request is
    /// answered. On SQLite it begins with the request's first read (a deferred `BEGIN`).
    pub async fn snapshot(&self) -> Result<Db, DbErr> {
        Ok(Db::Snapshot(Arc::new(self.snapshots.begin().await?)))
    }

    /// Runs `work`, answering once what it wrote is durable.
    ///
    /// PostgreSQL: `work` gets the pool, where each statement commits on its own and work that needs more opens a
    /// transaction ([`Writing::begin`]). SQLite: `work` joins the writer's next batch, in a savepoint kept if it
    /// returns `Ok` and undone if it returns `Err`; the answer comes once the batch committed, and if the commit
    /// fails, every write of the batch fails with it. So `work` waits on nothing but its statements (passwords are
    /// hashed before), and what it announces to the change feed is published only after this returns.
    pub async fn write<T, W>(&self, work: W) -> Result<T, Error>
    where
        T: Send + 'static,
        W: for<'a> FnOnce(Writing<'a>) -> BoxFuture<'a, Result<T, Error>> + Send + 'static,
    {
        let Some(writer) = &self.writer else {
            return work(Writing::Pool(&self.pool)).await;
        };
        let (answer, answered) = oneshot::channel();
        let stopped = || Error::internal("the SQLite writer has stopped");
        writer.send(Box::new(Write { work: Some(work), outcome: None, answer })).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    /// The pool's connections (on SQLite, the read-only ones): (open, idle).
    pub fn pool_usage(&self) -> (u32, usize) {
        match self.pool.get_database_backend() {
            DbBackend::Postgres => {
                let pool = self.pool.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
            DbBackend::Sqlite => {
                let pool = self.pool.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
            _ => (0, 0),
        }
    }
}

/// Where a write's statements go: PostgreSQL's pool, or the savepoint the SQLite writer opened for it.
#[derive(Clone, Copy)]
pub enum Writing<'a> {
    Pool(&'a DatabaseConnection),
    Savepoint(&'a DatabaseTransaction),
}

impl Writing<'_> {
    /// A transaction for statements that must commit together: on PostgreSQL a real one; on SQLite a savepoint
    /// inside the write's own, which costs next to nothing and keeps the work alike on both backends.
    pub async fn begin(&self) -> Result<DatabaseTransaction, DbErr> {
        match self {
            Self::Pool(db) => db.begin().await,
            Self::Savepoint(txn) => txn.begin().await,
        }
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Writing<'_> {
    fn get_database_backend(&self) -> DbBackend {
        match self {
            Self::Pool(db) => db.get_database_backend(),
            Self::Savepoint(txn) => txn.get_database_backend(),
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self {
            Self::Pool(db) => db.execute_raw(stmt).await,
            Self::Savepoint(txn) => txn.execute_raw(stmt).await,
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            Self::Pool(db) => db.execute_unprepared(sql).await,
            Self::Savepoint(txn) => txn.execute_unprepared(sql).await,
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Self::Pool(db) => db.query_one_raw(stmt).await,
            Self::Savepoint(txn) => txn.query_one_raw(stmt).await,
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Self::Pool(db) => db.query_all_raw(stmt).await,
            Self::Savepoint(txn) => txn.query_all_raw(stmt).await,
        }
    }
}

/// A write queued for the SQLite writer, whatever its result's type.
trait Pending: Send {
    /// Runs the work in `savepoint`: whether it succeeded, and so whether the savepoint is kept.
    fn run<'a>(&'a mut self, savepoint: &'a DatabaseTransaction) -> BoxFuture<'a, bool>;
    /// Answers the caller, once the batch committed (`Ok`) or failed.
    fn answer(self: Box<Self>, batch: Result<(), DbErr>);
}

/// A write and its caller.
struct Write<T, W> {
    /// Taken when it runs.
    work: Option<W>,
    outcome: Option<Result<T, Error>>,
    answer: oneshot::Sender<Result<T, Error>>,
}

impl<T, W> Pending for Write<T, W>
where
    T: Send + 'static,
    W: for<'a> FnOnce(Writing<'a>) -> BoxFuture<'a, Result<T, Error>> + Send + 'static,
{
    fn run<'a>(&'a mut self, savepoint: &'a DatabaseTransaction) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let Some(work) = self.work.take() else {
                return false;
            };
            // A bug in one write must not stop the writer, and with it every write after.
            let outcome = AssertUnwindSafe(work(Writing::Savepoint(savepoint)))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(Error::internal(format!("a write panicked: {}", panic_message(&*panic)))));
            let succeeded = outcome.is_ok();
            self.outcome = Some(outcome);
            succeeded
        })
    }

    fn answer(self: Box<Self>, batch: Result<(), DbErr>) {
        let answer = match batch {
            Ok(()) => self.outcome.unwrap_or_else(|| Err(Error::internal("a committed batch skipped a write"))),
            Err(err) => Err(Error::Database(err)),
        };
        // A caller that stopped waiting (its request timed out) is no failure.
        let _ = self.answer.send(answer);
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("")
}

/// The SQLite writer: takes every write queued, commits them as one batch, answers them all, and starts over with
/// what queued meanwhile, until every [`Database`] is gone. The busier the server, the bigger the batches and the
/// fewer syncs to disk per write.
async fn write_batches(conn: DatabaseConnection, mut queue: mpsc::Receiver<Box<dyn Pending>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let committed = commit(&conn, &mut batch).await;
        if let Err(err) = &committed {
            tracing::error!(%err, writes = batch.len(), "a batch of SQLite writes failed; none was acknowledged");
        }
        for write in batch.drain(..) {
            write.answer(committed.clone());
        }
    }
}

/// Runs each write of `batch` in a savepoint of its own within one transaction, then commits it. A savepoint that
/// cannot begin or end may leave part of a write in the transaction, so then nothing commits.
async fn commit(conn: &DatabaseConnection, batch: &mut [Box<dyn Pending>]) -> Result<(), DbErr> {
    // IMMEDIATE takes the write lock at once: another process writing to the file (`set-role`) is waited for here,
    // once, rather than by whichever write comes first.
    let immediate =
        TransactionOptions { sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate), ..Default::default() };
    let txn = conn.begin_with_options(immediate).await?;
    for write in batch {
        let savepoint = txn.begin().await?;
        if write.run(&savepoint).await {
            savepoint.commit().await?;
        } else {
            savepoint.rollback().await?;
        }
    }
    txn.commit().await
}

/// Where a request's reads go: the pool, or one snapshot transaction shared by every field of a query request.
///
/// A snapshot makes a query's fields agree with each other: a banker summing every balance in one request sees
/// the conserved total even while transfers commit. It is shared (`Arc`) because batch loaders outlive borrows;
/// it ends when the last holder drops it.
#[derive(Clone)]
pub enum Db {
    Pool(DatabaseConnection),
    Snapshot(Arc<DatabaseTransaction>),
}

#[async_trait::async_trait]
impl ConnectionTrait for Db {
    fn get_database_backend(&self) -> DbBackend {
        match self {
            Self::Pool(db) => db.get_database_backend(),
            Self::Snapshot(txn) => txn.get_database_backend(),
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self {
            Self::Pool(db) => db.execute_raw(stmt).await,
            Self::Snapshot(txn) => txn.execute_raw(stmt).await,
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            Self::Pool(db) => db.execute_unprepared(sql).await,
            Self::Snapshot(txn) => txn.execute_unprepared(sql).await,
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Self::Pool(db) => db.query_one_raw(stmt).await,
            Self::Snapshot(txn) => txn.query_one_raw(stmt).await,
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Self::Pool(db) => db.query_all_raw(stmt).await,
            Self::Snapshot(txn) => txn.query_all_raw(stmt).await,
        }
    }
}
