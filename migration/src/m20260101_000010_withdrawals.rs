//! Withdrawals: money leaves the bank as an entry of its own (a negative amount with no transfer), and a keyed
//! withdrawal is remembered so that a retry moves nothing twice.
//!
//! - `withdrawal_keys`: one row per idempotency key used on an account (`withdrawal_keys_pkey`), with the amount
//!   the first request asked for (a retry asking for another amount is refused) and the entry it wrote. Unkeyed
//!   withdrawals need no row: their entry is the whole record.
//!
//! `down` drops the table; the entries withdrawals wrote stay, as any entry does.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &str = r#"
CREATE TABLE "withdrawal_keys" (
    "account_id"      BIGINT      NOT NULL
        CONSTRAINT "withdrawal_keys_account_id_fkey" REFERENCES "accounts" ("id") ON DELETE RESTRICT,
    "idempotency_key" VARCHAR     NOT NULL,
    "amount"          BIGINT      NOT NULL CONSTRAINT "withdrawal_keys_amount_positive" CHECK ("amount" > 0),
    "entry_id"        BIGINT      NOT NULL
        CONSTRAINT "withdrawal_keys_entry_id_fkey" REFERENCES "entries" ("id") ON DELETE RESTRICT,
    "created_at"      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT "withdrawal_keys_pkey" PRIMARY KEY ("account_id", "idempotency_key")
);
"#;

const SQLITE_UP: &str = r#"
CREATE TABLE "withdrawal_keys" (
    "account_id"      INTEGER NOT NULL
        CONSTRAINT "withdrawal_keys_account_id_fkey" REFERENCES "accounts" ("id") ON DELETE RESTRICT,
    "idempotency_key" TEXT    NOT NULL,
    "amount"          INTEGER NOT NULL CONSTRAINT "withdrawal_keys_amount_positive" CHECK ("amount" > 0),
    "entry_id"        INTEGER NOT NULL
        CONSTRAINT "withdrawal_keys_entry_id_fkey" REFERENCES "entries" ("id") ON DELETE RESTRICT,
    "created_at"      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CONSTRAINT "withdrawal_keys_pkey" PRIMARY KEY ("account_id", "idempotency_key")
);
"#;

const DOWN: &str = r#"DROP TABLE "withdrawal_keys";"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_sql(manager, POSTGRES_UP, SQLITE_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_sql(manager, DOWN, DOWN).await
    }
}
