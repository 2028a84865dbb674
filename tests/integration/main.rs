//! Integration tests: the bank's behaviour, end to end, on SQLite and PostgreSQL.

mod auth;
mod constraints;
mod http;
mod ledger;
mod migrations;
mod schema_file;
mod users;
