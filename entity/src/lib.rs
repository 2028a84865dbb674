//! SeaORM entities: one module per table, mirroring the schema the `migration` crate builds.

pub mod account;
pub mod deleted_email;
pub mod email;
pub mod entry;
pub mod login_throttle;
pub mod session;
pub mod transfer;
pub mod user;
