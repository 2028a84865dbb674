//! The integration-test harness.
//!
//! Every test gets its own fresh database, built by the real migrations: a SQLite file in a temporary directory,
//! or a new database on the PostgreSQL server named by `TEST_DATABASE_URL` (`make test` starts a throwaway one).
//! [`on_both_backends!`] runs each test once per backend.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use serde_json::{Value, json};
use simple_bank::{Application, cli::Cli};
use tempfile::TempDir;

mod bank;
pub mod generate;
mod pg_server;
mod pgbouncer;
mod raw_http;
mod socket;

pub use bank::{
    AliceAndBob, Bank, Holder, LEDGER_INVARIANTS, Outcomes, TOTAL_MONEY, TRANSFER, assert_ledger_consistent,
    ledger_check, transfer_input,
};
pub use pg_server::PgServer;
pub use pgbouncer::Pgbouncer;
pub use raw_http::RawAnswer;
pub use socket::{Received, Socket};

/// The key test servers sign tokens with, so tests can forge tokens the way an attacker with the key could.
pub const JWT_SECRET: &str = "test-secret-that-is-at-least-32-bytes-long";
/// A password every test user has.
pub const PASSWORD: &str = "correct horse battery";

/// The claims inside a JWT, unverified.
pub fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64");
    serde_json::from_slice(&json).expect("JSON claims")
}

/// The global id of the object of GraphQL type `kind` whose key is `key`, as the README tells clients to map a key
/// to its id (base64url, without padding, of `Type:key`): for rows a test knows by their key, or that do not exist.
pub fn global_id(kind: &str, key: impl std::fmt::Display) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{kind}:{key}"))
}

