//! Integration tests: the bank's behaviour, end to end, on SQLite and PostgreSQL.

mod auth;
mod connections;
mod constraints;
mod credentials;
mod demand_control;
mod edge_inputs;
mod field_authorization;
mod generative;
mod http;
mod ledger;
mod ledger_hardening;
mod migrations;
mod node;
mod payments;
mod persisted;
mod replicas;
mod schema_file;
mod sessions;
mod statements;
mod subscriptions;
mod users;
