//! The `simple-bank` binary: serves the API, or runs one of its maintenance commands.

use clap::Parser;

/// A request allocates and frees hundreds of small values across threads; glibc's malloc spent a quarter of the
/// server's CPU on that under load, mimalloc about a tenth.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    simple_bank::cli::run(simple_bank::cli::Cli::parse()).await
}
