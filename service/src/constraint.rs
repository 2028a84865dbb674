//! Which named constraint a database error broke, on both backends.
//!
//! PostgreSQL reports the constraint's name. SQLite names CHECK constraints but reports a UNIQUE or PRIMARY KEY
//! violation by its columns ("UNIQUE constraint failed: emails.email"), so those are looked up in
//! [`SQLITE_UNIQUE`], which mirrors the migrations.

use sea_orm::{DbErr, RuntimeErr};

/// SQLite's column lists for the schema's unique constraints, and the names PostgreSQL gives the same ones.
const SQLITE_UNIQUE: &[(&str, &str)] = &[
    ("users.username", "users_pkey"),
    ("emails.email", "emails_pkey"),
    ("emails.username, emails.email", "emails_username_email_key"),
    ("accounts.owner, accounts.currency", "owner_currency_key"),
    ("sessions.id", "sessions_pkey"),
    ("transfers.from_account_id, transfers.idempotency_key", "transfers_idempotency_key_key"),
    ("withdrawal_keys.account_id, withdrawal_keys.idempotency_key", "withdrawal_keys_pkey"),
];

/// The name of the constraint `err` violated, if it is a constraint violation.
pub fn violated(err: &DbErr) -> Option<String> {
    let (DbErr::Exec(RuntimeErr::SqlxError(sqlx)) | DbErr::Query(RuntimeErr::SqlxError(sqlx))) = err else {
        return None;
    };
    let db_err = sqlx.as_database_error()?;
    if let Some(name) = db_err.constraint() {
        return Some(name.to_owned());
    }
    let message = db_err.message();
    if let Some(columns) = message.strip_prefix("UNIQUE constraint failed: ") {
        return SQLITE_UNIQUE.iter().find(|(cols, _)| *cols == columns).map(|(_, name)| (*name).to_owned());
    }
    message.strip_prefix("CHECK constraint failed: ").map(|name| name.trim().to_owned())
}
