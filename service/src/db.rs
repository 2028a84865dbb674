//! The application's database: where reads go (per-request snapshots among them) and how writes are made.
//!
//! PostgreSQL runs many transactions at once, so a write simply takes a pooled connection. SQLite runs one writer at
//! a time and makes each commit durable with a sync to disk, so there every write goes through one writer, a thread
//! of its own, that commits whatever has queued meanwhile as one transaction (group commit), each write in a
//! savepoint of its own; reads use read-only connections beside it, which WAL lets read while the writer writes.
//!
//! On PostgreSQL, query snapshots may open on hot standbys instead of the primary (see [`crate::replicas`]), and
//! every connection may lead through a transaction-pooling pooler such as pgbouncer (see [`Settings`]).

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database as Connector, DatabaseConnection, DatabaseTransaction,
    DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr, Statement, TransactionTrait,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::Error;
use crate::replicas::{self, Positions, Replica, ReplicaReport, Replicas, Sees};

/// Connects one pool to `url` with the settings the server relies on: what the server writes through, and what a
/// process of its own (the `set-role` command, the tests) uses. It must be a direct connection, not through a
/// transaction-pooling pooler.
///
/// SQLite: one connection (SQLite runs one writer at a time; a single connection turns contention into a queue
/// instead of `database is locked` errors), WAL with `synchronous=FULL` so a committed transfer survives a crash,
/// foreign keys enforced, and a busy timeout for other processes sharing the file.
/// PostgreSQL: a pool of up to `max_connections` that fails fast when the server is away, so requests do not hang.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    Connector::connect(options(url, max_connections, Kind::default())).await
}

/// The server's default pool size on PostgreSQL, for each of single statements, transactions and query snapshots.
/// PostgreSQL does the most with a few busy connections per core: past that, requests only queue inside it and
/// wait on each other's locks. On the 2-core benchmark machine, 8 rather than 16 took the transfer p99 from about
/// 22 ms to 17 ms and cut the database's CPU per transfer by a sixth.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 8;

/// The server's default number of SQLite's read-only connections for query requests. A read is CPU work in this
/// process, but a request holds its connection from its first statement to its end, most of that time executing
/// GraphQL or waiting for a worker: on the 2-core benchmark machine 4 left a quarter of the CPU idle and the users
/// page at 1,870/s, 8 took it to 3,148/s, and 16 did no better (2,971/s) for 20 MB more.
pub const DEFAULT_SQLITE_READ_CONNECTIONS: u32 = 8;

/// SQLite's read-only connections for reads outside a query request (a mutation's, a socket's, the change feed's):
/// few, short and far apart. Each connection is a thread of sqlx's, which costs the server about 2 MB of resident
/// memory (its allocator's heap, in huge pages).
const SQLITE_OTHER_READ_CONNECTIONS: u32 = 2;

/// The most a standby may lag behind the primary and still serve queries, by default.
pub const DEFAULT_MAX_REPLICA_LAG: Duration = Duration::from_secs(1);

/// The most writes the SQLite writer commits as one transaction: by a few dozen the sync's cost is spread thin,
/// while every write of a batch waits for its last one.
const MAX_BATCH: usize = 64;

/// How often the SQLite writer checkpoints the WAL ([`write_batches`]): at a few thousand pages written a second
/// under load, a few hundred a time.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Writes waiting for the SQLite writer; more wait for room, so that a flood queues in its requests.
const QUEUE: usize = 1024;

/// How long a connection may sit idle and still be lent without a check that it is alive.
const CHECK_IF_IDLE_FOR: Duration = Duration::from_millis(500);

/// How long a snapshot may wait to open on a standby (a connection, and BEGIN) before reading on the primary.
const STANDBY_TIMEOUT: Duration = Duration::from_secs(1);

/// What one PostgreSQL pool is for.
#[derive(Clone, Copy, Default)]
struct Kind {
    /// Its connections lead through a transaction-pooling pooler.
    pooled: bool,
    /// Query snapshots: every transaction REPEATABLE READ and READ ONLY.
    snapshots: bool,
}

fn options(url: &str, max_connections: u32, kind: Kind) -> ConnectOptions {
    let mut options = ConnectOptions::new(url);
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        // sqlx pings a connection when it leaves the pool and again when it returns: two round trips besides the
        // request's own. A connection used within the last half second is alive (HikariCP's rule); one that died
        // meanwhile (PostgreSQL restarted) fails one request with SERVICE_UNAVAILABLE, and the ping on its
        // return takes it out of the pool.
        .test_before_acquire_if_idle_for(CHECK_IF_IDLE_FOR)
        .map_sqlx_sqlite_opts(|sqlite| {
            sqlite
                .create_if_missing(true)
                .foreign_keys(true)
                .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
        })
        .map_sqlx_postgres_opts(move |pg| {
            // Behind a transaction pooler, the next transaction may land on another server connection, which does
            // not have this one's prepared statements, so none is kept; nor are settings sent when connecting
            // (pgbouncer refuses them, `extra_float_digits` included, which this bank of integers does not need),
            // so snapshots set theirs at BEGIN instead (`begin_snapshot`).
            match kind {
                Kind { pooled: true, .. } => pg.statement_cache_capacity(0).extra_float_digits(None),
                Kind { pooled: false, snapshots: true } => pg.options([
                    ("default_transaction_isolation", "repeatable read"),
                    ("default_transaction_read_only", "on"),
                ]),
                Kind { pooled: false, snapshots: false } => pg,
            }
        });
    if is_sqlite(url) {
        options.max_connections(1);
    } else {
        options.max_connections(max_connections.max(1)).min_connections(1);
    }
    options
}

fn is_sqlite(url: &str) -> bool {
    url.starts_with("sqlite:")
}

