//! Accounts close when their owner is deleted, and a request hash names its currency by the stored code.
//!
//! - `accounts.closed_at`: set when the owner is deleted. Money no longer moves into or out of a closed account, but
//!   its history stays readable: accounts, entries and transfers are never deleted.
//! - `accounts_closed_empty CHECK (closed_at IS NULL OR balance = 0)`: only an empty account can be closed, and a
//!   closed one stays empty. Closing a user's accounts is then also the test that they hold no money, decided by the
//!   database under the accounts' row locks, so a deposit racing the deletion either lands first (and the deletion
//!   is refused) or finds the account closed; no code path can freeze money in a closed account.
//! - Accounts of users deleted before this migration are closed as of their owner's deletion when they are empty.
//!   One that still holds money stays open: closing it would break the rule above, and the money must first be
//!   settled by an operator.
//! - `transfers.request_hash` is recomputed with the currency's ISO code (`USD`) in place of the Rust name (`Usd`)
//!   it was written with (the hash once formatted the currency with `Debug`, a spelling nothing promises to keep).
//!   The hash only ever digests its own transfer's `from_account_id|to_account_id|amount|currency`, so it can be
//!   recomputed from the row: keys used before this migration are still recognized when their request is retried.
//!
//! `down` drops the column (a deleted owner still marks the accounts closed in spirit, as before this migration)
//! and writes the hashes back in the old spelling.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, Statement};
use sha2::{Digest, Sha256};

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &str = r#"
ALTER TABLE "accounts"
    ADD COLUMN "closed_at" TIMESTAMPTZ,
    ADD CONSTRAINT "accounts_closed_empty" CHECK ("closed_at" IS NULL OR "balance" = 0);
"#;

const POSTGRES_DOWN: &str = r#"ALTER TABLE "accounts" DROP COLUMN "closed_at";"#;

// A column's own CHECK may name other columns in SQLite, and `DROP COLUMN` drops it with the column.
const SQLITE_UP: &str = r#"
ALTER TABLE "accounts" ADD COLUMN "closed_at" TEXT
    CONSTRAINT "accounts_closed_empty" CHECK ("closed_at" IS NULL OR "balance" = 0);
"#;

const SQLITE_DOWN: &str = r#"ALTER TABLE "accounts" DROP COLUMN "closed_at";"#;

// The same statement on both backends: the text or timestamp of the deletion is copied as it is.
const CLOSE_DELETED_OWNERS_ACCOUNTS: &str = r#"
UPDATE "accounts"
SET "closed_at" = (SELECT u."deleted_at" FROM "users" AS u WHERE u."username" = "accounts"."owner")
WHERE "balance" = 0
  AND "owner" IN (SELECT "username" FROM "users" WHERE "deleted_at" IS NOT NULL);
"#;

/// How a currency was spelt in request hashes before this migration (its `Debug` output) and after it (its code).
const SPELLINGS: [(&str, &str); 3] = [("Usd", "USD"), ("Eur", "EUR"), ("Cad", "CAD")];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_sql(manager, POSTGRES_UP, SQLITE_UP).await?;
        manager.get_connection().execute_unprepared(CLOSE_DELETED_OWNERS_ACCOUNTS).await?;
        rehash(manager, |code| Some(code.to_owned())).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        rehash(manager, |code| SPELLINGS.iter().find(|(_, c)| *c == code).map(|(old, _)| (*old).to_owned())).await?;
        crate::run_sql(manager, POSTGRES_DOWN, SQLITE_DOWN).await
    }
}

/// Recomputes every keyed transfer's request hash, spelling its currency's stored code with `spell`.
async fn rehash(manager: &SchemaManager<'_>, spell: impl Fn(&str) -> Option<String>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let keyed = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            r#"SELECT t."id", t."from_account_id", t."to_account_id", t."amount", a."currency"
            FROM "transfers" AS t JOIN "accounts" AS a ON a."id" = t."from_account_id"
            WHERE t."request_hash" IS NOT NULL"#,
        ))
        .await?;
    for row in keyed {
        let id: i64 = row.try_get_by_index(0)?;
        let (from, to, amount): (i64, i64, i64) =
            (row.try_get_by_index(1)?, row.try_get_by_index(2)?, row.try_get_by_index(3)?);
        let code: String = row.try_get_by_index(4)?;
        let currency =
            spell(&code).ok_or_else(|| DbErr::Migration(format!("transfer {id}: unknown currency {code}")))?;
        let hash = URL_SAFE_NO_PAD.encode(Sha256::digest(format!("{from}|{to}|{amount}|{currency}").as_bytes()));
        let update = Query::update()
            .table(Alias::new("transfers"))
            .value(Alias::new("request_hash"), hash)
            .and_where(Expr::col(Alias::new("id")).eq(id))
            .to_owned();
        manager.exec_stmt(update).await?;
    }
    Ok(())
}
