//! SeaORM entities: one module per table, mirroring the schema the `migration` crate builds.
//!
//! Relations: an entity declares a relation only where a query joins through it (today `session` → `user`, for
//! `auth::check_session`'s `find_also_related`). The foreign keys themselves live in the migrations, which the
//! database enforces whether or not a relation is declared here; a declared but unused relation would be a second,
//! unchecked copy of them.

pub mod account;
pub mod deleted_email;
pub mod email;
pub mod entry;
pub mod login_throttle;
pub mod session;
pub mod transfer;
pub mod user;
pub mod withdrawal_key;