/// Opens a query snapshot on `conn`: REPEATABLE READ and READ ONLY, set by the connection's own settings, or at
/// BEGIN behind a transaction pooler (one more round trip).
async fn begin_snapshot(conn: &DatabaseConnection, pooled: bool) -> Result<DatabaseTransaction, DbErr> {
    let txn = conn.begin().await?;
    if pooled {
        txn.execute_unprepared("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?;
    }
    Ok(txn)
}

/// `column` is one of `values`, in one statement whatever their number (a batch loader's). On PostgreSQL
/// `= ANY($1)`, with the values as one array: PostgreSQL builds an `IN` list of parameters into an array again for
/// every row it compares (pgbench, a 20-user page's accounts: 7,500 against 10,400 statements a second), and every
/// length of list is a prepared statement of its own. SQLite has no arrays, so `IN (…)` there.
pub(crate) fn one_of<V>(backend: DbBackend, column: impl ColumnTrait, values: impl IntoIterator<Item = V>) -> Expr
where
    V: Into<sea_orm::Value> + sea_orm::sea_query::postgres_array::NotU8,
{
    match backend {
        DbBackend::Postgres => column.eq_any(values),
        _ => column.is_in(values),
    }
}

/// How the server connects to its database.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The primary (PostgreSQL) or the file (SQLite).
    pub url: String,
    /// PostgreSQL connections for single statements, as many again for transactions, and as many for query
    /// snapshots, on the primary and on each standby.
    pub max_connections: u32,
    /// SQLite's read-only connections for query requests (reads outside one have a few of their own).
    pub sqlite_read_connections: u32,
    /// A direct connection to the primary for the change feed's `LISTEN`, which a transaction pooler cannot carry;
    /// `None`: `url`.
    pub listen_url: Option<String>,
    /// Hot standbys of the primary, where query snapshots open when they are close enough behind.
    pub replica_urls: Vec<String>,
    /// The most a standby may lag and still serve queries.
    pub max_replica_lag: Duration,
    /// `url` and `replica_urls` lead through a transaction-pooling pooler (pgbouncer's `pool_mode = transaction`):
    /// no prepared statement is kept past a transaction, no setting is left on a connection, and every statement
    /// runs inside a transaction (see [`Pool`]).
    pub transaction_pooling: bool,
}

impl Settings {
    /// The defaults, on the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            sqlite_read_connections: DEFAULT_SQLITE_READ_CONNECTIONS,
            listen_url: None,
            replica_urls: Vec::new(),
            max_replica_lag: DEFAULT_MAX_REPLICA_LAG,
            transaction_pooling: false,
        }
    }
}

/// `url` without its password, for logs.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(at)) if at > scheme.len() => {
            let credentials = &rest[..at - scheme.len() - 3];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{}", &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// The server's database: reads outside a snapshot, per-request snapshots, and writes. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    /// PostgreSQL: the primary's pools, for writes and for reads outside a snapshot. SQLite: the read-only
    /// connections for reads outside a query request.
    pool: Pool,
    /// Where query snapshots open on the primary.
    snapshots: Snapshots,
    /// SQLite's writer, which every write goes through; `None` on PostgreSQL, whose writes take the pool.
    writer: Option<mpsc::Sender<Box<dyn Pending>>>,
    /// Where the change feed listens: `pool`'s connections, or a direct connection's (`DATABASE_LISTEN_URL`).
    listen: DatabaseConnection,
    /// PostgreSQL's hot standbys, when there are any.
    replicas: Option<Arc<Replicas>>,
    /// What each caller's queries must see, as the change feed tells.
    positions: Arc<Positions>,
}

