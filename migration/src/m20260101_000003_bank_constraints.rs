//! The rules a bank's data must obey, written into the schema so that no code path can break them, each under a
//! name so that a violation says which rule broke.
//!
//! - `accounts_balance_nonnegative`: the schema itself refuses an overdraft, whatever the code above it does.
//! - `accounts_currency_supported`: a currency the bank does not run would make every balance sum ambiguous.
//! - `entries_amount_nonzero`: an entry of zero records no movement; it can only be a bug.
//! - `transfers_amount_positive`, `transfers_distinct_accounts`: a transfer moves money forward, between two accounts.
//! - Every foreign key is `ON DELETE RESTRICT`: money history is never cascaded away. Accounts, entries and transfers
//!   are never deleted and users are only soft-deleted, so a delete that would orphan a row is a bug to refuse.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::sqlite;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &str = r#"
ALTER TABLE "accounts"
    ADD CONSTRAINT "accounts_balance_nonnegative" CHECK ("balance" >= 0),
    ADD CONSTRAINT "accounts_currency_supported" CHECK ("currency" IN ('USD', 'EUR', 'CAD')),
    DROP CONSTRAINT "accounts_owner_fkey",
    ADD CONSTRAINT "accounts_owner_fkey" FOREIGN KEY ("owner") REFERENCES "users" ("username") ON DELETE RESTRICT;
ALTER TABLE "entries"
    ADD CONSTRAINT "entries_amount_nonzero" CHECK ("amount" <> 0),
    DROP CONSTRAINT "entries_account_id_fkey",
    ADD CONSTRAINT "entries_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts" ("id") ON DELETE RESTRICT;
ALTER TABLE "transfers"
    ADD CONSTRAINT "transfers_amount_positive" CHECK ("amount" > 0),
    ADD CONSTRAINT "transfers_distinct_accounts" CHECK ("from_account_id" <> "to_account_id"),
    DROP CONSTRAINT "transfers_from_account_id_fkey",
    ADD CONSTRAINT "transfers_from_account_id_fkey" FOREIGN KEY ("from_account_id") REFERENCES "accounts" ("id") ON DELETE RESTRICT,
    DROP CONSTRAINT "transfers_to_account_id_fkey",
    ADD CONSTRAINT "transfers_to_account_id_fkey" FOREIGN KEY ("to_account_id") REFERENCES "accounts" ("id") ON DELETE RESTRICT;
"#;

const POSTGRES_DOWN: &str = r#"
ALTER TABLE "transfers"
    DROP CONSTRAINT "transfers_to_account_id_fkey",
    ADD CONSTRAINT "transfers_to_account_id_fkey" FOREIGN KEY ("to_account_id") REFERENCES "accounts" ("id"),
    DROP CONSTRAINT "transfers_from_account_id_fkey",
    ADD CONSTRAINT "transfers_from_account_id_fkey" FOREIGN KEY ("from_account_id") REFERENCES "accounts" ("id"),
    DROP CONSTRAINT "transfers_distinct_accounts",
    DROP CONSTRAINT "transfers_amount_positive";
ALTER TABLE "entries"
    DROP CONSTRAINT "entries_account_id_fkey",
    ADD CONSTRAINT "entries_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts" ("id"),
    DROP CONSTRAINT "entries_amount_nonzero";
ALTER TABLE "accounts"
    DROP CONSTRAINT "accounts_owner_fkey",
    ADD CONSTRAINT "accounts_owner_fkey" FOREIGN KEY ("owner") REFERENCES "users" ("username"),
    DROP CONSTRAINT "accounts_currency_supported",
    DROP CONSTRAINT "accounts_balance_nonnegative";
"#;

/// One SQLite table as this migration leaves it (`up`) and as it found it (`down`).
struct SqliteTable {
    name: &'static str,
    up: &'static str,
    down: &'static str,
    columns: &'static str,
    indexes: &'static [&'static str],
}

