//! The command line: serve (the default), `export-schema`, `set-role`.

use std::process::ExitCode;

use service::domain::Username;
use service::entity::user::Role;

use crate::{Application, Config, graphql, telemetry};

#[derive(Debug, clap::Parser)]
#[command(name = "simple-bank", version, about = "A small bank's GraphQL API server")]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Print the GraphQL schema (SDL); `schema.graphql` is exactly this output.
    ExportSchema,
    /// Change a user's role, for example to make the first banker.
    SetRole {
        username: String,
        #[arg(value_enum)]
        role: RoleArg,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum RoleArg {
    Depositor,
    Banker,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Depositor => Role::Depositor,
            RoleArg::Banker => Role::Banker,
        }
    }
}

pub async fn run(cli: Cli) -> ExitCode {
    telemetry::init();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
        Command::ExportSchema => {
            print!("{}", graphql::sdl());
            Ok(())
        }
        Command::SetRole { username, role } => set_role(&cli.config, &username, role.into()).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("simple-bank: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    tracing::info!(address = %app.local_addr()?, metrics = %app.metrics_addr()?, "listening; GraphiQL at /");
    app.run_until_stopped().await?;
    Ok(())
}

async fn set_role(config: &Config, username: &str, role: Role) -> anyhow::Result<()> {
    let username = Username::parse(username)?;
    if config.migrate {
        migration::migrate_up(config.direct_database_url()).await?;
    }
    let db = service::db::connect(config.direct_database_url(), config.database_max_connections).await?;
    let user = service::users::set_role(&db, &username, role).await.map_err(|err| match err {
        service::Error::NotFound { .. } => {
            anyhow::anyhow!("user {:?} does not exist", username.as_str())
        }
        other => other.into(),
    })?;
    println!("{} is now a {}", user.username, role_name(user.role));
    Ok(())
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Depositor => "depositor",
        Role::Banker => "banker",
    }
}
