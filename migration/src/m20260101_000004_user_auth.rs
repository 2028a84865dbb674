//! What authentication needs: roles, soft deletion, login sessions, and seed 003's emails unique across tables.
//!
//! - `emails` holds every active address, primary or secondary, of every user: its primary key makes an address
//!   unique across all of them, enforced by the database rather than by code racing itself.
//! - `users.email` (the primary) becomes a foreign key `(username, email) → emails (username, email)`, so the primary
//!   can only be one of the user's own addresses. It is deferred to commit because the user and their first email
//!   reference each other and are written in one transaction.
//! - Users are never deleted (`deleted_at`, so usernames are never reused); deleting one moves their addresses to
//!   `deleted_emails`, which frees them for others while keeping the history.
//! - `sessions` keeps refresh tokens as SHA-256 hashes: a database leak does not leak usable tokens.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::sqlite;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &str = r#"
CREATE TABLE "emails" (
    "email"      VARCHAR     CONSTRAINT "emails_pkey" PRIMARY KEY,
    "username"   VARCHAR     NOT NULL CONSTRAINT "emails_username_fkey" REFERENCES "users" ("username") ON DELETE RESTRICT,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Redundant with the primary key, but a foreign key needs it as its target (seed 003).
    CONSTRAINT "emails_username_email_key" UNIQUE ("username", "email")
);
INSERT INTO "emails" ("email", "username") SELECT "email", "username" FROM "users";
ALTER TABLE "users"
    ADD COLUMN "role" VARCHAR NOT NULL DEFAULT 'depositor' CONSTRAINT "users_role_known" CHECK ("role" IN ('depositor', 'banker')),
    ADD COLUMN "deleted_at" TIMESTAMPTZ,
    ALTER COLUMN "email" DROP NOT NULL,
    DROP CONSTRAINT "users_email_key",
    ADD CONSTRAINT "users_primary_email_fkey" FOREIGN KEY ("username", "email") REFERENCES "emails" ("username", "email")
        ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
CREATE TABLE "deleted_emails" (
    "id"         BIGSERIAL   CONSTRAINT "deleted_emails_pkey" PRIMARY KEY,
    "email"      VARCHAR     NOT NULL,
    "username"   VARCHAR     NOT NULL CONSTRAINT "deleted_emails_username_fkey" REFERENCES "users" ("username") ON DELETE RESTRICT,
    "deleted_at" TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX "deleted_emails_username_idx" ON "deleted_emails" ("username");
CREATE TABLE "sessions" (
    "id"                 VARCHAR     CONSTRAINT "sessions_pkey" PRIMARY KEY,
    "username"           VARCHAR     NOT NULL CONSTRAINT "sessions_username_fkey" REFERENCES "users" ("username") ON DELETE RESTRICT,
    "refresh_token_hash" VARCHAR     NOT NULL,
    "expires_at"         TIMESTAMPTZ NOT NULL,
    "revoked_at"         TIMESTAMPTZ,
    "created_at"         TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX "sessions_username_idx" ON "sessions" ("username");
"#;

const POSTGRES_DOWN: &str = r#"
DROP TABLE "sessions";
DROP TABLE "deleted_emails";
ALTER TABLE "users"
    DROP CONSTRAINT "users_primary_email_fkey",
    ADD CONSTRAINT "users_email_key" UNIQUE ("email"),
    ALTER COLUMN "email" SET NOT NULL,
    DROP COLUMN "deleted_at",
    DROP COLUMN "role";
DROP TABLE "emails";
"#;

const SQLITE_EMAILS: &str = r#"
CREATE TABLE "emails" (
    "email"      TEXT CONSTRAINT "emails_pkey" PRIMARY KEY NOT NULL,
    "username"   TEXT NOT NULL CONSTRAINT "emails_username_fkey" REFERENCES "users" ("username") ON DELETE RESTRICT,
    "created_at" TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CONSTRAINT "emails_username_email_key" UNIQUE ("username", "email")
);
INSERT INTO "emails" ("email", "username") SELECT "email", "username" FROM "users";
"#;

const SQLITE_USERS_UP: &str = r#"
CREATE TABLE "users_new" (
    "username"            TEXT CONSTRAINT "users_pkey" PRIMARY KEY NOT NULL,
    "hashed_password"     TEXT NOT NULL,
    "full_name"           TEXT NOT NULL,
    "email"               TEXT,
    "password_changed_at" TEXT NOT NULL DEFAULT '0001-01-01T00:00:00Z',
    "created_at"          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    "role"                TEXT NOT NULL DEFAULT 'depositor',
    "deleted_at"          TEXT,
    CONSTRAINT "users_role_known" CHECK ("role" IN ('depositor', 'banker')),
    CONSTRAINT "users_primary_email_fkey" FOREIGN KEY ("username", "email") REFERENCES "emails" ("username", "email")
        ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED
)"#;

const SQLITE_USERS_DOWN: &str = r#"
CREATE TABLE "users_new" (
    "username"            TEXT CONSTRAINT "users_pkey" PRIMARY KEY NOT NULL,
    "hashed_password"     TEXT NOT NULL,
    "full_name"           TEXT NOT NULL,
    "email"               TEXT NOT NULL CONSTRAINT "users_email_key" UNIQUE,
    "password_changed_at" TEXT NOT NULL DEFAULT '0001-01-01T00:00:00Z',
    "created_at"          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)"#;

const SQLITE_USER_COLUMNS: &str =
    r#""username", "hashed_password", "full_name", "email", "password_changed_at", "created_at""#;

const SQLITE_REST_UP: &str = r#"
CREATE TABLE "deleted_emails" (
    "id"         INTEGER CONSTRAINT "deleted_emails_pkey" PRIMARY KEY,
    "email"      TEXT NOT NULL,
    "username"   TEXT NOT NULL CONSTRAINT "deleted_emails_username_fkey" REFERENCES "users" ("username") ON DELETE RESTRICT,
    "deleted_at" TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX "deleted_emails_username_idx" ON "deleted_emails" ("username");
CREATE TABLE "sessions" (
    "id"                 TEXT CONSTRAINT "sessions_pkey" PRIMARY KEY NOT NULL,
    "username"           TEXT NOT NULL CONSTRAINT "sessions_username_fkey" REFERENCES "users" ("username") ON DELETE RESTRICT,
    "refresh_token_hash" TEXT NOT NULL,
    "expires_at"         TEXT NOT NULL,
    "revoked_at"         TEXT,
    "created_at"         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX "sessions_username_idx" ON "sessions" ("username");
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Sqlite => {
                db.execute_unprepared(SQLITE_EMAILS).await?;
                sqlite::rebuild_table(manager, "users", SQLITE_USERS_UP, SQLITE_USER_COLUMNS, &[]).await?;
                db.execute_unprepared(SQLITE_REST_UP).await?;
            }
            _ => {
                db.execute_unprepared(POSTGRES_UP).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Sqlite => {
                db.execute_unprepared(r#"DROP TABLE "sessions"; DROP TABLE "deleted_emails";"#).await?;
                sqlite::rebuild_table(manager, "users", SQLITE_USERS_DOWN, SQLITE_USER_COLUMNS, &[]).await?;
                db.execute_unprepared(r#"DROP TABLE "emails""#).await?;
            }
            _ => {
                db.execute_unprepared(POSTGRES_DOWN).await?;
            }
        }
        Ok(())
    }
}
