//! The bank's GraphQL API over HTTP: configuration, the schema, the routes, and the server's lifecycle.

pub mod cli;
pub mod config;
pub mod graphql;
mod http;
pub mod metrics;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;

use service::auth::TokenConfig;
use service::db::Database;
use service::feed::Feed;
use tokio::net::TcpListener;

pub use crate::config::Config;
pub use crate::http::router;
use crate::metrics::Metrics;

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    /// Sockets verify the token of their `connection_init` with it.
    pub tokens: Arc<TokenConfig>,
    pub schema: graphql::BankSchema,
    pub metrics: Arc<Metrics>,
    /// Where GraphiQL's browser builds are, if they are there.
    pub graphiql_assets: Option<Arc<str>>,
    pub documents: Arc<http::Documents>,
    /// Documents clients name by hash: trusted ones only, or automatic persisted queries.
    pub persisted: Arc<http::Persisted>,
    /// Operations whose worst-case node count is higher are refused unexecuted.
    pub max_query_cost: u64,
    /// The process's change feed, which subscriptions follow.
    pub feed: Feed,
    /// Subscription sockets: their settings and who holds how many.
    pub ws: Arc<SocketSettings>,
    /// On in every server; see [`Hardening`].
    pub hardening: Hardening,
}

/// Whether a router does its per-request hardening (README, Security and limits): the request limits and request
/// ids, the client address behind trusted proxies, persisted documents, demand control, the input rules and the
/// field guards. Always on in a server: no setting turns it off, and [`Application`] builds its state with it. Only
/// the benchmark builds a state without it ([`AppState::new`]), beside one with it, to measure in-process what the
/// hardening costs a request (benches/README.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hardening {
    On,
    Off,
}

/// How subscription sockets behave (see `http::ws`).
pub struct SocketSettings {
    pub init_timeout_secs: u64,
    pub ping_interval_secs: u64,
    pub max_sockets_per_user: usize,
    pub max_subscriptions_per_socket: usize,
    /// The largest message or frame a socket accepts: `BODY_LIMIT_BYTES`, as for a request over HTTP.
    pub max_message_bytes: usize,
    sockets: Arc<http::ws::Sockets>,
}

impl AppState {
    /// Connects to the configured database and builds what the handlers share.
    pub async fn new(config: &Config, hardening: Hardening) -> anyhow::Result<Self> {
        let tokens = Arc::new(config.token_config()?);
        let metrics = Arc::new(Metrics::default());
        let counter = metrics.clone();
        let db = Database::connect(&config.database_settings()?, move |_| counter.count_statement()).await?;
        let feed = Feed::start(db.listen(), db.positions().clone());
        let schema = graphql::build_schema(db.clone(), feed.clone(), tokens.clone(), metrics.clone(), config);
        let assets = &config.graphiql_assets_dir;
        let graphiql_assets =
            http::graphiql::assets_present(std::path::Path::new(assets)).then(|| Arc::from(assets.as_str()));
        if graphiql_assets.is_none() {
            tracing::info!(dir = %assets, "GraphiQL's builds are absent (cd web/graphiql && npm ci && npm run build): GraphiQL loads them from a CDN");
        }
        let documents = Arc::new(http::Documents::new(Arc::new(graphql::cost_model().await?), config.max_query_cost));
        let max_query_cost = config.max_query_cost;
        let ws = Arc::new(SocketSettings {
            init_timeout_secs: config.ws_init_timeout_secs,
            ping_interval_secs: config.ws_ping_interval_secs,
            max_sockets_per_user: config.max_sockets_per_user,
            max_subscriptions_per_socket: config.max_subscriptions_per_socket,
            max_message_bytes: config.body_limit_bytes,
            sockets: Arc::default(),
        });
        let persisted = Arc::new(http::Persisted::load(config.trusted_documents.as_deref())?);
        Ok(Self {
            db,
            tokens,
            schema,
            metrics,
            graphiql_assets,
            documents,
            persisted,
            max_query_cost,
            feed,
            ws,
            hardening,
        })
    }
}

/// A server bound to its addresses, the API's and the metrics', ready to serve.
pub struct Application {
    listener: TcpListener,
    metrics_listener: TcpListener,
    state: AppState,
    config: Config,
}

impl Application {
    /// Migrates the database unless told not to, connects, and binds the listeners (port 0 picks a free one).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        if config.migrate {
            migration::migrate_up(config.direct_database_url()).await?;
        }
        let state = AppState::new(&config, Hardening::On).await?;
        let listener = TcpListener::bind(config.listen_addr).await?;
        let metrics_listener = TcpListener::bind(config.metrics_addr).await?;
        Ok(Self { listener, metrics_listener, state, config })
    }

    /// The API's address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address of `/metrics`.
    pub fn metrics_addr(&self) -> std::io::Result<SocketAddr> {
        self.metrics_listener.local_addr()
    }

    /// Serves until Ctrl-C or SIGTERM, then finishes the API requests in flight; a scrape in flight is dropped.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let metrics = axum::serve(self.metrics_listener, http::metrics_router(self.state.clone()));
        let app = router(self.state, &self.config);
        let api = axum::serve(self.listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown_signal());
        tokio::select! {
            served = api => served,
            served = metrics => served,
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
