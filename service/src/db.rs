//! Opening the application's database connection.

use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

/// Connects to `url` with the settings the server relies on.
///
/// SQLite: one connection (SQLite runs one writer at a time; a single connection turns contention into a queue
/// instead of `database is locked` errors), WAL with `synchronous=FULL` so a committed transfer survives a crash,
/// foreign keys enforced, and a busy timeout for other processes sharing the file.
/// PostgreSQL: a bounded pool that fails fast when the server is away, so requests do not hang.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url);
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
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
        options.max_connections(16).min_connections(1);
    }
    Database::connect(options).await
}
