//! `erd POSTGRES_URL`: migrates that database to the latest version and prints `docs/schema.md` (`make erd`).

use migration::{Migrator, MigratorTrait};
use sea_orm_migration::sea_orm::ConnectOptions;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Some(url) = std::env::args().nth(1).filter(|url| url.starts_with("postgres")) else {
        eprintln!("usage: erd postgres://…  (the diagram is drawn from PostgreSQL, the production database)");
        return std::process::ExitCode::FAILURE;
    };
    let result = async {
        let db = migration::connect(ConnectOptions::new(url)).await?;
        Migrator::up(&db, None).await?;
        migration::erd::markdown(&db).await
    }
    .await;
    match result {
        Ok(markdown) => {
            print!("{markdown}");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("erd: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
