//! The server's configuration: flags, each also read from the environment.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use anyhow::bail;
use ipnet::IpNet;
use rand::RngCore;
use service::auth::TokenConfig;
use service::throttle::Limits;

/// How the server runs. Every flag can also be set by the environment variable named in `--help`.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// Database URL. Default: the SQLite file `simple-bank.db` in the working directory, created on first start.
    /// PostgreSQL: `postgres://user:password@host:5432/dbname`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://simple-bank.db?mode=rwc")]
    pub database_url: String,

    /// PostgreSQL connections for single statements, as many again for transactions, and as many for query
    /// snapshots (SQLite writes through one).
    /// Default: 8.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = service::db::DEFAULT_MAX_CONNECTIONS)]
    pub database_max_connections: u32,

    /// SQLite's read-only connections, which queries and the session checks read through beside the one writer.
    /// Default: 4.
    #[arg(long, env = "SQLITE_READ_CONNECTIONS", default_value_t = service::db::DEFAULT_SQLITE_READ_CONNECTIONS)]
    pub sqlite_read_connections: u32,

    /// PostgreSQL hot standbys of DATABASE_URL's primary (streaming replicas), comma-separated URLs. Query operations
    /// then read on a standby, each in one snapshot, while mutations and sockets stay on the primary; a caller's
    /// queries still see the caller's own writes. Default: none, and everything reads on the primary.
    #[arg(long, env = "DATABASE_REPLICA_URLS", value_delimiter = ',')]
    pub database_replica_urls: Vec<String>,

    /// The most a standby may lag behind the primary, in milliseconds, and still serve queries; one further behind,
    /// or down, is skipped until it catches up. Default: 1000.
    #[arg(long, env = "REPLICA_MAX_LAG_MS", default_value_t = 1000)]
    pub replica_max_lag_ms: u64,

    /// A direct connection to the primary, not through a pooler: the change feed's `LISTEN` holds it, and
    /// migrations and `set-role` run on it. Default: DATABASE_URL.
    #[arg(long, env = "DATABASE_LISTEN_URL")]
    pub database_listen_url: Option<String>,

    /// DATABASE_URL and DATABASE_REPLICA_URLS lead through a transaction-pooling pooler (pgbouncer with
    /// `pool_mode = transaction`, which must also run `server_reset_query = DEALLOCATE ALL` with
    /// `server_reset_query_always = 1`): no prepared statement outlives its transaction, no setting is left on a
    /// connection. Needs DATABASE_LISTEN_URL. Default: false.
    #[arg(long, env = "DATABASE_TRANSACTION_POOLING", default_value_t = false, action = clap::ArgAction::Set)]
    pub database_transaction_pooling: bool,

    /// Address to listen on. Default: 127.0.0.1:8000.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8000")]
    pub listen_addr: SocketAddr,

    /// Address of the Prometheus scrape endpoint `/metrics`, a listener of its own so that it need not be exposed
    /// where the API is. Default: 127.0.0.1:9100.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9100")]
    pub metrics_addr: SocketAddr,

    /// Key that signs access tokens (HS256), at least 32 bytes. Required outside development; in development a
    /// random one is generated at start (tokens then die with the process).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// `development` or `production`. Default: development.
    #[arg(long = "env", env = "APP_ENV", value_enum, default_value_t = Environment::Development)]
    pub environment: Environment,

    /// Apply pending migrations at start. Default: true; `--migrate=false` to manage them separately.
    #[arg(long, env = "MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate: bool,

    /// Access-token lifetime in seconds. Default: 900 (15 minutes).
    #[arg(long, env = "ACCESS_TOKEN_TTL_SECS", default_value_t = 900)]
    pub access_token_ttl_secs: u32,

    /// Refresh-token (session) lifetime in seconds. Default: 2592000 (30 days).
    #[arg(long, env = "REFRESH_TOKEN_TTL_SECS", default_value_t = 2_592_000)]
    pub refresh_token_ttl_secs: u32,

    /// Longest a request may take, in seconds, before it is answered 408. Default: 30.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// Largest request body accepted, in bytes. Default: 1048576 (1 MiB).
    #[arg(long, env = "BODY_LIMIT_BYTES", default_value_t = 1_048_576)]
    pub body_limit_bytes: usize,

    /// Deepest selection nesting an operation may have. Default: 16 (GraphiQL's introspection needs 13).
    #[arg(long, env = "MAX_QUERY_DEPTH", default_value_t = 16)]
    pub max_query_depth: usize,

    /// Highest worst-case node count an operation may have: every selected field counts one, and a list multiplies
    /// its selection by its page size (`first`, default 20) or its known bound. Default: 4000 (GraphiQL's
    /// introspection costs about 2400, a page of 20 users with 20 entries of each account about 2600).
    #[arg(long, env = "MAX_QUERY_COST", default_value_t = 4000)]
    pub max_query_cost: u64,

    /// Answer introspection queries (GraphiQL and code generators need them). Default: true.
    #[arg(long, env = "INTROSPECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub introspection: bool,

    /// Browser origins allowed to call the API (CORS), comma-separated, e.g. `https://app.example.com`.
    /// Default: none, so only pages served by this server (GraphiQL) can call it from a browser.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,

    /// Directory of GraphiQL's browser builds (`cd web/graphiql && npm ci && npm run build`). When they are absent,
    /// GraphiQL loads them from a CDN. Default: web/graphiql/dist.
    #[arg(long, env = "GRAPHIQL_ASSETS_DIR", default_value = "web/graphiql/dist")]
    pub graphiql_assets_dir: String,

    /// Failed logins allowed per client address per minute, whatever the usernames. Default: 20.
    #[arg(long, env = "LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE", default_value_t = 20)]
    pub login_failures_per_address_per_minute: u32,

    /// Failed logins allowed per (username, client address) per minute; a success starts the count over.
    /// Default: 5.
    #[arg(long, env = "LOGIN_FAILURES_PER_USERNAME_AND_ADDRESS_PER_MINUTE", default_value_t = 5)]
    pub login_failures_per_username_and_address_per_minute: u32,

    /// Failed logins allowed per username per minute from all addresses together: the ceiling that stops guessing
    /// spread over many addresses (and, once reached, locks the username until the minute ends). Default: 100.
    #[arg(long, env = "LOGIN_FAILURES_PER_USERNAME_PER_MINUTE", default_value_t = 100)]
    pub login_failures_per_username_per_minute: u32,

    /// Sign-ups allowed per client address per hour (each hashes a password). Default: 100.
    #[arg(long, env = "SIGNUPS_PER_ADDRESS_PER_HOUR", default_value_t = 100)]
    pub signups_per_address_per_hour: u32,

    /// Reverse proxies whose `X-Forwarded-For` is believed, comma-separated IP addresses or CIDR ranges, e.g.
    /// `10.0.0.0/8,127.0.0.1`. A request from one of them is counted against the right-most address in
    /// `X-Forwarded-For` that is not itself a trusted proxy. Default: none, so the client is the TCP peer.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_trusted_proxy)]
    pub trusted_proxies: Vec<IpNet>,
    /// A manifest of trusted documents (JSON, hash → document, as `@graphql-codegen/client-preset`'s persisted
    /// documents emit it): only those run, sent by `documentId` or `extensions.persistedQuery.sha256Hash`. Default:
    /// none, and automatic persisted queries work.
    #[arg(long, env = "TRUSTED_DOCUMENTS")]
    pub trusted_documents: Option<std::path::PathBuf>,

    /// Subscriptions one socket may run at once; one more is refused with TOO_MANY_SUBSCRIPTIONS. Default: 20.
    #[arg(long, env = "MAX_SUBSCRIPTIONS_PER_SOCKET", default_value_t = 20)]
    pub max_subscriptions_per_socket: usize,

    /// Sockets one user may hold open at once; one more is closed with code 4429. Default: 10.
    #[arg(long, env = "MAX_SOCKETS_PER_USER", default_value_t = 10)]
    pub max_sockets_per_user: usize,

    /// Seconds a new socket has to send `connection_init` before it is closed with code 4408. Default: 5.
    #[arg(long, env = "WS_INIT_TIMEOUT_SECS", default_value_t = 5)]
    pub ws_init_timeout_secs: u64,

    /// Seconds between the server's pings on an idle socket; a client silent for three of them is closed. Keeps
    /// sockets alive through proxies that drop idle connections. Default: 15.
    #[arg(long, env = "WS_PING_INTERVAL_SECS", default_value_t = 15)]
    pub ws_ping_interval_secs: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Environment {
    Development,
    Production,
}

