//! The bank's domain: users, sessions, accounts and transfers, as plain functions over a database connection.
//!
//! Nothing here knows about GraphQL or HTTP. Inputs arrive as parsed domain values (`domain`), results leave as
//! entity models, and every failure is an [`Error`] with a stable code.

pub mod auth;
mod code;
pub mod constraint;
pub mod db;
pub mod domain;
mod error;
pub mod feed;
pub mod ledger;
pub mod password;
pub mod replicas;
pub mod sessions;
pub mod slice;
pub mod throttle;
pub mod users;

pub use code::Code;
pub use entity;
pub use error::{Error, Field, ResultExt};
pub use slice::{Page, Slice, Take};
