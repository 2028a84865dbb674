//! Idempotency keys move onto the transfer they made: `transfers.idempotency_key` and `transfers.request_hash`.
//!
//! - `transfers_idempotency_key_key UNIQUE (from_account_id, idempotency_key)`: a key names one transfer from the
//!   account it debits. Only that account's owner can debit it, so this scopes keys to the owner as before, account by
//!   account. It also serialises concurrent requests with one key: the second waits for the first to commit, then
//!   fails on the constraint and replays the first. Transfers without a key (NULL) never collide.
//! - `transfers_idempotency_key_has_hash`: a key always comes with the hash of the request it was used for.
//!
//! Why: the separate `idempotency_keys` table cost a second row, a second index and two foreign-key checks on every
//! transfer, about a fifth of the database's work for one (issue 6's profile). The key's rows move across; `down`
//! moves them back, and fails, changing nothing, if an owner has meanwhile used one key on two of their accounts.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &str = r#"
ALTER TABLE "transfers"
    ADD COLUMN "idempotency_key" VARCHAR,
    ADD COLUMN "request_hash" VARCHAR,
    ADD CONSTRAINT "transfers_idempotency_key_key" UNIQUE ("from_account_id", "idempotency_key"),
    ADD CONSTRAINT "transfers_idempotency_key_has_hash" CHECK (("idempotency_key" IS NULL) = ("request_hash" IS NULL));
UPDATE "transfers" AS t SET "idempotency_key" = k."key", "request_hash" = k."request_hash"
FROM "idempotency_keys" AS k WHERE k."transfer_id" = t."id";
DROP TABLE "idempotency_keys";
"#;

const POSTGRES_DOWN: &str = r#"
CREATE TABLE "idempotency_keys" (
    "username"     VARCHAR     NOT NULL CONSTRAINT "idempotency_keys_username_fkey" REFERENCES "users" ("username") ON DELETE RESTRICT,
    "key"          VARCHAR     NOT NULL,
    "request_hash" VARCHAR     NOT NULL,
    "transfer_id"  BIGINT      CONSTRAINT "idempotency_keys_transfer_id_fkey" REFERENCES "transfers" ("id") ON DELETE RESTRICT,
    "created_at"   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT "idempotency_keys_pkey" PRIMARY KEY ("username", "key")
);
INSERT INTO "idempotency_keys" ("username", "key", "request_hash", "transfer_id", "created_at")
SELECT a."owner", t."idempotency_key", t."request_hash", t."id", t."created_at"
FROM "transfers" AS t JOIN "accounts" AS a ON a."id" = t."from_account_id"
WHERE t."idempotency_key" IS NOT NULL;
ALTER TABLE "transfers" DROP COLUMN "request_hash", DROP COLUMN "idempotency_key";
"#;

// SQLite's ADD COLUMN takes a CHECK but not a UNIQUE constraint; a unique index is the same rule, and its violation
// is mapped to the constraint's name by its columns (service::constraint).
const SQLITE_UP: &str = r#"
ALTER TABLE "transfers" ADD COLUMN "idempotency_key" TEXT;
ALTER TABLE "transfers" ADD COLUMN "request_hash" TEXT
    CONSTRAINT "transfers_idempotency_key_has_hash" CHECK (("idempotency_key" IS NULL) = ("request_hash" IS NULL));
CREATE UNIQUE INDEX "transfers_idempotency_key_key" ON "transfers" ("from_account_id", "idempotency_key");
UPDATE "transfers" SET ("idempotency_key", "request_hash") =
    (SELECT k."key", k."request_hash" FROM "idempotency_keys" AS k WHERE k."transfer_id" = "transfers"."id")
WHERE "id" IN (SELECT "transfer_id" FROM "idempotency_keys");
DROP TABLE "idempotency_keys";
"#;

const SQLITE_DOWN: &str = r#"
CREATE TABLE "idempotency_keys" (
    "username"     TEXT    NOT NULL CONSTRAINT "idempotency_keys_username_fkey" REFERENCES "users" ("username") ON DELETE RESTRICT,
    "key"          TEXT    NOT NULL,
    "request_hash" TEXT    NOT NULL,
    "transfer_id"  INTEGER CONSTRAINT "idempotency_keys_transfer_id_fkey" REFERENCES "transfers" ("id") ON DELETE RESTRICT,
    "created_at"   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CONSTRAINT "idempotency_keys_pkey" PRIMARY KEY ("username", "key")
);
INSERT INTO "idempotency_keys" ("username", "key", "request_hash", "transfer_id", "created_at")
SELECT a."owner", t."idempotency_key", t."request_hash", t."id", t."created_at"
FROM "transfers" AS t JOIN "accounts" AS a ON a."id" = t."from_account_id"
WHERE t."idempotency_key" IS NOT NULL;
DROP INDEX "transfers_idempotency_key_key";
ALTER TABLE "transfers" DROP COLUMN "request_hash";
ALTER TABLE "transfers" DROP COLUMN "idempotency_key";
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
        crate::run_sql(manager, POSTGRES_DOWN, SQLITE_DOWN).await
    }
}
