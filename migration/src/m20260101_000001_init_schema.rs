//! The seed course's schema before users existed: accounts, entries and transfers, with the seed's indexes.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &str = r#"
CREATE TABLE "accounts" (
    "id"         BIGSERIAL   CONSTRAINT "accounts_pkey" PRIMARY KEY,
    "owner"      VARCHAR     NOT NULL,
    "balance"    BIGINT      NOT NULL,
    "currency"   VARCHAR     NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE "entries" (
    "id"         BIGSERIAL   CONSTRAINT "entries_pkey" PRIMARY KEY,
    "account_id" BIGINT      NOT NULL CONSTRAINT "entries_account_id_fkey" REFERENCES "accounts" ("id"),
    "amount"     BIGINT      NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE "transfers" (
    "id"              BIGSERIAL   CONSTRAINT "transfers_pkey" PRIMARY KEY,
    "from_account_id" BIGINT      NOT NULL CONSTRAINT "transfers_from_account_id_fkey" REFERENCES "accounts" ("id"),
    "to_account_id"   BIGINT      NOT NULL CONSTRAINT "transfers_to_account_id_fkey" REFERENCES "accounts" ("id"),
    "amount"          BIGINT      NOT NULL,
    "created_at"      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX "accounts_owner_idx" ON "accounts" ("owner");
CREATE INDEX "entries_account_id_idx" ON "entries" ("account_id");
CREATE INDEX "transfers_from_account_id_idx" ON "transfers" ("from_account_id");
CREATE INDEX "transfers_to_account_id_idx" ON "transfers" ("to_account_id");
CREATE INDEX "transfers_from_account_id_to_account_id_idx" ON "transfers" ("from_account_id", "to_account_id");
COMMENT ON COLUMN "entries"."amount" IS 'can be negative or positive';
COMMENT ON COLUMN "transfers"."amount" IS 'must be positive';
"#;

// SQLite has no TIMESTAMPTZ: instants are RFC 3339 text in UTC, which sorts in time order.
// Table names are quoted because that is how SQLite stores a renamed table, and later migrations rebuild these
// tables by renaming: quoting here keeps `.schema` identical after a down + up round trip.
const SQLITE_UP: &str = r#"
CREATE TABLE "accounts" (
    "id"         INTEGER CONSTRAINT "accounts_pkey" PRIMARY KEY,
    "owner"      TEXT    NOT NULL,
    "balance"    INTEGER NOT NULL,
    "currency"   TEXT    NOT NULL,
    "created_at" TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE "entries" (
    "id"         INTEGER CONSTRAINT "entries_pkey" PRIMARY KEY,
    "account_id" INTEGER NOT NULL CONSTRAINT "entries_account_id_fkey" REFERENCES "accounts" ("id"),
    "amount"     INTEGER NOT NULL,
    "created_at" TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE "transfers" (
    "id"              INTEGER CONSTRAINT "transfers_pkey" PRIMARY KEY,
    "from_account_id" INTEGER NOT NULL CONSTRAINT "transfers_from_account_id_fkey" REFERENCES "accounts" ("id"),
    "to_account_id"   INTEGER NOT NULL CONSTRAINT "transfers_to_account_id_fkey" REFERENCES "accounts" ("id"),
    "amount"          INTEGER NOT NULL,
    "created_at"      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX "accounts_owner_idx" ON "accounts" ("owner");
CREATE INDEX "entries_account_id_idx" ON "entries" ("account_id");
CREATE INDEX "transfers_from_account_id_idx" ON "transfers" ("from_account_id");
CREATE INDEX "transfers_to_account_id_idx" ON "transfers" ("to_account_id");
CREATE INDEX "transfers_from_account_id_to_account_id_idx" ON "transfers" ("from_account_id", "to_account_id");
"#;

const DOWN: &str = r#"
DROP TABLE "transfers";
DROP TABLE "entries";
DROP TABLE "accounts";
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_sql(manager, POSTGRES_UP, SQLITE_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }
}