/// A JWT of these claims signed with `key` (HS256): with [`JWT_SECRET`], a token only the server could have made.
pub fn sign(claims: &Value, key: &str) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(key.as_bytes()))
        .expect("signing")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Declares, for each `async fn name(backend: Backend)` in scope, a test `sqlite::name` and a test `postgres::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Backend::Postgres).await })*
        }
    };
}

/// An empty database of its own; a SQLite file lives as long as this value.
pub struct TestDatabase {
    pub url: String,
    pub backend: Backend,
    _dir: Option<TempDir>,
}

impl TestDatabase {
    /// A new empty database, not yet migrated.
    pub async fn empty(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("bank.db").display());
                Self { url, backend, _dir: Some(dir) }
            }
            Backend::Postgres => {
                let admin_url = std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| {
                    panic!(
                        "the PostgreSQL tests need a server: run `make test`, which starts a throwaway one from \
                         the installed PostgreSQL binaries (Debian: apt-get install postgresql), or set \
                         TEST_DATABASE_URL=postgres://user@host:port/db to a server you run"
                    )
                });
                Self::on_postgres(&admin_url).await
            }
        }
    }

    /// A new empty database on the PostgreSQL server at `admin_url`.
    pub async fn on_postgres(admin_url: &str) -> Self {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(admin_url).await.expect("connect to the PostgreSQL server");
        admin.execute_unprepared(&format!(r#"CREATE DATABASE "{name}""#)).await.expect("create a test database");
        admin.close().await.ok();
        let (server, _) = admin_url.rsplit_once('/').expect("the server URL names a database");
        Self { url: format!("{server}/{name}"), backend: Backend::Postgres, _dir: None }
    }

    /// The database's name on its PostgreSQL server.
    pub fn name(&self) -> &str {
        self.url.rsplit_once('/').map_or("", |(_, name)| name)
    }

    /// A database that exists already (say, one the benchmark made), at `url`.
    pub fn existing(url: String, backend: Backend) -> Self {
        Self { url, backend, _dir: None }
    }

    /// A new database with every migration applied.
    pub async fn migrated(backend: Backend) -> Self {
        let db = Self::empty(backend).await;
        migration::migrate_up(&db.url).await.expect("migrations apply");
        db
    }

    /// A connection as the migrations use it (on SQLite: foreign keys off, see `migration::connect`).
    pub async fn migration_connection(&self) -> DatabaseConnection {
        migration::connect(ConnectOptions::new(self.url.as_str())).await.expect("connect")
    }

    /// A connection as the server uses it.
    pub async fn connection(&self) -> DatabaseConnection {
        service::db::connect(&self.url, service::db::DEFAULT_MAX_CONNECTIONS).await.expect("connect")
    }
}

/// Applies or reverts migrations on `db`.
pub async fn migrate(db: &TestDatabase, up: bool, steps: Option<u32>) -> Result<(), sea_orm::DbErr> {
    let conn = db.migration_connection().await;
    let result = if up { Migrator::up(&conn, steps).await } else { Migrator::down(&conn, steps).await };
    conn.close().await.ok();
    result
}

/// The schema as text, one object per line, sorted: equal text means equal schemas.
pub async fn schema_of(db: &DatabaseConnection) -> Vec<String> {
    let sql = match db.get_database_backend() {
        DbBackend::Sqlite => {
            "SELECT type || ' ' || name || ': ' || coalesce(sql, '') FROM sqlite_master \
             WHERE name NOT LIKE 'sqlite_%' ORDER BY 1"
        }
        _ => {
            // Column order as pg_dump shows it: PostgreSQL keeps the positions of dropped columns, so ranks.
            "SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' nullable=' || is_nullable \
                 || ' default=' || coalesce(column_default, '') || ' rank=' \
                 || rank() OVER (PARTITION BY table_name ORDER BY ordinal_position) \
             FROM information_schema.columns WHERE table_schema = 'public' \
             UNION ALL SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid) \
             FROM pg_constraint WHERE connamespace = 'public'::regnamespace \
             UNION ALL SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public' \
             UNION ALL SELECT 'comment ' || c.relname || '.' || a.attname || ' ' || d.description \
             FROM pg_description d JOIN pg_class c ON c.oid = d.objoid \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid \
             ORDER BY 1"
        }
    };
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("read the schema")
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("text"))
        .collect()
}

/// A running server on its own fresh database.
pub struct TestApp {
    pub address: String,
    /// Where the server serves `/metrics` (`METRICS_ADDR`), if the test knows.
    pub metrics_address: Option<String>,
    pub db: DatabaseConnection,
    pub database: Arc<TestDatabase>,
    pub client: reqwest::Client,
}

/// Starts a server on a fresh database and an unused loopback port.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_on(TestDatabase::empty(backend).await).await
}

/// Starts a server on `database`.
pub async fn spawn_app_on(database: TestDatabase) -> TestApp {
    spawn_app_with(Arc::new(database), &[]).await
}

/// Starts a server on `database` with extra command-line flags (say `--trusted-proxies 127.0.0.1`). Called again
/// with the same database, it starts another server sharing it, as a second process would. A `--database-url` among
/// the flags leads the server to the database another way (through a pooler, say); the test still reads it directly.
pub async fn spawn_app_with(database: Arc<TestDatabase>, flags: &[&str]) -> TestApp {
    // The server's logs (warnings and errors, unless RUST_LOG says otherwise) show in a failing test's output.
    if std::env::var_os("RUST_LOG").is_none() {
        simple_bank::telemetry::init_with("warn");
    } else {
        simple_bank::telemetry::init();
    }
    let url = if flags.contains(&"--database-url") { [].as_slice() } else { &["--database-url", &database.url][..] };
    let base =
        ["simple-bank", "--listen-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--jwt-secret", JWT_SECRET];
    let cli = Cli::try_parse_from(base.iter().chain(url).chain(flags)).expect("test configuration parses");
    let app = Application::build(cli.config).await.expect("the server builds");
    let address = format!("http://{}", app.local_addr().expect("a bound address"));
    let metrics_address = format!("http://{}", app.metrics_addr().expect("a bound metrics address"));
    tokio::spawn(app.run_until_stopped());
    TestApp::at(address, database).await.with_metrics_at(metrics_address)
}

/// A GraphQL response, with the accessors tests need.
#[derive(Debug)]
pub struct Response(pub Value);

impl Response {
    /// The value at a `/`-separated path under `data`, e.g. `"login/accessToken"`.
    pub fn data(&self, path: &str) -> &Value {
        let pointer = format!("/data/{path}");
        self.0.pointer(&pointer).unwrap_or_else(|| panic!("no {pointer} in {:#}", self.0))
    }

    pub fn str(&self, path: &str) -> String {
        self.data(path).as_str().unwrap_or_else(|| panic!("{path} is not a string in {:#}", self.0)).to_owned()
    }

    /// The first error's `extensions.code`, if any.
    pub fn error_code(&self) -> Option<&str> {
        self.0.pointer("/errors/0/extensions/code").and_then(Value::as_str)
    }

    pub fn error_field(&self) -> Option<&str> {
        self.0.pointer("/errors/0/extensions/field").and_then(Value::as_str)
    }

    pub fn assert_ok(&self) -> &Self {
        assert!(self.0.get("errors").is_none(), "unexpected errors: {:#}", self.0);
        self
    }
}

impl TestApp {
    /// A client of the server at `address` (say, one a test started as a process), on `database`.
    pub async fn at(address: String, database: Arc<TestDatabase>) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("an HTTP client");
        let db = database.connection().await;
        Self { address, metrics_address: None, db, database, client }
    }

    /// The same server, with `/metrics` served at `address` (`http://host:port`).
    pub fn with_metrics_at(self, address: String) -> Self {
        Self { metrics_address: Some(address), ..self }
    }

    /// The whole `/metrics` page.
    pub async fn metrics(&self) -> String {
        let address = self.metrics_address.as_deref().expect("this server's metrics address is known");
        let response = self.client.get(format!("{address}/metrics")).send().await.expect("/metrics");
        assert!(response.status().is_success(), "/metrics answers {}", response.status());
        response.text().await.expect("text")
    }

    /// A counter from `/metrics`, such as `db_statements_total`.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self.metrics().await;
        let line = text.lines().find(|line| line.starts_with(&format!("{name} "))).expect("the metric");
        line[name.len() + 1..].parse().expect("a number")
    }

    /// Whether `/healthz` answers.
    pub async fn is_alive(&self) -> bool {
        self.client.get(format!("{}/healthz", self.address)).send().await.is_ok_and(|r| r.status().is_success())
    }

    /// Sends one GraphQL operation, with a bearer token if given.
    pub async fn graphql(&self, query: &str, variables: Value, token: Option<&str>) -> Response {
        let mut request = self
            .client
            .post(format!("{}/graphql", self.address))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("the server answers");
        Response(response.json().await.expect("a JSON body"))
    }

    /// Signs up `username` with [`PASSWORD`] and the email `<username>@example.com`.
    pub async fn sign_up(&self, username: &str) {
        self.graphql(
            "mutation($input: CreateUserInput!) { createUser(input: $input) { username } }",
            json!({ "input": {
                "username": username, "password": PASSWORD,
                "fullName": format!("{username} Example"), "email": format!("{username}@example.com"),
            }}),
            None,
        )
        .await
        .assert_ok();
    }

    /// Logs in with [`PASSWORD`]: the access and refresh tokens.
    pub async fn login(&self, username: &str) -> (String, String) {
        let response = self
            .graphql(
                "mutation($input: LoginInput!) { login(input: $input) { accessToken refreshToken } }",
                json!({ "input": { "username": username, "password": PASSWORD } }),
                None,
            )
            .await;
        response.assert_ok();
        (response.str("login/accessToken"), response.str("login/refreshToken"))
    }

    /// Signs up and logs in: the access token.
    pub async fn user(&self, username: &str) -> String {
        self.sign_up(username).await;
        self.login(username).await.0
    }

    /// Signs up a banker (made one the way operators do, `set-role`) and logs in: the access token.
    pub async fn banker(&self, username: &str) -> String {
        self.sign_up(username).await;
        let name = service::domain::Username::parse(username).expect("a valid username");
        service::users::set_role(&self.db, &name, service::entity::user::Role::Banker).await.expect("set-role");
        self.login(username).await.0
    }
}