impl Database {
    /// Connects as `settings` say: on PostgreSQL two pools on the primary (writes, query snapshots), one per standby,
    /// and the change feed's; on SQLite the writer's one connection and the read-only ones. `on_statement` sees
    /// every statement.
    pub async fn connect(
        settings: &Settings,
        on_statement: impl Fn(&sea_orm::metric::Info<'_>) + Clone + Send + Sync + 'static,
    ) -> Result<Self, DbErr> {
        let pooled = settings.transaction_pooling;
        let max = settings.max_connections;
        let positions = Arc::new(Positions::new(settings.max_replica_lag));
        if is_sqlite(&settings.url) {
            if pooled || !settings.replica_urls.is_empty() {
                return Err(DbErr::Custom("standbys and transaction pooling are for PostgreSQL, not SQLite".into()));
            }
            // The first connection creates the file and puts it in WAL mode, which read-only connections cannot do.
            let checkpointer = Connector::connect(options(&settings.url, 1, Kind::default())).await?;
            let writes = options(&settings.url, 1, Kind::default());
            let writer = start_writer(writes, on_statement.clone(), checkpointer).await?;
            let read_only = |connections: u32| {
                let mut options = options(&settings.url, connections, Kind::default());
                options
                    .max_connections(connections.max(1))
                    .map_sqlx_sqlite_opts(|sqlite| sqlite.read_only(true).busy_timeout(Duration::from_secs(10)));
                options
            };
            let mut reads = Connector::connect(read_only(SQLITE_OTHER_READ_CONNECTIONS)).await?;
            reads.set_metric_callback(on_statement.clone());
            let mut snapshots = Connector::connect(read_only(settings.sqlite_read_connections)).await?;
            snapshots.set_metric_callback(on_statement);
            let snapshots = Snapshots::Sqlite(Arc::new(Connections::new(snapshots, settings.sqlite_read_connections)));
            let pool = Pool { conn: reads.clone(), each_in_a_transaction: false, statements: None };
            return Ok(Self { pool, snapshots, writer: Some(writer), listen: reads, replicas: None, positions });
        }
        let mut writes = Connector::connect(options(&settings.url, max, Kind { pooled, snapshots: false })).await?;
        writes.set_metric_callback(on_statement.clone());
        let mut snapshots = Connector::connect(options(&settings.url, max, Kind { pooled, snapshots: true })).await?;
        snapshots.set_metric_callback(on_statement.clone());
        let listen = match &settings.listen_url {
            Some(url) if *url != settings.url => connect(url, 2).await?,
            _ => writes.clone(),
        };
        let replicas = if settings.replica_urls.is_empty() {
            None
        } else {
            let mut list = Vec::new();
            for url in &settings.replica_urls {
                let mut options = options(url, max, Kind { pooled, snapshots: true });
                // A standby that is down at start is no reason not to start: it is skipped until it answers.
                options
                    .connect_lazy(true)
                    .min_connections(0)
                    .connect_timeout(STANDBY_TIMEOUT)
                    .acquire_timeout(STANDBY_TIMEOUT);
                let mut pool = Connector::connect(options).await?;
                pool.set_metric_callback(on_statement.clone());
                list.push(Replica::new(redacted(url), pool));
            }
            let replicas = Arc::new(Replicas::new(list, settings.max_replica_lag));
            let primary = writes.get_postgres_connection_pool().clone();
            tokio::spawn(replicas::watch(primary, Arc::downgrade(&replicas)));
            Some(replicas)
        };
        // Behind a transaction pooler every statement runs in a transaction of its own instead.
        let statements = if pooled {
            None
        } else {
            let mut statements = Connector::connect(options(&settings.url, max, Kind::default())).await?;
            statements.set_metric_callback(on_statement.clone());
            Some(Arc::new(Connections::new(statements, max)))
        };
        let pool = Pool { conn: writes, each_in_a_transaction: pooled, statements };
        let snapshots = Snapshots::Postgres(snapshots);
        Ok(Self { pool, snapshots, writer: None, listen, replicas, positions })
    }

    /// For reads outside a snapshot (a mutation's, a socket's), which never wait for a write on either backend.
    /// On PostgreSQL they read on the primary.
    pub fn reads(&self) -> &Pool {
        &self.pool
    }

    /// The pool the change feed's `LISTEN` connection comes from: a direct connection to the primary.
    pub fn listen(&self) -> &DatabaseConnection {
        &self.listen
    }

    /// What each caller's queries must see; the change feed keeps it up to date.
    pub fn positions(&self) -> &Arc<Positions> {
        &self.positions
    }

    /// Whether queries may read on standbys, and so whether writes must tell their positions.
    pub fn has_replicas(&self) -> bool {
        self.replicas.is_some()
    }

    /// What a query by `user` (`None`: anonymous) must see.
    pub fn must_see(&self, user: Option<&str>) -> Sees {
        if self.replicas.is_some() { self.positions.must_see(user) } else { Sees::Everything }
    }

    /// A snapshot for one query request's reads: on a standby that has what the query must see, if one is usable,
    /// else on the primary. On PostgreSQL it costs one round trip to open (`BEGIN`; two behind a transaction pooler)
    /// and none to end: nothing in it can have changed anything, so it is rolled back in the background once the
    /// request is answered. On SQLite it begins with the request's first read (a deferred `BEGIN`).
    pub async fn snapshot(&self, sees: Sees) -> Result<Db, DbErr> {
        let snapshots = match &self.snapshots {
            Snapshots::Postgres(snapshots) => snapshots,
            Snapshots::Sqlite(readers) => return Ok(Db::Reader(Arc::new(Reader::new(readers.clone())))),
        };
        let pooled = self.pool.each_in_a_transaction;
        if let Some(replicas) = &self.replicas {
            if let Some((index, replica)) = replicas.choose(sees).await {
                // Bounded: a pooler in front of a standby that is down keeps a new transaction waiting for a server
                // connection rather than failing it.
                match tokio::time::timeout(STANDBY_TIMEOUT, begin_snapshot(&replica.pool, pooled)).await {
                    Ok(Ok(txn)) => {
                        replicas.count(true);
                        return Ok(Db::Standby(Arc::new(txn), index));
                    }
                    Ok(Err(err)) => replicas.failed(index, &err),
                    Err(_) => replicas.failed(index, &"no snapshot opened within a second"),
                }
            }
            replicas.count(false);
        }
        Ok(Db::Snapshot(Arc::new(begin_snapshot(snapshots, pooled).await?)))
    }

    /// Something a query read on standby `index` failed: it is skipped until it answers a probe again.
    pub fn standby_failed(&self, index: usize, err: &dyn std::fmt::Display) {
        if let Some(replicas) = &self.replicas {
            replicas.failed(index, err);
        }
    }

    /// Where query snapshots opened, and how each standby is doing; `None` without standbys.
    pub fn replica_report(&self) -> Option<ReplicaReport> {
        self.replicas.as_ref().map(|replicas| replicas.report())
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
                let pool = self.pool.conn.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
            DbBackend::Sqlite => {
                let pool = self.pool.conn.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
            _ => (0, 0),
        }
    }
}

/// A pool of connections, for statements outside a request's snapshot or a write's transaction.
///
/// Behind a transaction-pooling pooler every statement runs in a transaction of its own: sqlx prepares a statement
/// and then runs it as two exchanges, and between them, outside a transaction, the pooler may hand the server
/// connection (with the statement) to another client.
#[derive(Clone)]
pub struct Pool {
    conn: DatabaseConnection,
    each_in_a_transaction: bool,
    /// PostgreSQL, connected directly: where single statements run, on connections held rather than borrowed from
    /// sqlx's pool, which would ping each on its return: a round trip beside a transfer's one.
    statements: Option<Arc<Connections>>,
}

impl Pool {
    /// A transaction, for statements that must commit together.
    pub async fn begin(&self) -> Result<DatabaseTransaction, DbErr> {
        self.conn.begin().await
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.conn.ping().await
    }