impl Config {
    /// Minimum size of `JWT_SECRET`: HS256's key should be at least as long as its 256-bit output.
    pub const MIN_SECRET_BYTES: usize = 32;

    pub fn throttle_limits(&self) -> Limits {
        Limits {
            login_per_username_and_address: self.login_failures_per_username_and_address_per_minute,
            login_per_address: self.login_failures_per_address_per_minute,
            login_per_username: self.login_failures_per_username_per_minute,
            login_window: chrono::Duration::minutes(1),
            signups_per_address: self.signups_per_address_per_hour,
            signup_window: chrono::Duration::hours(1),
        }
    }

    /// How the server connects to its database.
    pub fn database_settings(&self) -> anyhow::Result<service::db::Settings> {
        if self.database_transaction_pooling && self.database_listen_url.is_none() {
            bail!(
                "DATABASE_TRANSACTION_POOLING needs DATABASE_LISTEN_URL: LISTEN cannot work through a transaction pooler"
            );
        }
        Ok(service::db::Settings {
            max_connections: self.database_max_connections,
            sqlite_read_connections: self.sqlite_read_connections,
            listen_url: self.database_listen_url.clone(),
            replica_urls: self
                .database_replica_urls
                .iter()
                .map(|url| url.trim().to_owned())
                .filter(|url| !url.is_empty())
                .collect(),
            max_replica_lag: std::time::Duration::from_millis(self.replica_max_lag_ms),
            transaction_pooling: self.database_transaction_pooling,
            ..service::db::Settings::new(&self.database_url)
        })
    }

