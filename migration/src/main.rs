//! `cargo run -p migration -- up | down | up -n 1 | down -n 1 | status | fresh`, on `DATABASE_URL`.

use sea_orm_migration::cli;

#[tokio::main]
async fn main() {
    cli::run_cli_with_connection(migration::Migrator, migration::connect).await;
}
