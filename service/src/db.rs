//! The application's database connection, and the per-request snapshot reads go through.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, Statement, TransactionTrait,
};

/// Connects to `url` with the settings the server relies on.
///
/// SQLite: one connection (SQLite runs one writer at a time; a single connection turns contention into a queue
/// instead of `database is locked` errors), WAL with `synchronous=FULL` so a committed transfer survives a crash,
/// foreign keys enforced, and a busy timeout for other processes sharing the file.
/// PostgreSQL: a pool of up to `max_connections` that fails fast when the server is away, so requests do not hang.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    Database::connect(options(url, max_connections)).await
}

/// The server's default pool size on PostgreSQL, for writes (query snapshots have as many again). PostgreSQL does
/// the most with a few busy connections per core: past that, requests only queue inside it and wait on each other's
/// locks. On the 2-core benchmark machine, 8 rather than 16 took the transfer p99 from about 22 ms to 17 ms and
/// cut the database's CPU per transfer by a sixth.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 8;

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

/// Opens the read snapshots that query requests run in.
///
/// On PostgreSQL it has connections of its own whose every transaction is REPEATABLE READ and READ ONLY (set once,
/// when each connects), so a snapshot costs one round trip to open (`BEGIN`) and none to end: nothing in it can
/// have changed anything, so it is rolled back in the background once the request is answered. On SQLite a
/// transaction is a snapshot already, and it shares the one connection.
#[derive(Clone)]
pub struct Snapshots(DatabaseConnection);

impl Snapshots {
    pub async fn connect(url: &str, max_connections: u32, pool: &DatabaseConnection) -> Result<Self, DbErr> {
        match pool.get_database_backend() {
            DbBackend::Postgres => {
                let mut options = options(url, max_connections);
                options.map_sqlx_postgres_opts(|pg| {
                    pg.options([
                        ("default_transaction_isolation", "repeatable read"),
                        ("default_transaction_read_only", "on"),
                    ])
                });
                Ok(Self(Database::connect(options).await?))
            }
            _ => Ok(Self(pool.clone())),
        }
    }

    /// A snapshot for one request's reads.
    pub async fn open(&self) -> Result<Db, DbErr> {
        Ok(Db::Snapshot(Arc::new(self.0.begin().await?)))
    }

    /// Counts the snapshots' statements too (see [`DatabaseConnection::set_metric_callback`]).
    pub fn set_metric_callback(&mut self, callback: impl Fn(&sea_orm::metric::Info<'_>) + Send + Sync + 'static) {
        self.0.set_metric_callback(callback);
    }
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

/// The pool's connections: (open, idle).
pub fn pool_usage(db: &DatabaseConnection) -> (u32, usize) {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            (pool.size(), pool.num_idle())
        }
        DbBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle())
        }
        _ => (0, 0),
    }
}