    /// Runs one statement, in a transaction of its own behind a transaction pooler.
    async fn alone<T, F>(&self, statement: F) -> Result<T, DbErr>
    where
        F: for<'c> FnOnce(&'c DatabaseTransaction) -> BoxFuture<'c, Result<T, DbErr>>,
    {
        let txn = self.conn.begin().await?;
        let result = statement(&txn).await?;
        txn.commit().await?;
        Ok(result)
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Pool {
    fn get_database_backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        if let Some(statements) = &self.statements {
            return statements.run(|conn| Box::pin(conn.execute_raw(stmt))).await;
        }
        if self.each_in_a_transaction {
            self.alone(|txn| Box::pin(txn.execute_raw(stmt))).await
        } else {
            self.conn.execute_raw(stmt).await
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        // A simple query, one exchange: nothing is prepared.
        self.conn.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        if let Some(statements) = &self.statements {
            return statements.run(|conn| Box::pin(conn.query_one_raw(stmt))).await;
        }
        if self.each_in_a_transaction {
            self.alone(|txn| Box::pin(txn.query_one_raw(stmt))).await
        } else {
            self.conn.query_one_raw(stmt).await
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        if let Some(statements) = &self.statements {
            return statements.run(|conn| Box::pin(conn.query_all_raw(stmt))).await;
        }
        if self.each_in_a_transaction {
            self.alone(|txn| Box::pin(txn.query_all_raw(stmt))).await
        } else {
            self.conn.query_all_raw(stmt).await
        }
    }
}

/// Where a write's statements go: PostgreSQL's pool, or the SQLite writer's batch.
#[derive(Clone, Copy)]
pub enum Writing<'a> {
    Pool(&'a Pool),
    Batch(&'a Batched<'a>),
}

impl Writing<'_> {
    /// A transaction for statements that must commit together: on PostgreSQL a real one; on SQLite a savepoint
    /// inside the write's own, which costs next to nothing and keeps the work alike on both backends.
    pub async fn begin(&self) -> Result<DatabaseTransaction, DbErr> {
        match self {
            Self::Pool(db) => db.begin().await,
            Self::Batch(batched) => {
                batched.open().await?;
                batched.txn.begin().await
            }
        }
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Writing<'_> {
    fn get_database_backend(&self) -> DbBackend {
        match self {
            Self::Pool(db) => db.get_database_backend(),
            Self::Batch(batched) => batched.txn.get_database_backend(),
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self {
            Self::Pool(db) => db.execute_raw(stmt).await,
            Self::Batch(batched) => {
                batched.open().await?;
                batched.txn.execute_raw(stmt).await
            }
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            Self::Pool(db) => db.execute_unprepared(sql).await,
            Self::Batch(batched) => {
                batched.open().await?;
                batched.txn.execute_unprepared(sql).await
            }
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Self::Pool(db) => db.query_one_raw(stmt).await,
            Self::Batch(batched) => batched.txn.query_one_raw(batched.opening(stmt)).await,
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Self::Pool(db) => db.query_all_raw(stmt).await,
            Self::Batch(batched) => batched.txn.query_all_raw(batched.opening(stmt)).await,
        }
    }
}

/// A connection held for the server's life: the SQLite writer's, and those [`Connections`] lends.
///
/// sea-orm lends a connection only as a transaction's, and sqlx pings a connection each time it goes back to its
/// pool: one more hand-off to the connection's thread, which the next batch would wait for. So the writer takes its
/// connection once, as a transaction's whose transaction it ends at once, and sends each batch's `BEGIN` (with the
/// batch's first statement, see [`Batched`]) and `COMMIT` itself. sqlx still counts the transaction it began, so
/// a write's own [`Writing::begin`] is a savepoint, as it must be inside the batch's transaction. The connections
/// lent to query requests and statements are held likewise ([`Connections`]).
struct Held(DatabaseTransaction);

impl Held {
    async fn take(conn: DatabaseConnection) -> Result<Self, DbErr> {
        let txn = conn.begin().await?;
        txn.execute_unprepared("COMMIT").await?;
        Ok(Held(txn))
    }

    /// Undoes what a failed batch left open, if anything, so that the next can begin.
    async fn roll_back(&self) {
        // Fails, harmlessly, when SQLite already undid the transaction or it never began.
        let _ = self.0.execute_unprepared("ROLLBACK").await;
    }
}

/// What a write's savepoint is opened with, besides `SAVEPOINT write`.
#[derive(Clone, Copy, PartialEq)]
enum Opening {
    /// The batch's transaction, not yet begun: no write of the batch sent anything so far.
    Begin,
    /// The savepoint of the write before, which succeeded: released.
    Release,
    /// Nothing: the write before was undone and released.
    Savepoint,
}

impl Opening {
    fn sql(self) -> &'static str {
        // IMMEDIATE takes the write lock at once: another process writing to the file (`set-role`) is waited for
        // here, once per batch, rather than by whichever statement writes first.
        match self {
            Opening::Begin => "BEGIN IMMEDIATE; SAVEPOINT write;\n",
            Opening::Release => "RELEASE write; SAVEPOINT write;\n",
            Opening::Savepoint => "SAVEPOINT write;\n",
        }
    }
}

/// One write of the SQLite writer's batch, in a savepoint of its own (`write`) within the batch's transaction.
///
/// Every statement sent is a hand-off to the connection's thread and back, and every write queued behind waits
/// for it; so the savepoint is not opened on its own but sent with the write's first query, after the release of
/// the write before (or the batch's `BEGIN`); the batch's `COMMIT` releases the last. A statement that only reports
/// rows changed goes after the savepoint is opened alone: SQLite counts a `SAVEPOINT` as changing what the
/// statement before it changed, and that would be added to the statement's count.
pub struct Batched<'a> {
    txn: &'a DatabaseTransaction,
    /// The statements that open the savepoint, until sent.
    opening: std::sync::Mutex<Option<&'static str>>,
}

impl<'a> Batched<'a> {
    fn new(held: &'a Held, opening: Opening) -> Self {
        Batched { txn: &held.0, opening: std::sync::Mutex::new(Some(opening.sql())) }
    }

    fn take_opening(&self) -> Option<&'static str> {
        self.opening.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    /// `stmt`, led by the statements that open the savepoint if they were not sent yet.
    fn opening(&self, mut stmt: Statement) -> Statement {
        if let Some(opening) = self.take_opening() {
            stmt.sql.insert_str(0, opening);
        }
        stmt
    }

    /// Opens the savepoint, if not yet opened, as a hand-off of its own.
    async fn open(&self) -> Result<(), DbErr> {
        match self.take_opening() {
            Some(opening) => self.txn.execute_unprepared(opening).await.map(drop),
            None => Ok(()),
        }
    }

    /// Whether the savepoint was opened: whether the write sent any statement.
    fn opened(&self) -> bool {
        self.opening.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_none()
    }
}

/// A write queued for the SQLite writer, whatever its result's type.
trait Pending: Send {
    /// Runs the work in its savepoint: whether it succeeded, and so whether the savepoint is kept.
    fn run<'a>(&'a mut self, batched: &'a Batched<'a>) -> BoxFuture<'a, bool>;
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
    fn run<'a>(&'a mut self, batched: &'a Batched<'a>) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let Some(work) = self.work.take() else {
                return false;
            };
            // A bug in one write must not stop the writer, and with it every write after.
            let outcome = AssertUnwindSafe(work(Writing::Batch(batched)))
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

/// Starts the SQLite writer ([`write_batches`]) and its checkpoints on a thread of their own, with the writer's
/// connection, and returns where writes queue.
///
/// A thread of its own: each of the writer's hand-offs to its connection's thread would otherwise wait for a
/// runtime worker busy with requests, and every write of the batch waits on each hand-off. The writer and its
/// connection's thread then take turns a dozen times a write (the statement one way; each row, and each
/// statement's end, the other), so the two share one CPU: there a turn is a switch between two threads, while
/// across CPUs every turn wakes the other CPU. On the 2-core benchmark machine, in alternating runs, SQLite
/// transfers went from 2,052 and 2,120 a second to 2,553 and 2,230 (benches/README.md).
async fn start_writer(
    options: ConnectOptions,
    on_statement: impl Fn(&sea_orm::metric::Info<'_>) + Send + Sync + 'static,
    checkpointer: DatabaseConnection,
) -> Result<mpsc::Sender<Box<dyn Pending>>, DbErr> {
    let cannot_start = |err: &dyn std::fmt::Display| DbErr::Custom(format!("cannot start the SQLite writer: {err}"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| cannot_start(&e))?;
    let (ready, started) = oneshot::channel();
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || {
            // Before connecting: sqlx starts the connection's thread from this one, which it takes the CPU from.
            keep_to_one_cpu();
            runtime.block_on(async move {
                let conn = match writer_connection(options, on_statement).await {
                    Ok(conn) => conn,
                    Err(err) => {
                        let _ = ready.send(Err(err));
                        return;
                    }
                };
                let (writer, queue) = mpsc::channel(QUEUE);
                if ready.send(Ok(writer)).is_err() {
                    return;
                }
                write_batches(conn, checkpointer, queue).await;
            })
        })
        .map_err(|e| cannot_start(&e))?;
    started.await.map_err(|e| cannot_start(&e))?
}

/// The writer's connection, held for good ([`Held`]).
async fn writer_connection(
    options: ConnectOptions,
    on_statement: impl Fn(&sea_orm::metric::Info<'_>) + Send + Sync + 'static,
) -> Result<Held, DbErr> {
    let mut conn = Connector::connect(options).await?;
    conn.set_metric_callback(on_statement);
    let held = Held::take(conn).await?;
    // The WAL is copied into the file between batches, on a connection of its own, never by a batch's commit.
    held.0.execute_unprepared("PRAGMA wal_autocheckpoint = 0").await?;
    Ok(held)
}

/// Keeps the calling thread, and the threads it starts from now on, to one of the CPUs it may run on: the last,
/// as the first tends to take the machine's interrupts. Best effort; nothing to do where there is only one.
#[cfg(target_os = "linux")]
fn keep_to_one_cpu() {
    use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
    let Ok(allowed) = sched_getaffinity(None) else { return };
    let Some(last) = (0..CpuSet::MAX_CPU).rev().find(|&cpu| allowed.is_set(cpu)) else { return };
    if allowed.count() < 2 {
        return;
    }
    let mut one = CpuSet::new();
    one.set(last);
    if let Err(err) = sched_setaffinity(None, &one) {
        tracing::debug!(%err, "the SQLite writer and its connection run on any CPU");
    }
}

#[cfg(not(target_os = "linux"))]
fn keep_to_one_cpu() {}

/// The SQLite writer: takes every write queued, commits them as one batch, answers them all, and starts over with
/// what queued meanwhile, until every [`Database`] is gone. The busier the server, the bigger the batches and the
/// fewer syncs to disk per write.
///
/// Every [`CHECKPOINT_EVERY`], between two batches, it copies the WAL's pages into the database file, on a connection
/// of its own (`checkpointer`). Left to itself SQLite does that within the commit that takes the WAL past a thousand
/// pages, and every write of that batch, and of the ones queued behind it, waits for the copy and its two syncs.
/// Between batches, because the WAL starts over only when a write transaction begins with all of it copied: a
/// checkpoint beside a writer that never pauses never catches up with it, and the WAL grew without end (40,000
/// transfers at 3,300 a second left a WAL that took the next reader minutes to search). A checkpoint stops short
/// of pages a reader's snapshot still needs; the next one takes them.
async fn write_batches(conn: Held, checkpointer: DatabaseConnection, mut queue: mpsc::Receiver<Box<dyn Pending>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut checkpoint_at = tokio::time::Instant::now() + CHECKPOINT_EVERY;
    loop {
        tokio::select! {
            received = queue.recv_many(&mut batch, MAX_BATCH) => if received == 0 { return },
            () = tokio::time::sleep_until(checkpoint_at) => {}
        }
        if !batch.is_empty() {
            let committed = commit(&conn, &mut batch).await;
            if let Err(err) = &committed {
                conn.roll_back().await;
                tracing::error!(%err, writes = batch.len(), "a batch of SQLite writes failed; none was acknowledged");
            }
            for write in batch.drain(..) {
                write.answer(committed.clone());
            }
        }
        if tokio::time::Instant::now() >= checkpoint_at {
            if let Err(err) = checkpointer.execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)").await {
                tracing::warn!(%err, "a checkpoint of the SQLite WAL failed; the next one will try again");
            }
            checkpoint_at = tokio::time::Instant::now() + CHECKPOINT_EVERY;
        }
    }
}

/// Runs each write of `batch` in a savepoint of its own within one transaction ([`Batched`]), then commits it. A
/// savepoint that cannot be undone may leave part of a write in the transaction, so then nothing commits.
async fn commit(conn: &Held, batch: &mut [Box<dyn Pending>]) -> Result<(), DbErr> {
    let mut opening = Opening::Begin;
    for write in batch {
        let batched = Batched::new(conn, opening);
        let succeeded = write.run(&batched).await;
        if !batched.opened() {
            continue;
        }
        opening = if succeeded {
            Opening::Release
        } else {
            conn.0.execute_unprepared("ROLLBACK TO write; RELEASE write").await?;
            Opening::Savepoint
        };
    }
    if opening != Opening::Begin {
        conn.0.execute_unprepared("COMMIT").await?;
    }
    Ok(())
}

/// Where query snapshots open on the primary.
#[derive(Clone)]
enum Snapshots {
    /// Connections of their own, whose every transaction is REPEATABLE READ and READ ONLY.
    Postgres(DatabaseConnection),
    /// Read-only connections of their own, held: a request's reads begin its snapshot with its first statement.
    Sqlite(Arc<Connections>),
}

/// Connections held for the server's life (see [`Held`]) and lent to one request or statement at a time, taken from
/// `conn`'s pool as first needed. A connection lent by sqlx costs a ping on its return, besides a `BEGIN` and a
/// rollback for a snapshot: on PostgreSQL a round trip each, on SQLite a hand-off each to the connection's thread
/// and back.
struct Connections {
    conn: DatabaseConnection,
    /// Each since when.
    idle: std::sync::Mutex<Vec<(Held, Instant)>>,
    /// One for each connection not lent: idle, or not yet taken.
    permits: Arc<Semaphore>,
}

impl Connections {
    fn new(conn: DatabaseConnection, count: u32) -> Self {
        let permits = Arc::new(Semaphore::new(count.max(1) as usize));
        Self { conn, idle: std::sync::Mutex::new(Vec::new()), permits }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(Held, Instant)>> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A connection, once one is free; `end` says what becomes of it when the borrower is done.
    async fn lend(self: &Arc<Self>, end: End) -> Result<Lent, DbErr> {
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| DbErr::Custom("no connections".into()))?;
        let idle = self.idle().pop();
        let held = match idle {
            // One idle a while is checked first, as sqlx checks its own: the database may have restarted since.
            Some((held, since)) if since.elapsed() < CHECK_IF_IDLE_FOR => held,
            Some((held, _)) if held.0.execute_unprepared("SELECT 1").await.is_ok() => held,
            _ => Held::take(self.conn.clone()).await?,
        };
        Ok(Lent { held: Some(held), permit: Some(permit), connections: self.clone(), end })
    }

