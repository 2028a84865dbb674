//! The raw baselines: the server's work sent straight to the database by this program, without the server, so that
//! each backend is judged against its own limit in the same run.
//!
//! - PostgreSQL: the transfer as one function call (one round trip, as the server's one statement) and as a naive
//!   7-statement transaction; the users page as the two queries it needs. Each client has a connection of its own.
//! - SQLite: the statements of the server's SQLite path, on a copy of the server's database file in WAL mode with
//!   `synchronous=FULL`: the transfer (the accounts read, the transfer row, the balance update, the two entries,
//!   one commit each) on one writer connection that the clients queue for, and the users page as its two queries
//!   in one read transaction on read-only connections, one per client.
//!
//! Like the server's loads, every raw transfer moves 1 between random accounts. The session check and the
//! idempotency key are the server's own work and are not part of either baseline.

use std::path::Path;
use std::sync::Arc;

use sea_orm::sqlx::postgres::{PgConnection, PgPoolOptions};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sea_orm::sqlx::{self, Connection, Executor};

use crate::Result;
use crate::connections::Dedicated;
use crate::loads::pick_pair;

/// The columns the users page shows, as the server must read them, for its first 20 users (and one to tell
/// whether more follow).
const USERS: &str = "SELECT username, full_name, email FROM users WHERE deleted_at IS NULL ORDER BY username LIMIT 21";

/// The raw PostgreSQL loads.
pub struct Postgres {
    connections: Dedicated<PgConnection>,
    accounts: Arc<Vec<i64>>,
}

impl Postgres {
    /// Installs the transfer function and opens `clients` connections.
    pub async fn connect(url: &str, clients: usize) -> Result<Self> {
        let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
        pool.execute(TRANSFER_FUNCTION).await?;
        let accounts = sqlx::query_scalar("SELECT id FROM accounts ORDER BY id").fetch_all(&pool).await?;
        pool.close().await;
        let connections = futures::future::try_join_all((0..clients).map(|_| PgConnection::connect(url))).await?;
        Ok(Self { connections: Dedicated::new(connections), accounts: Arc::new(accounts) })
    }

    /// The transfer as one call of [`TRANSFER_FUNCTION`].
    pub fn transfer(&self, rng: &mut rand::rngs::ThreadRng) -> impl Future<Output = Result<()>> + Send + use<> {
        let (from, to) = self.pair(rng);
        let connections = self.connections.clone();
        async move {
            let mut conn = connections.take()?;
            sqlx::query("SELECT bench_transfer($1, $2, 1)").bind(from).bind(to).execute(&mut *conn).await?;
            Ok(())
        }
    }

    /// The transfer as a client without a function would write it: a transaction of 7 statements.
    pub fn naive_transfer(&self, rng: &mut rand::rngs::ThreadRng) -> impl Future<Output = Result<()>> + Send + use<> {
        let (from, to) = self.pair(rng);
        let connections = self.connections.clone();
        async move {
            let mut conn = connections.take()?;
            let mut tx = conn.begin().await?;
            sqlx::query("SELECT id FROM accounts WHERE id IN ($1, $2) ORDER BY id FOR UPDATE")
                .bind(from)
                .bind(to)
                .fetch_all(&mut *tx)
                .await?;
            // Each entry records the balance it left and its place in the account's ledger, as the server's do.
            let moved = "UPDATE accounts SET balance = balance + $2, entry_count = entry_count + 1 WHERE id = $1 \
                         RETURNING balance, entry_count";
            let (from_balance, from_seq): (i64, i64) =
                sqlx::query_as(moved).bind(from).bind(-1i64).fetch_one(&mut *tx).await?;
            let (to_balance, to_seq): (i64, i64) =
                sqlx::query_as(moved).bind(to).bind(1i64).fetch_one(&mut *tx).await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO transfers (from_account_id, to_account_id, amount) VALUES ($1, $2, 1) RETURNING id",
            )
            .bind(from)
            .bind(to)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO entries (account_id, amount, transfer_id, balance_after, account_seq) \
                 VALUES ($1, -1, $3, $4, $5), ($2, 1, $3, $6, $7)",
            )
            .bind(from)
            .bind(to)
            .bind(id)
            .bind(from_balance)
            .bind(from_seq)
            .bind(to_balance)
            .bind(to_seq)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        }
    }

    /// The users page's two queries.
    pub fn users_page(&self) -> impl Future<Output = Result<()>> + Send + use<> {
        let connections = self.connections.clone();
        async move {
            let mut conn = connections.take()?;
            let users: Vec<(String, String, Option<String>)> = sqlx::query_as(USERS).fetch_all(&mut *conn).await?;
            let users: Vec<String> = users.into_iter().map(|(username, ..)| username).collect();
            sqlx::query("SELECT id, owner, balance, currency FROM accounts WHERE owner = ANY($1) ORDER BY id")
                .bind(&users)
                .fetch_all(&mut *conn)
                .await?;
            Ok(())
        }
    }

    fn pair(&self, rng: &mut rand::rngs::ThreadRng) -> (i64, i64) {
        let (i, j) = pick_pair(self.accounts.len(), rng);
        (self.accounts[i], self.accounts[j])
    }
}

