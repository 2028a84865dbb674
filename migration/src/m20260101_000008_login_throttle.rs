//! What issue 14's credential rules need from the schema.
//!
//! - `login_throttle`: the login and sign-up counters, one row per key (a username, a client address, or both)
//!   with the end of its current window. Kept in the database so that every server process on one database counts
//!   the same guesses; each attempt is one atomic upsert-increment, so the count it returns is the admission
//!   decision and concurrent attempts cannot all read "under the limit". Expired rows are swept by the server
//!   (`login_throttle_window_ends_at_idx`), which keeps the table bounded by the keys of the last window.
//! - `sessions.previous_refresh_token_hash`: the hash of the refresh secret a session last rotated away from, so a
//!   replay of that once-valid token (it was copied) can be told from a wrong guess: the first ends the session,
//!   the second ends nothing.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &str = r#"
CREATE TABLE "login_throttle" (
    "key"            VARCHAR     CONSTRAINT "login_throttle_pkey" PRIMARY KEY,
    "count"          INTEGER     NOT NULL CONSTRAINT "login_throttle_count_nonnegative" CHECK ("count" >= 0),
    "window_ends_at" TIMESTAMPTZ NOT NULL
);
CREATE INDEX "login_throttle_window_ends_at_idx" ON "login_throttle" ("window_ends_at");
ALTER TABLE "sessions" ADD COLUMN "previous_refresh_token_hash" VARCHAR;
"#;

const POSTGRES_DOWN: &str = r#"
ALTER TABLE "sessions" DROP COLUMN "previous_refresh_token_hash";
DROP TABLE "login_throttle";
"#;

const SQLITE_UP: &str = r#"
CREATE TABLE "login_throttle" (
    "key"            TEXT    CONSTRAINT "login_throttle_pkey" PRIMARY KEY NOT NULL,
    "count"          INTEGER NOT NULL CONSTRAINT "login_throttle_count_nonnegative" CHECK ("count" >= 0),
    "window_ends_at" TEXT    NOT NULL
);
CREATE INDEX "login_throttle_window_ends_at_idx" ON "login_throttle" ("window_ends_at");
ALTER TABLE "sessions" ADD COLUMN "previous_refresh_token_hash" TEXT;
"#;

const SQLITE_DOWN: &str = r#"
ALTER TABLE "sessions" DROP COLUMN "previous_refresh_token_hash";
DROP TABLE "login_throttle";
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