    /// Runs one statement on a lent connection, outside any transaction.
    async fn run<T>(
        self: &Arc<Self>,
        statement: impl for<'c> FnOnce(&'c DatabaseTransaction) -> BoxFuture<'c, Result<T, DbErr>>,
    ) -> Result<T, DbErr> {
        let mut lent = self.lend(End::Close).await?;
        let result = statement(lent.conn()).await;
        if result.as_ref().err().is_none_or(answered) {
            lent.end = End::GiveBack;
        }
        result
    }
}

/// Whether the database itself refused a statement (a constraint, a serialization failure), which leaves the
/// connection as it was, rather than the connection failing.
fn answered(err: &DbErr) -> bool {
    let (DbErr::Exec(RuntimeErr::SqlxError(sqlx)) | DbErr::Query(RuntimeErr::SqlxError(sqlx))) = err else {
        return false;
    };
    sqlx.as_database_error().is_some() && !crate::error::is_unavailable(err)
}

/// What becomes of a lent connection once its borrower is done.
#[derive(Clone, Copy)]
enum End {
    /// Its transaction is committed, then it is given back: a query request's reader.
    Commit,
    /// It is given back as it is: a statement that completed.
    GiveBack,
    /// It goes back to sqlx's pool, whose ping closes it if it broke: a statement that did not complete (its
    /// request was dropped mid-exchange) or whose connection failed.
    Close,
}

