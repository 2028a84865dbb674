//! The `simple-bank` binary: serves the API, or runs one of its maintenance commands.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    api::cli::run(api::cli::Cli::parse()).await
}
