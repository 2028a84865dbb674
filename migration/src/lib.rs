//! The bank's database schema as a sequence of reversible migrations.
//!
//! Every migration runs in its own transaction on both backends, together with the row that records it in
//! `seaql_migrations`, so a failing migration leaves the database exactly at the previous version: there is no
//! "dirty" state to repair by hand. Landed migrations are never edited; schema changes are new migrations.

pub use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectOptions, Database, DatabaseConnection};

pub mod erd;
mod m20260101_000001_init_schema;
mod m20260101_000002_add_users;
mod m20260101_000003_bank_constraints;
mod m20260101_000004_user_auth;
mod m20260101_000005_ledger;
mod m20260101_000006_transfer_idempotency;
mod m20260101_000007_account_closing;
mod m20260101_000008_login_throttle;
mod m20260101_000009_entry_balance_after;
mod m20260101_000010_withdrawals;
mod sqlite;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20260101_000001_init_schema::Migration),
            Box::new(m20260101_000002_add_users::Migration),
            Box::new(m20260101_000003_bank_constraints::Migration),
            Box::new(m20260101_000004_user_auth::Migration),
            Box::new(m20260101_000005_ledger::Migration),
            Box::new(m20260101_000006_transfer_idempotency::Migration),
            Box::new(m20260101_000007_account_closing::Migration),
            Box::new(m20260101_000008_login_throttle::Migration),
            Box::new(m20260101_000009_entry_balance_after::Migration),
            Box::new(m20260101_000010_withdrawals::Migration),
        ]
    }
}

/// Runs the SQL written for the connection's backend.
async fn run_sql(manager: &SchemaManager<'_>, postgres: &str, sqlite: &str) -> Result<(), DbErr> {
    let sql = match manager.get_database_backend() {
        sea_orm_migration::sea_orm::DbBackend::Sqlite => sqlite,
        _ => postgres,
    };
    manager.get_connection().execute_unprepared(sql).await.map(drop)
}

/// Opens the connection migrations must run on.
///
/// On SQLite, foreign keys are switched off for this connection: SQLite cannot add a foreign key or a CHECK with
/// ALTER TABLE, so migrations rebuild tables (create, copy, drop, rename), and dropping a table that other tables
/// reference is only possible with enforcement off. Each rebuild re-checks every foreign key before its transaction
/// commits (`sqlite::ensure_foreign_keys_hold`), which is SQLite's documented procedure for such changes.
pub async fn connect(mut options: ConnectOptions) -> Result<DatabaseConnection, DbErr> {
    options.map_sqlx_sqlite_opts(|sqlite| sqlite.foreign_keys(false).create_if_missing(true)).sqlx_logging(false);
    Database::connect(options).await
}

/// Applies every pending migration on a connection made by [`connect`] for `url`.
pub async fn migrate_up(url: &str) -> Result<(), DbErr> {
    let db = connect(ConnectOptions::new(url)).await?;
    let result = Migrator::up(&db, None).await;
    db.close().await?;
    result
}