/// A connection lent by [`Connections`].
struct Lent {
    held: Option<Held>,
    permit: Option<OwnedSemaphorePermit>,
    connections: Arc<Connections>,
    end: End,
}

impl Lent {
    fn conn(&self) -> &DatabaseTransaction {
        &self.held.as_ref().expect("held until given back").0
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let (Some(held), Some(permit)) = (self.held.take(), self.permit.take()) else { return };
        match self.end {
            End::GiveBack => self.connections.idle().push((held, Instant::now())),
            End::Close => drop(held),
            End::Commit => {
                let connections = self.connections.clone();
                // Outside a runtime (the server stopping) the connection just closes.
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        // Fails, harmlessly, if the request's first statement never reached the connection.
                        let _ = held.0.execute_unprepared("COMMIT").await;
                        connections.idle().push((held, Instant::now()));
                        drop(permit);
                    });
                }
                return;
            }
        }
        drop(permit);
    }
}

/// A query request's snapshot on SQLite: a read-only connection taken at the request's first statement, whose
/// deferred `BEGIN` travels with it, so that the snapshot is the one that statement reads (SQLite takes it there);
/// given back when the request ends. A request that reads nothing takes no connection.
pub struct Reader {
    readers: Arc<Connections>,
    /// Locked for each statement: the request's statements run one at a time on the connection anyway, and the one
    /// sent first must be the one that begins the transaction.
    lent: tokio::sync::Mutex<Option<Lent>>,
}

