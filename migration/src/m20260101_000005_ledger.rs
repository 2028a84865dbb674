//! What the ledger needs beyond the seed's tables.
//!
//! - `entries.transfer_id`: the transfer an entry belongs to; deposits have none. Lets a history show each movement's
//!   counterpart without guessing by time and amount.
//! - `idempotency_keys`: a client's key for a transfer request and a hash of that request, so a retried request
//!   returns the first result instead of moving money twice. The primary key serialises concurrent requests with
//!   one key: the second waits for the first to commit, then finds its row. Kept in the database so that every
//!   server replica agrees.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::sqlite;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &str = r#"
ALTER TABLE "entries" ADD COLUMN "transfer_id" BIGINT
    CONSTRAINT "entries_transfer_id_fkey" REFERENCES "transfers" ("id") ON DELETE RESTRICT;
CREATE INDEX "entries_transfer_id_idx" ON "entries" ("transfer_id");
CREATE TABLE "idempotency_keys" (
    "username"     VARCHAR     NOT NULL CONSTRAINT "idempotency_keys_username_fkey" REFERENCES "users" ("username") ON DELETE RESTRICT,
    "key"          VARCHAR     NOT NULL,
    "request_hash" VARCHAR     NOT NULL,
    "transfer_id"  BIGINT      CONSTRAINT "idempotency_keys_transfer_id_fkey" REFERENCES "transfers" ("id") ON DELETE RESTRICT,
    "created_at"   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT "idempotency_keys_pkey" PRIMARY KEY ("username", "key")
);
"#;

const POSTGRES_DOWN: &str = r#"
DROP TABLE "idempotency_keys";
DROP INDEX "entries_transfer_id_idx";
ALTER TABLE "entries" DROP COLUMN "transfer_id";
"#;

const SQLITE_UP: &str = r#"
ALTER TABLE "entries" ADD COLUMN "transfer_id" INTEGER
    CONSTRAINT "entries_transfer_id_fkey" REFERENCES "transfers" ("id") ON DELETE RESTRICT;
CREATE INDEX "entries_transfer_id_idx" ON "entries" ("transfer_id");
CREATE TABLE "idempotency_keys" (
    "username"     TEXT    NOT NULL CONSTRAINT "idempotency_keys_username_fkey" REFERENCES "users" ("username") ON DELETE RESTRICT,
    "key"          TEXT    NOT NULL,
    "request_hash" TEXT    NOT NULL,
    "transfer_id"  INTEGER CONSTRAINT "idempotency_keys_transfer_id_fkey" REFERENCES "transfers" ("id") ON DELETE RESTRICT,
    "created_at"   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CONSTRAINT "idempotency_keys_pkey" PRIMARY KEY ("username", "key")
);
"#;

// SQLite cannot drop a column that a foreign key uses: rebuild `entries` as `bank_constraints` left it.
const SQLITE_ENTRIES_BEFORE: &str = r#"
CREATE TABLE "entries_new" (
    "id"         INTEGER CONSTRAINT "entries_pkey" PRIMARY KEY,
    "account_id" INTEGER NOT NULL CONSTRAINT "entries_account_id_fkey" REFERENCES "accounts" ("id") ON DELETE RESTRICT,
    "amount"     INTEGER NOT NULL,
    "created_at" TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CONSTRAINT "entries_amount_nonzero" CHECK ("amount" <> 0)
)"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_sql(manager, POSTGRES_UP, SQLITE_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Sqlite => {
                db.execute_unprepared(r#"DROP TABLE "idempotency_keys""#).await?;
                sqlite::rebuild_table(
                    manager,
                    "entries",
                    SQLITE_ENTRIES_BEFORE,
                    r#""id", "account_id", "amount", "created_at""#,
                    &[r#"CREATE INDEX "entries_account_id_idx" ON "entries" ("account_id")"#],
                )
                .await?;
            }
            _ => {
                db.execute_unprepared(POSTGRES_DOWN).await?;
            }
        }
        Ok(())
    }
}