impl TestApp {
    /// Opens an account for the holder of `token`: its id.
    pub async fn open_account(&self, token: &str, currency: &str) -> String {
        let response = self
            .graphql(
                "mutation($c: Currency!) { createAccount(currency: $c) { id } }",
                json!({ "c": currency }),
                Some(token),
            )
            .await;
        response.assert_ok();
        response.str("createAccount/id")
    }

    /// An account's balance, as the holder of `token` reads it.
    pub async fn balance(&self, token: &str, account: &str) -> String {
        let query = "query($id: ID!) { account(id: $id) { balance } }";
        self.graphql(query, json!({ "id": account }), Some(token)).await.str("account/balance")
    }

    /// One number the database answers `sql` with (a count, say), read directly.
    pub async fn count(&self, sql: &str) -> i64 {
        let row = self.db.query_one_raw(Statement::from_string(self.db.get_database_backend(), sql)).await;
        row.expect(sql).expect("a row").try_get_by_index::<i64>(0).expect("an integer")
    }

    /// Deposits `amount` as the banker holding `banker`.
    pub async fn deposit(&self, banker: &str, account_id: &str, amount: i64) {
        self.graphql(
            "mutation($input: DepositInput!) { deposit(input: $input) { id } }",
            json!({ "input": { "accountId": account_id, "amount": amount } }),
            Some(banker),
        )
        .await
        .assert_ok();
    }
}