/// The server's transfer as PostgreSQL alone runs it: both rows locked in id order, both balances moved, the
/// transfer row and its two entries, in one round trip.
const TRANSFER_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION bench_transfer(p_from bigint, p_to bigint, p_amount bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE t_id bigint; f_balance bigint; f_seq bigint; t_balance bigint; t_seq bigint;
BEGIN
    PERFORM 1 FROM accounts WHERE id IN (p_from, p_to) ORDER BY id FOR UPDATE;
    UPDATE accounts SET balance = balance - p_amount, entry_count = entry_count + 1 WHERE id = p_from
        RETURNING balance, entry_count INTO f_balance, f_seq;
    UPDATE accounts SET balance = balance + p_amount, entry_count = entry_count + 1 WHERE id = p_to
        RETURNING balance, entry_count INTO t_balance, t_seq;
    INSERT INTO transfers (from_account_id, to_account_id, amount) VALUES (p_from, p_to, p_amount) RETURNING id INTO t_id;
    INSERT INTO entries (account_id, amount, transfer_id, balance_after, account_seq)
        VALUES (p_from, -p_amount, t_id, f_balance, f_seq), (p_to, p_amount, t_id, t_balance, t_seq);
    RETURN t_id;
END $$;
"#;

/// The postmaster of the cluster at `url`: the parent of the backend serving a connection.
pub async fn postmaster(url: &str) -> Result<u32> {
    let mut conn = PgConnection::connect(url).await?;
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut conn).await?;
    let stat = std::fs::read_to_string(format!("/proc/{backend}/stat"))
        .map_err(|err| format!("PostgreSQL runs on another machine, or as someone this cannot see: {err}"))?;
    conn.close().await?;
    Ok(crate::measure::parent(&stat).ok_or("a /proc stat without a parent")?)
}

/// A fresh PostgreSQL database `name` on the server of `admin_url`, answering its URL.
pub async fn fresh_postgres_database(admin_url: &str, name: &str) -> Result<String> {
    let admin = PgPoolOptions::new().max_connections(1).connect(admin_url).await?;
    // The name is ours (a constant), not input.
    admin
        .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))))
        .await?;
    admin.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))).await?;
    let (server, _) = admin_url.rsplit_once('/').ok_or("TEST_DATABASE_URL names a database")?;
    Ok(format!("{server}/{name}"))
}

/// The raw SQLite loads.
pub struct Sqlite {
    /// SQLite runs one writer at a time: the clients queue for this one connection (tokio's mutex is fair), as
    /// the server's requests queue for its writer.
    writer: Arc<tokio::sync::Mutex<SqliteConnection>>,
    readers: Dedicated<SqliteConnection>,
    accounts: Arc<Vec<i64>>,
}

