//! The seed's lesson 17: a `users` table, `accounts.owner` as a foreign key to it, and one account per owner and
//! currency (`owner_currency_key`).
//!
//! On a database whose accounts name owners that are not users, this migration fails naming them and leaves the
//! database untouched (it runs in one transaction), instead of the "dirty" state of the lesson.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::sqlite;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_USERS: &str = r#"
CREATE TABLE "users" (
    "username"            VARCHAR     CONSTRAINT "users_pkey" PRIMARY KEY,
    "hashed_password"     VARCHAR     NOT NULL,
    "full_name"           VARCHAR     NOT NULL,
    "email"               VARCHAR     NOT NULL CONSTRAINT "users_email_key" UNIQUE,
    "password_changed_at" TIMESTAMPTZ NOT NULL DEFAULT '0001-01-01 00:00:00Z',
    "created_at"          TIMESTAMPTZ NOT NULL DEFAULT now()
);
"#;

const POSTGRES_LINK_ACCOUNTS: &str = r#"
ALTER TABLE "accounts" ADD CONSTRAINT "accounts_owner_fkey" FOREIGN KEY ("owner") REFERENCES "users" ("username");
-- One account per currency for each owner; the constraint's index also serves lookups by (owner, currency).
ALTER TABLE "accounts" ADD CONSTRAINT "owner_currency_key" UNIQUE ("owner", "currency");
"#;

// The lesson's down step: the reverse of up, in reverse order.
const POSTGRES_DOWN: &str = r#"
ALTER TABLE "accounts" DROP CONSTRAINT "owner_currency_key";
ALTER TABLE "accounts" DROP CONSTRAINT "accounts_owner_fkey";
DROP TABLE "users";
"#;

const SQLITE_USERS: &str = r#"
CREATE TABLE "users" (
    "username"            TEXT CONSTRAINT "users_pkey" PRIMARY KEY NOT NULL,
    "hashed_password"     TEXT NOT NULL,
    "full_name"           TEXT NOT NULL,
    "email"               TEXT NOT NULL CONSTRAINT "users_email_key" UNIQUE,
    "password_changed_at" TEXT NOT NULL DEFAULT '0001-01-01T00:00:00Z',
    "created_at"          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
"#;

const SQLITE_ACCOUNTS_WITH_OWNER: &str = r#"
CREATE TABLE "accounts_new" (
    "id"         INTEGER CONSTRAINT "accounts_pkey" PRIMARY KEY,
    "owner"      TEXT    NOT NULL CONSTRAINT "accounts_owner_fkey" REFERENCES "users" ("username"),
    "balance"    INTEGER NOT NULL,
    "currency"   TEXT    NOT NULL,
    "created_at" TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CONSTRAINT "owner_currency_key" UNIQUE ("owner", "currency")
)
"#;

const SQLITE_ACCOUNTS_BEFORE: &str = r#"
CREATE TABLE "accounts_new" (
    "id"         INTEGER CONSTRAINT "accounts_pkey" PRIMARY KEY,
    "owner"      TEXT    NOT NULL,
    "balance"    INTEGER NOT NULL,
    "currency"   TEXT    NOT NULL,
    "created_at" TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)
"#;

const ACCOUNT_COLUMNS: &str = r#""id", "owner", "balance", "currency", "created_at""#;
const ACCOUNT_INDEXES: &[&str] = &[r#"CREATE INDEX "accounts_owner_idx" ON "accounts" ("owner")"#];

/// How many offending owners the error names before it only counts the rest.
const OWNERS_NAMED: usize = 10;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        // Checked first so the error names the owners; the foreign key alone would only say that one broke.
        ensure_every_owner_is_a_user(manager).await?;
        match manager.get_database_backend() {
            DbBackend::Sqlite => {
                db.execute_unprepared(SQLITE_USERS).await?;
                sqlite::rebuild_table(manager, "accounts", SQLITE_ACCOUNTS_WITH_OWNER, ACCOUNT_COLUMNS, ACCOUNT_INDEXES)
                    .await
            }
            _ => {
                db.execute_unprepared(POSTGRES_USERS).await?;
                db.execute_unprepared(POSTGRES_LINK_ACCOUNTS).await?;
                Ok(())
            }
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Sqlite => {
                sqlite::rebuild_table(manager, "accounts", SQLITE_ACCOUNTS_BEFORE, ACCOUNT_COLUMNS, ACCOUNT_INDEXES)
                    .await?;
                db.execute_unprepared(r#"DROP TABLE "users""#).await?;
            }
            _ => {
                db.execute_unprepared(POSTGRES_DOWN).await?;
            }
        }
        Ok(())
    }
}

/// Before this migration there are no users, so every account owner would break the new foreign key.
async fn ensure_every_owner_is_a_user(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            r#"SELECT DISTINCT "owner" FROM "accounts" ORDER BY "owner""#,
        ))
        .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let owners = rows
        .iter()
        .take(OWNERS_NAMED)
        .map(|row| row.try_get_by_index::<String>(0).map(|owner| format!("{owner:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    let more = match rows.len().saturating_sub(OWNERS_NAMED) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    Err(DbErr::Migration(format!(
        "add_users: {} account owner(s) are not users: {}{more}. Nothing was changed; create those users \
         (or remove their accounts), then migrate again.",
        rows.len(),
        owners.join(", "),
    )))
}