const SQLITE_TABLES: [SqliteTable; 3] = [
    SqliteTable {
        name: "accounts",
        up: r#"
CREATE TABLE "accounts_new" (
    "id"         INTEGER CONSTRAINT "accounts_pkey" PRIMARY KEY,
    "owner"      TEXT    NOT NULL CONSTRAINT "accounts_owner_fkey" REFERENCES "users" ("username") ON DELETE RESTRICT,
    "balance"    INTEGER NOT NULL,
    "currency"   TEXT    NOT NULL,
    "created_at" TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CONSTRAINT "owner_currency_key" UNIQUE ("owner", "currency"),
    CONSTRAINT "accounts_balance_nonnegative" CHECK ("balance" >= 0),
    CONSTRAINT "accounts_currency_supported" CHECK ("currency" IN ('USD', 'EUR', 'CAD'))
)"#,
        down: r#"
CREATE TABLE "accounts_new" (
    "id"         INTEGER CONSTRAINT "accounts_pkey" PRIMARY KEY,
    "owner"      TEXT    NOT NULL CONSTRAINT "accounts_owner_fkey" REFERENCES "users" ("username"),
    "balance"    INTEGER NOT NULL,
    "currency"   TEXT    NOT NULL,
    "created_at" TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CONSTRAINT "owner_currency_key" UNIQUE ("owner", "currency")
)"#,
        columns: r#""id", "owner", "balance", "currency", "created_at""#,
        indexes: &[r#"CREATE INDEX "accounts_owner_idx" ON "accounts" ("owner")"#],
    },
    SqliteTable {
        name: "entries",
        up: r#"
CREATE TABLE "entries_new" (
    "id"         INTEGER CONSTRAINT "entries_pkey" PRIMARY KEY,
    "account_id" INTEGER NOT NULL CONSTRAINT "entries_account_id_fkey" REFERENCES "accounts" ("id") ON DELETE RESTRICT,
    "amount"     INTEGER NOT NULL,
    "created_at" TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CONSTRAINT "entries_amount_nonzero" CHECK ("amount" <> 0)
)"#,
        down: r#"
CREATE TABLE "entries_new" (
    "id"         INTEGER CONSTRAINT "entries_pkey" PRIMARY KEY,
    "account_id" INTEGER NOT NULL CONSTRAINT "entries_account_id_fkey" REFERENCES "accounts" ("id"),
    "amount"     INTEGER NOT NULL,
    "created_at" TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)"#,
        columns: r#""id", "account_id", "amount", "created_at""#,
        indexes: &[r#"CREATE INDEX "entries_account_id_idx" ON "entries" ("account_id")"#],
    },
    SqliteTable {
        name: "transfers",
        up: r#"
CREATE TABLE "transfers_new" (
    "id"              INTEGER CONSTRAINT "transfers_pkey" PRIMARY KEY,
    "from_account_id" INTEGER NOT NULL CONSTRAINT "transfers_from_account_id_fkey" REFERENCES "accounts" ("id") ON DELETE RESTRICT,
    "to_account_id"   INTEGER NOT NULL CONSTRAINT "transfers_to_account_id_fkey" REFERENCES "accounts" ("id") ON DELETE RESTRICT,
    "amount"          INTEGER NOT NULL,
    "created_at"      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CONSTRAINT "transfers_amount_positive" CHECK ("amount" > 0),
    CONSTRAINT "transfers_distinct_accounts" CHECK ("from_account_id" <> "to_account_id")
)"#,
        down: r#"
CREATE TABLE "transfers_new" (
    "id"              INTEGER CONSTRAINT "transfers_pkey" PRIMARY KEY,
    "from_account_id" INTEGER NOT NULL CONSTRAINT "transfers_from_account_id_fkey" REFERENCES "accounts" ("id"),
    "to_account_id"   INTEGER NOT NULL CONSTRAINT "transfers_to_account_id_fkey" REFERENCES "accounts" ("id"),
    "amount"          INTEGER NOT NULL,
    "created_at"      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)"#,
        columns: r#""id", "from_account_id", "to_account_id", "amount", "created_at""#,
        indexes: &[
            r#"CREATE INDEX "transfers_from_account_id_idx" ON "transfers" ("from_account_id")"#,
            r#"CREATE INDEX "transfers_to_account_id_idx" ON "transfers" ("to_account_id")"#,
            r#"CREATE INDEX "transfers_from_account_id_to_account_id_idx" ON "transfers" ("from_account_id", "to_account_id")"#,
        ],
    },
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DbBackend::Sqlite => {
                for table in &SQLITE_TABLES {
                    let SqliteTable { name, up, columns, indexes, .. } = table;
                    sqlite::rebuild_table(manager, name, up, columns, indexes).await?;
                }
            }
            _ => {
                manager.get_connection().execute_unprepared(POSTGRES_UP).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DbBackend::Sqlite => {
                for table in SQLITE_TABLES.iter().rev() {
                    let SqliteTable { name, down, columns, indexes, .. } = table;
                    sqlite::rebuild_table(manager, name, down, columns, indexes).await?;
                }
            }
            _ => {
                manager.get_connection().execute_unprepared(POSTGRES_DOWN).await?;
            }
        }
        Ok(())
    }
}