/// The lock on a request's lent connection.
struct LentGuard<'a>(tokio::sync::MutexGuard<'a, Option<Lent>>);

impl LentGuard<'_> {
    fn conn(&self) -> &DatabaseTransaction {
        self.0.as_ref().expect("lent by `Reader::lent`").conn()
    }
}

impl Reader {
    fn new(readers: Arc<Connections>) -> Self {
        Self { readers, lent: tokio::sync::Mutex::new(None) }
    }

    /// The request's connection, lent and its transaction begun: by a `BEGIN` leading `first` if given, else by
    /// one of its own (SQLite counts a `BEGIN` as changing what the statement after it changes, see [`Batched`]).
    async fn lent(&self, first: Option<&mut Statement>) -> Result<LentGuard<'_>, DbErr> {
        let mut lent = self.lent.lock().await;
        if lent.is_none() {
            let mut new = self.readers.lend(End::Commit).await?;
            match first {
                Some(stmt) => stmt.sql.insert_str(0, "BEGIN;\n"),
                // A connection that cannot begin is not given back to be lent again unchecked.
                None => {
                    if let Err(err) = new.conn().execute_unprepared("BEGIN").await {
                        new.end = End::Close;
                        return Err(err);
                    }
                }
            }
            *lent = Some(new);
        }
        Ok(LentGuard(lent))
    }
}

/// Where a request's reads go: the pool, or one snapshot transaction shared by every field of a query request, on
/// the primary or on a standby.
///
/// A snapshot makes a query's fields agree with each other: a banker summing every balance in one request sees
/// the conserved total even while transfers commit. It is shared (`Arc`) because batch loaders outlive borrows;
/// it ends when the last holder drops it.
#[derive(Clone)]
pub enum Db {
    Pool(Pool),
    Snapshot(Arc<DatabaseTransaction>),
    /// A snapshot on the standby of this index.
    Standby(Arc<DatabaseTransaction>, usize),
    /// A snapshot on SQLite.
    Reader(Arc<Reader>),
}

