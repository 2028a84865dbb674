//! Every entry records the balance it left and its place in its account's ledger.
//!
//! - `entries.balance_after`: the account's balance right after the entry, so a history (or a subscriber) shows a
//!   running balance without summing. Back-filled as the running sum of the account's entries in id order.
//! - `entries.account_seq`: the entry's position in its account's ledger, 1, 2, 3, … with no gap, unique per
//!   account (`entries_account_seq_key`). The ledger takes the next number from `accounts.entry_count` in the same
//!   update that moves the money, so under the account's row lock: an account's entries are numbered in the order
//!   they commit, which ids (drawn from a sequence before the lock is taken) do not promise. Cursors over an
//!   account's entries are these numbers, so a reader resuming after entry n can never skip an entry that
//!   committed later with a smaller id. Back-filled in id order, the best order the past left.
//! - `accounts.entry_count`: how many entries the account has, i.e. its last `account_seq`.
//!
//! `down` drops the three columns.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::sqlite;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &str = r#"
ALTER TABLE "accounts" ADD COLUMN "entry_count" BIGINT NOT NULL DEFAULT 0;
ALTER TABLE "entries" ADD COLUMN "balance_after" BIGINT, ADD COLUMN "account_seq" BIGINT;
UPDATE "entries" AS e SET "balance_after" = r."running", "account_seq" = r."seq"
FROM (
    SELECT "id",
        sum("amount") OVER (PARTITION BY "account_id" ORDER BY "id") AS "running",
        row_number() OVER (PARTITION BY "account_id" ORDER BY "id") AS "seq"
    FROM "entries"
) AS r
WHERE r."id" = e."id";
UPDATE "accounts" AS a SET "entry_count" = (SELECT count(*) FROM "entries" AS e WHERE e."account_id" = a."id");
ALTER TABLE "entries"
    ALTER COLUMN "balance_after" SET NOT NULL,
    ALTER COLUMN "account_seq" SET NOT NULL,
    ADD CONSTRAINT "entries_account_seq_key" UNIQUE ("account_id", "account_seq");
"#;

const POSTGRES_DOWN: &str = r#"
ALTER TABLE "entries" DROP COLUMN "account_seq", DROP COLUMN "balance_after";
ALTER TABLE "accounts" DROP COLUMN "entry_count";
"#;

// SQLite adds a NOT NULL column only with a default, which these two must not have: the ledger always writes them.
// So `entries` is rebuilt with them, and the unique key is an index of its own, so that `down` can drop the
// columns again.
const SQLITE_ENTRIES: &str = r#"
CREATE TABLE "entries_new" (
    "id"            INTEGER CONSTRAINT "entries_pkey" PRIMARY KEY,
    "account_id"    INTEGER NOT NULL CONSTRAINT "entries_account_id_fkey" REFERENCES "accounts" ("id") ON DELETE RESTRICT,
    "amount"        INTEGER NOT NULL,
    "created_at"    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    "transfer_id"   INTEGER CONSTRAINT "entries_transfer_id_fkey" REFERENCES "transfers" ("id") ON DELETE RESTRICT,
    "balance_after" INTEGER NOT NULL,
    "account_seq"   INTEGER NOT NULL,
    CONSTRAINT "entries_amount_nonzero" CHECK ("amount" <> 0)
);
INSERT INTO "entries_new" ("id", "account_id", "amount", "created_at", "transfer_id", "balance_after", "account_seq")
SELECT "id", "account_id", "amount", "created_at", "transfer_id",
    sum("amount") OVER (PARTITION BY "account_id" ORDER BY "id"),
    row_number() OVER (PARTITION BY "account_id" ORDER BY "id")
FROM "entries";
DROP TABLE "entries";
ALTER TABLE "entries_new" RENAME TO "entries";
CREATE INDEX "entries_account_id_idx" ON "entries" ("account_id");
CREATE INDEX "entries_transfer_id_idx" ON "entries" ("transfer_id");
CREATE UNIQUE INDEX "entries_account_seq_key" ON "entries" ("account_id", "account_seq");
ALTER TABLE "accounts" ADD COLUMN "entry_count" INTEGER NOT NULL DEFAULT 0;
UPDATE "accounts" SET "entry_count" = (SELECT count(*) FROM "entries" AS e WHERE e."account_id" = "accounts"."id");
"#;

const SQLITE_DOWN: &str = r#"
DROP INDEX "entries_account_seq_key";
ALTER TABLE "entries" DROP COLUMN "account_seq";
ALTER TABLE "entries" DROP COLUMN "balance_after";
ALTER TABLE "accounts" DROP COLUMN "entry_count";
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_sql(manager, POSTGRES_UP, SQLITE_ENTRIES).await?;
        if manager.get_database_backend() == DbBackend::Sqlite {
            sqlite::ensure_foreign_keys_hold(manager).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_sql(manager, POSTGRES_DOWN, SQLITE_DOWN).await
    }
}