impl Sqlite {
    /// Copies the server's database at `server_db` to `copy` (`VACUUM INTO`, a consistent snapshot the server's
    /// file is not touched by) and opens one writer and `readers` read-only connections on the copy.
    pub async fn copy_of(server_db: &Path, copy: &Path, readers: usize) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true);
        let mut source = SqliteConnection::connect_with(&options.clone().filename(server_db)).await?;
        sqlx::query("VACUUM INTO ?").bind(copy.to_string_lossy().into_owned()).execute(&mut source).await?;
        source.close().await?;
        let options = options.filename(copy);
        let mut writer = SqliteConnection::connect_with(&options).await?;
        let accounts = sqlx::query_scalar("SELECT id FROM accounts ORDER BY id").fetch_all(&mut writer).await?;
        let read_only = options.read_only(true);
        let readers =
            futures::future::try_join_all((0..readers).map(|_| SqliteConnection::connect_with(&read_only))).await?;
        Ok(Self {
            writer: Arc::new(tokio::sync::Mutex::new(writer)),
            readers: Dedicated::new(readers),
            accounts: Arc::new(accounts),
        })
    }

    /// The transfer as the server's SQLite path writes it (`SQLITE_TRANSFER_SQL` in the service's transfers),
    /// without the session and idempotency-key reads.
    pub fn transfer(&self, rng: &mut rand::rngs::ThreadRng) -> impl Future<Output = Result<()>> + Send + use<> {
        let (i, j) = pick_pair(self.accounts.len(), rng);
        let (from, to, writer) = (self.accounts[i], self.accounts[j], self.writer.clone());
        async move {
            let mut conn = writer.lock().await;
            let mut tx = conn.begin().await?;
            // The server's four statements in one command (`SQLITE_TRANSFER_SQL` in service/src/ledger/transfers.rs),
            // less its session check and idempotency key.
            let rows = sqlx::query(
                "SELECT f.owner, f.currency, f.balance, f.closed_at, t.owner, t.currency, t.balance, t.closed_at \
                 FROM (SELECT 1) AS one LEFT JOIN accounts f ON f.id = $1 LEFT JOIN accounts t ON t.id = $2; \
                 INSERT INTO transfers (from_account_id, to_account_id, amount) \
                 SELECT $1, $2, 1 FROM accounts f JOIN accounts t ON f.id = $1 AND t.id = $2 \
                 WHERE f.currency = t.currency AND f.closed_at IS NULL AND t.closed_at IS NULL AND f.balance >= 1 \
                 RETURNING id, created_at; \
                 UPDATE accounts SET balance = CASE WHEN id = $1 THEN balance - 1 ELSE balance + 1 END, \
                 entry_count = entry_count + 1 WHERE id IN ($1, $2) AND changes() = 1 \
                 RETURNING id, balance, entry_count; \
                 INSERT INTO entries (account_id, amount, transfer_id, balance_after, account_seq) \
                 SELECT id, CASE WHEN id = $1 THEN -1 ELSE 1 END, (SELECT max(id) FROM transfers), balance, \
                 entry_count FROM accounts WHERE id IN ($1, $2) AND changes() = 2 RETURNING id, created_at",
            )
            .bind(from)
            .bind(to)
            .fetch_all(&mut *tx)
            .await?;
            if rows.len() != 1 + 1 + 2 + 2 {
                return Err("a raw transfer wrote less than it should".into());
            }
            tx.commit().await?;
            Ok(())
        }
    }

    /// The users page's two queries in one read transaction: one snapshot, as the server's query requests.
    pub fn users_page(&self) -> impl Future<Output = Result<()>> + Send + use<> {
        let readers = self.readers.clone();
        async move {
            let mut conn = readers.take()?;
            let mut tx = conn.begin().await?;
            let users: Vec<(String, String, Option<String>)> = sqlx::query_as(USERS).fetch_all(&mut *tx).await?;
            let placeholders = vec!["?"; users.len()].join(", ");
            // Only placeholders are spliced in; the values are bound.
            let accounts = format!(
                "SELECT id, owner, balance, currency FROM accounts WHERE owner IN ({placeholders}) ORDER BY id"
            );
            let mut accounts = sqlx::query(sqlx::AssertSqlSafe(accounts));
            for (username, ..) in users {
                accounts = accounts.bind(username);
            }
            accounts.fetch_all(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        }
    }
}