impl Db {
    /// The standby this snapshot is on, if it is on one.
    pub fn standby(&self) -> Option<usize> {
        match self {
            Self::Standby(_, index) => Some(*index),
            _ => None,
        }
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Db {
    fn get_database_backend(&self) -> DbBackend {
        match self {
            Self::Pool(db) => db.get_database_backend(),
            Self::Snapshot(txn) | Self::Standby(txn, _) => txn.get_database_backend(),
            Self::Reader(_) => DbBackend::Sqlite,
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self {
            Self::Pool(db) => db.execute_raw(stmt).await,
            Self::Snapshot(txn) | Self::Standby(txn, _) => txn.execute_raw(stmt).await,
            Self::Reader(reader) => reader.lent(None).await?.conn().execute_raw(stmt).await,
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            Self::Pool(db) => db.execute_unprepared(sql).await,
            Self::Snapshot(txn) | Self::Standby(txn, _) => txn.execute_unprepared(sql).await,
            Self::Reader(reader) => reader.lent(None).await?.conn().execute_unprepared(sql).await,
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Self::Pool(db) => db.query_one_raw(stmt).await,
            Self::Snapshot(txn) | Self::Standby(txn, _) => txn.query_one_raw(stmt).await,
            Self::Reader(reader) => {
                let mut stmt = stmt;
                reader.lent(Some(&mut stmt)).await?.conn().query_one_raw(stmt).await
            }
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Self::Pool(db) => db.query_all_raw(stmt).await,
            Self::Snapshot(txn) | Self::Standby(txn, _) => txn.query_all_raw(stmt).await,
            Self::Reader(reader) => {
                let mut stmt = stmt;
                reader.lent(Some(&mut stmt)).await?.conn().query_all_raw(stmt).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queues `work` on the writer and waits for its answer.
    fn write<W>(db: &Database, work: W) -> BoxFuture<'_, Result<(), Error>>
    where
        W: for<'a> FnOnce(Writing<'a>) -> BoxFuture<'a, Result<(), Error>> + Send + 'static,
    {
        Box::pin(db.write(work))
    }

    fn insert(x: i64) -> Statement {
        Statement::from_sql_and_values(DbBackend::Sqlite, "INSERT INTO t (x) VALUES ($1) RETURNING x", [x.into()])
    }

    /// A SQLite database, `bank.db` in a directory of its own, with `settings` and `table` created by the writer.
    async fn sqlite_with(
        table: &'static str,
        settings: impl FnOnce(String) -> Settings,
    ) -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("bank.db").display());
        let db = Database::connect(&settings(url), |_| {}).await.expect("connect");
        write_sql(&db, table).await.expect("the table");
        (dir, db)
    }

    /// `sql` run by the writer, in a batch of its own or with others.
    async fn write_sql(db: &Database, sql: &'static str) -> Result<(), Error> {
        write(db, move |db| {
            Box::pin(async move {
                db.execute_unprepared(sql).await?;
                Ok(())
            })
        })
        .await
    }

    #[tokio::test]
    async fn a_failed_write_is_undone_alone_and_the_writes_of_its_batch_around_it_commit() {
        let (_dir, db) = sqlite_with("CREATE TABLE t (x INTEGER PRIMARY KEY)", Settings::new).await;

        let refused = || Error::internal("refused");
        let writes = vec![
            // Holds the writer while the others queue, so that they make one batch.
            write(&db, |_| {
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(())
                })
            }),
            // A query first: its savepoint opens with it.
            write(&db, |db| Box::pin(async move { db.query_one_raw(insert(1)).await.map(drop).map_err(Into::into) })),
            write(&db, move |db| {
                Box::pin(async move {
                    db.query_one_raw(insert(2)).await?;
                    db.query_one_raw(insert(3)).await?;
                    Err(refused())
                })
            }),
            // Nothing sent, and failed: no savepoint to undo.
            write(&db, move |_| Box::pin(async move { Err(refused()) })),
            // An execution first, then one that fails on the key.
            write(&db, |db| {
                Box::pin(async move {
                    db.execute_raw(Statement::from_string(DbBackend::Sqlite, "INSERT INTO t (x) VALUES (4)")).await?;
                    db.query_one_raw(insert(1)).await?;
                    Ok(())
                })
            }),
            // A transaction of its own inside the write.
            write(&db, |db| {
                Box::pin(async move {
                    let txn = db.begin().await?;
                    txn.query_one_raw(insert(5)).await?;
                    txn.commit().await?;
                    Ok(())
                })
            }),
            write(&db, |_| Box::pin(async move { Ok(()) })),
            write(&db, |db| {
                Box::pin(async move {
                    let changed = db.execute_raw(insert(6)).await?.rows_affected();
                    assert_eq!(changed, 1, "rows changed by the write's own statement only");
                    Ok(())
                })
            }),
        ];
        let answers: Vec<bool> = futures::future::join_all(writes).await.iter().map(Result::is_ok).collect();
        assert_eq!(answers, [true, true, false, false, false, true, true, true]);

        let rows = db.reads().query_all_raw(Statement::from_string(DbBackend::Sqlite, "SELECT x FROM t ORDER BY x"));
        let kept: Vec<i64> = rows.await.expect("read").iter().map(|row| row.try_get("", "x").expect("x")).collect();
        assert_eq!(kept, [1, 5, 6], "what the failed writes wrote is gone, and only that");
    }

    #[tokio::test]
    async fn a_query_request_holds_a_reader_from_its_first_statement_to_its_end_and_reads_one_snapshot() {
        let one_reader = |url| Settings { sqlite_read_connections: 1, ..Settings::new(url) };
        let (_dir, db) = sqlite_with("CREATE TABLE t (x INTEGER PRIMARY KEY)", one_reader).await;
        write(&db, |db| Box::pin(async move { db.query_one_raw(insert(1)).await.map(drop).map_err(Into::into) }))
            .await
            .expect("a row");
        let count = |db: Db| async move {
            let row = db.query_one_raw(Statement::from_string(DbBackend::Sqlite, "SELECT count(*) AS n FROM t")).await;
            row.expect("read").expect("a row").try_get::<i64>("", "n").expect("n")
        };

        // Two requests start; neither has read, so neither holds the one reader.
        let (first, second) = (db.snapshot(Sees::Everything).await, db.snapshot(Sees::Everything).await);
        let (first, second) = (first.expect("a snapshot"), second.expect("a snapshot"));
        assert_eq!(count(first.clone()).await, 1);
        write(&db, |db| Box::pin(async move { db.query_one_raw(insert(2)).await.map(drop).map_err(Into::into) }))
            .await
            .expect("a second row");
        assert_eq!(count(first.clone()).await, 1, "the first request reads the snapshot of its first statement");
        let waiting = tokio::time::timeout(Duration::from_millis(200), count(second.clone())).await;
        assert!(waiting.is_err(), "the second request waits for the reader the first holds");

        drop(first);
        let read = tokio::time::timeout(Duration::from_secs(2), count(second)).await;
        assert_eq!(read.expect("the reader given back once the first request ended"), 2);
    }

    #[tokio::test]
    async fn what_the_writer_committed_reaches_the_database_file_without_a_commit_copying_it() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("bank.db");
        let db = Database::connect(&Settings::new(format!("sqlite://{}?mode=rwc", file.display())), |_| {})
            .await
            .expect("connect");
        let before = std::fs::metadata(&file).expect("the file").len();
        write(&db, |db| {
            Box::pin(async move {
                db.execute_unprepared("CREATE TABLE t (x INTEGER PRIMARY KEY, padding BLOB)").await?;
                let rows = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 100) \
                            INSERT INTO t SELECT x, zeroblob(1000) FROM n";
                db.execute_unprepared(rows).await?;
                Ok(())
            })
        })
        .await
        .expect("a hundred rows");
        tokio::time::sleep(CHECKPOINT_EVERY * 5).await;
        let after = std::fs::metadata(&file).expect("the file").len();
        assert!(after >= before + 100 * 1000, "the database file grew from {before} to {after} bytes only");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_while_writes_never_pause() {
        let (dir, db) = sqlite_with("CREATE TABLE t (padding BLOB)", Settings::new).await;
        // Eight writers keep the writer's queue from ever running dry, for twenty checkpoints' time.
        let until = Instant::now() + CHECKPOINT_EVERY * 20;
        let writers = (0..8).map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut rows = 0u64;
                while Instant::now() < until {
                    write_sql(&db, "INSERT INTO t VALUES (zeroblob(4000))").await.expect("a row");
                    rows += 1;
                }
                rows
            })
        });
        let rows: u64 = futures::future::join_all(writers).await.into_iter().map(|rows| rows.expect("a writer")).sum();
        let wal = std::fs::metadata(dir.path().join("bank.db-wal")).expect("the WAL").len();
        assert!(wal < rows * 4000 / 4, "{rows} rows of 4,000 bytes left a WAL of {wal} bytes");
    }
}