    /// Where migrations and `set-role` run: a direct connection to the primary.
    pub fn direct_database_url(&self) -> &str {
        self.database_listen_url.as_deref().unwrap_or(&self.database_url)
    }

    pub fn token_config(&self) -> anyhow::Result<TokenConfig> {
        let secret = match (&self.jwt_secret, self.environment) {
            (Some(secret), _) if secret.expose().len() >= Self::MIN_SECRET_BYTES => secret.expose().as_bytes().to_vec(),
            (Some(_), _) => bail!("JWT_SECRET must be at least {} bytes", Self::MIN_SECRET_BYTES),
            (None, Environment::Production) => bail!("JWT_SECRET is required outside development"),
            (None, Environment::Development) => {
                tracing::warn!("JWT_SECRET is not set: using a random key; tokens stop working on restart");
                let mut key = vec![0u8; 32];
                rand::rng().fill_bytes(&mut key);
                key
            }
        };
        Ok(TokenConfig::new(
            &secret,
            chrono::Duration::seconds(self.access_token_ttl_secs.into()),
            chrono::Duration::seconds(self.refresh_token_ttl_secs.into()),
        ))
    }
}

/// A trusted proxy: a CIDR range, or one address (a range of one).
fn parse_trusted_proxy(value: &str) -> Result<IpNet, String> {
    let value = value.trim();
    value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{value:?} is neither an IP address nor a CIDR range"))
}

/// A secret string that never shows itself in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}
