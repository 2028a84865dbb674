//! `make bench`: the server under load, beside the database's own limit for the same work, in one run.
//!
//! Starts the release server on a PostgreSQL database (TEST_DATABASE_URL, a throwaway stock server started by
//! `make bench`), creates 200 users with funded USD accounts through the API, then runs closed-loop loads over
//! loopback with 16 concurrent connections:
//! 1. `createTransfer` between random accounts, each authenticated as its sender and with its own idempotency key;
//! 2. `users(first: 20) { … accounts { … } }` as a banker;
//! 3. `me { accounts { balance } }` while 16 other clients hammer `login`.
//!
//! Beside them, the raw limit: the same transfer sent straight to PostgreSQL as one function call and as a naive
//! 7-statement transaction, and the two read queries load 2 needs. Loads that are compared run in turns, five
//! rounds of a 1 s warm-up and 3 s measured each, so that a shared machine's drift weighs on both sides alike; a
//! ratio is the median of the rounds' own ratios.
//! Then loads 1–2 on SQLite. It prints a table (with the CPU time each request cost the server, the database and
//! this client) and the ratios against the targets, writes `target/bench/results.json` and
//! `target/bench/latency.svg`, and ends by checking the ledger's invariants in both databases.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;

use futures::FutureExt;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::Rng;
use sea_orm::sqlx::postgres::{PgConnection, PgPoolOptions};
use sea_orm::sqlx::{self, Connection, Executor};
use serde_json::{Value, json};
use tests::{Backend, Bank, PASSWORD, TRANSFER, TestApp, TestDatabase, ledger_check, transfer_input};

const CONCURRENCY: usize = 16;
const USERS: usize = 200;
/// Loads compared with each other run in turns, this many times each, so that a machine that slows down or
/// speeds up during the run (shared machines do) weighs on both alike. A ratio is the median of the rounds' ratios:
/// five rounds outvote a turn that a stall of the shared disk or CPU happened to hit.
const ROUNDS: usize = 5;
/// Each turn: a warm-up, then the measured part.
const WARMUP: Duration = Duration::from_secs(1);
const TURN: Duration = Duration::from_secs(3);
const SECRET: &str = "benchmark-secret-that-is-32-bytes-long";
const USERS_QUERY: &str =
    "{ users(first: 20) { edges { node { username fullName email accounts { id balance currency } } } } }";
const ME: &str = "{ me { accounts { balance } } }";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What one load measured, over all its turns.
#[derive(Clone, Debug, Default)]
struct Measured {
    name: String,
    /// Requests per second: the median turn's.
    throughput: f64,
    /// Requests per second in each turn, round by round.
    turn_throughputs: Vec<f64>,
    p50_ms: f64,
    p99_ms: f64,
    errors: BTreeMap<String, u64>,
    /// Requests sent, warm-ups included.
    requests: u64,
    rss_mb: Option<f64>,
    /// CPU time per request in the measured parts, in µs: the server (if any), PostgreSQL, this client.
    cpu_us: Option<Cpu>,
    statements_per_request: Option<f64>,
}

/// One turn of one load.
#[derive(Default)]
struct Turn {
    latencies: Vec<Duration>,
    errors: BTreeMap<String, u64>,
    peak_rss: Option<f64>,
    cpu: Cpu,
    /// Requests sent, warm-up included, and the SQL statements the server counted meanwhile.
    requests_total: u64,
    statements: Option<u64>,
}

impl Measured {
    fn from_turns(name: &str, turns: &[Turn]) -> Self {
        let mut latencies: Vec<Duration> = turns.iter().flat_map(|t| t.latencies.iter().copied()).collect();
        latencies.sort();
        let percentile = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        let turn_throughputs: Vec<f64> = turns.iter().map(|t| t.latencies.len() as f64 / TURN.as_secs_f64()).collect();
        let mut errors = BTreeMap::new();
        for (code, n) in turns.iter().flat_map(|t| &t.errors) {
            *errors.entry(code.clone()).or_default() += n;
        }
        let cpu = turns.iter().fold(Cpu::default(), |sum, t| sum.plus(t.cpu));
        let sent: u64 = turns.iter().map(|t| t.requests_total).sum();
        let statements: Option<u64> = turns.iter().map(|t| t.statements).sum();
        let measured = Self {
            name: name.to_owned(),
            throughput: median(turn_throughputs.clone()).unwrap_or(0.0),
            turn_throughputs,
            p50_ms: percentile(0.50),
            p99_ms: percentile(0.99),
            errors,
            requests: sent,
            rss_mb: turns.iter().filter_map(|t| t.peak_rss).reduce(f64::max),
            cpu_us: (!latencies.is_empty()).then(|| cpu.per(latencies.len() as f64)),
            statements_per_request: statements.map(|n| n as f64 / sent.max(1) as f64),
        };
        eprintln!("  measured {name}: {:.0}/s", measured.throughput);
        measured
    }
}

/// Makes one request of a load.
type Work<'a> = Box<dyn Fn(&mut rand::rngs::ThreadRng) -> BoxFuture<'static, Result<()>> + Sync + 'a>;

/// A load: requests made by `work`, through `server` if it goes through one.
struct Load<'a> {
    name: &'static str,
    server: Option<&'a Server>,
    work: Work<'a>,
}

impl<'a> Load<'a> {
    fn new<Fut>(
        name: &'static str,
        server: Option<&'a Server>,
        work: impl Fn(&mut rand::rngs::ThreadRng) -> Fut + Sync + 'a,
    ) -> Self
    where
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        Self { name, server, work: Box::new(move |rng| work(rng).boxed()) }
    }
}

/// The middle value (the upper one of an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// Runs the loads in turns, `rounds` times.
async fn in_turns(loads: Vec<Load<'_>>, rounds: usize, only: &str) -> Vec<Measured> {
    let loads: Vec<Load<'_>> = loads.into_iter().filter(|load| load.name.contains(only)).collect();
    let mut turns: Vec<Vec<Turn>> = loads.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (load, turns) in loads.iter().zip(&mut turns) {
            turns.push(turn(load).await);
        }
    }
    loads.iter().zip(&turns).map(|(load, turns)| Measured::from_turns(load.name, turns)).collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    let admin_url =
        std::env::var("TEST_DATABASE_URL").map_err(|_| "run through `make bench` (needs TEST_DATABASE_URL)")?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let binary = root.join("target/release/simple-bank");
    if !binary.exists() {
        return Err("build the server first: cargo build --release -p simple-bank".into());
    }
    let started = Instant::now();
    // BENCH_ONLY=transfer (say) runs only the loads whose names contain it, for a quick look at one of them.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();

    // PostgreSQL: the server, and the same work sent straight to the database.
    let pg_url = fresh_postgres_database(&admin_url, "bench").await?;
    let server = Server::start(&binary, &pg_url)?;
    let bank = open_bank(&server, Backend::Postgres, USERS).await?;
    let pool = PgPoolOptions::new().max_connections(CONCURRENCY as u32).connect(&pg_url).await?;
    pool.execute(RAW_TRANSFER_FUNCTION).await?;
    let accounts: Arc<Vec<i64>> =
        Arc::new(sqlx::query_scalar("SELECT id FROM accounts ORDER BY id").fetch_all(&pool).await?);
    println!("setup: {USERS} users with funded accounts in {:.1}s", started.elapsed().as_secs_f64());
    let raw = Dedicated::postgres(&pg_url, CONCURRENCY).await?;
    let clients = server.clients(CONCURRENCY).await?;
    let raw_transfer = |naive: bool| {
        let (raw, accounts) = (raw.clone(), accounts.clone());
        move |rng: &mut rand::rngs::ThreadRng| {
            let (i, j) = pick_pair(&accounts, rng);
            let (raw, from, to) = (raw.clone(), accounts[i], accounts[j]);
            async move {
                let mut conn = raw.take()?;
                if naive {
                    naive_transfer(&mut conn, from, to).await
                } else {
                    sqlx::query("SELECT bench_transfer($1, $2, 1)").bind(from).bind(to).execute(&mut *conn).await?;
                    Ok(())
                }
            }
        }
    };
    let raw_users_page = |_: &mut rand::rngs::ThreadRng| {
        let raw = raw.clone();
        async move {
            let mut conn = raw.take()?;
            // The columns the page shows, as the server must read them.
            let users: Vec<(String, String, Option<String>)> = sqlx::query_as(
                "SELECT username, full_name, email FROM users WHERE deleted_at IS NULL ORDER BY username LIMIT 21",
            )
            .fetch_all(&mut *conn)
            .await?;
            let users: Vec<String> = users.into_iter().map(|(username, ..)| username).collect();
            sqlx::query("SELECT id, owner, balance, currency FROM accounts WHERE owner = ANY($1) ORDER BY id")
                .bind(&users)
                .fetch_all(&mut *conn)
                .await?;
            Ok(())
        }
    };
    let mut results = in_turns(
        vec![
            Load::new("server: transfer", Some(&server), |rng| bank.transfer(&clients, rng)),
            Load::new("raw: transfer, one function call", None, raw_transfer(false)),
            Load::new("raw: transfer, 7-statement transaction", None, raw_transfer(true)),
        ],
        ROUNDS,
        &only,
    )
    .await;
    results.extend(
        in_turns(
            vec![
                Load::new("server: 20 users with accounts", Some(&server), |_| bank.users_page(&clients)),
                Load::new("raw: 20 users with accounts (2 queries)", None, raw_users_page),
            ],
            ROUNDS,
            &only,
        )
        .await,
    );
    if "server: me during a login flood".contains(only.as_str()) {
        let flood = Arc::new(AtomicU64::new(0));
        let flooding = bank.flood_logins(server.clients(CONCURRENCY).await?, flood.clone());
        let started = Instant::now();
        let me = Load::new("server: me during a login flood", Some(&server), |rng| bank.me(&clients, rng));
        let mut me = in_turns(vec![me], ROUNDS, "").await.remove(0);
        flooding.abort();
        let logins = flood.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        me.name = format!("{} ({logins:.0} logins/s)", me.name);
        results.push(me);
    }
    drop(server);
    let pg_total = check_ledger(&pg_url, "PostgreSQL").await?;

    // SQLite: loads 1–2, where zero errors is the bar.
    let dir = tempfile::tempdir()?;
    let sqlite_url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
    let server = Server::start(&binary, &sqlite_url)?;
    let bank = open_bank(&server, Backend::Sqlite, 50).await?;
    let clients = server.clients(CONCURRENCY).await?;
    results.extend(
        in_turns(
            vec![
                Load::new("sqlite server: transfer", Some(&server), |rng| bank.transfer(&clients, rng)),
                Load::new("sqlite server: 20 users with accounts", Some(&server), |_| bank.users_page(&clients)),
            ],
            1,
            &only,
        )
        .await,
    );
    drop(server);
    let sqlite_total = check_ledger(&sqlite_url, "SQLite").await?;

    let report = report(&results, pg_total, sqlite_total);
    print!("{report}");
    write_outputs(&root, &results)?;
    println!("bench: done in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The release server as a process, so its memory can be read from /proc.
struct Server {
    child: Child,
    database_url: String,
    address: SocketAddr,
    base: String,
    /// Where `/metrics` is (`METRICS_ADDR`): not on the API's address.
    metrics: String,
    /// For setting up and looking on; the measured loads have connections of their own ([`Server::clients`]).
    http: reqwest::Client,
}

impl Server {
    fn start(binary: &PathBuf, database_url: &str) -> Result<Self> {
        // Both bound at once, so that they differ.
        let (api, metrics) = (TcpListener::bind("127.0.0.1:0")?, TcpListener::bind("127.0.0.1:0")?);
        let (address, metrics_address) = (api.local_addr()?, metrics.local_addr()?);
        drop((api, metrics));
        let child = Command::new(binary)
            .env("DATABASE_URL", database_url)
            .env("LISTEN_ADDR", address.to_string())
            .env("METRICS_ADDR", metrics_address.to_string())
            .env("JWT_SECRET", SECRET)
            // The setup signs up all its users from this one address, more than the default allows in an hour.
            .env("SIGNUPS_PER_ADDRESS_PER_HOUR", (USERS + 1).to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?;
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
        let database_url = database_url.to_owned();
        let (base, metrics) = (format!("http://{address}"), format!("http://{metrics_address}"));
        Ok(Self { child, database_url, address, base, metrics, http })
    }

    /// `n` keep-alive HTTP/1.1 connections for a load's clients, one each.
    async fn clients(&self, n: usize) -> Result<Dedicated<Client>> {
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            let stream = tokio::net::TcpStream::connect(self.address).await?;
            stream.set_nodelay(true)?;
            let (client, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            clients.push(client);
        }
        Ok(Dedicated::new(clients))
    }

    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.http.get(format!("{}/readyz", self.base)).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("the server did not become ready".into())
    }

    async fn statements(&self) -> Option<u64> {
        let text = self.http.get(format!("{}/metrics", self.metrics)).send().await.ok()?.text().await.ok()?;
        text.lines().find_map(|line| line.strip_prefix("db_statements_total ")?.parse().ok())
    }

    fn rss_mb(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens the kit's bank on `server`: a banker and `users` depositors with funded USD accounts, the same setup
/// the tests use.
async fn open_bank(server: &Server, backend: Backend, users: usize) -> Result<Arc<Bank>> {
    server.wait_ready().await?;
    let database = Arc::new(TestDatabase::existing(server.database_url.clone(), backend));
    let app = TestApp::at(server.base.clone(), database).await;
    Ok(Arc::new(Bank::open(&app, users, 100_000_000).await))
}

/// The loads' requests, made on the kit's bank.
trait Loads {
    fn transfer(
        self: &Arc<Self>,
        clients: &Dedicated<Client>,
        rng: &mut rand::rngs::ThreadRng,
    ) -> impl Future<Output = Result<()>> + Send + use<Self>;
    fn users_page(self: &Arc<Self>, clients: &Dedicated<Client>)
    -> impl Future<Output = Result<()>> + Send + use<Self>;
    fn me(
        self: &Arc<Self>,
        clients: &Dedicated<Client>,
        rng: &mut rand::rngs::ThreadRng,
    ) -> impl Future<Output = Result<()>> + Send + use<Self>;
    fn flood_logins(self: &Arc<Self>, clients: Dedicated<Client>, count: Arc<AtomicU64>)
    -> tokio::task::JoinHandle<()>;
}

impl Loads for Bank {
    fn transfer(
        self: &Arc<Self>,
        clients: &Dedicated<Client>,
        rng: &mut rand::rngs::ThreadRng,
    ) -> impl Future<Output = Result<()>> + Send + use<> {
        let (from, to) = pick_pair(&self.holders, rng);
        let (bank, clients) = (self.clone(), clients.clone());
        async move {
            let (from, to) = (&bank.holders[from], &bank.holders[to]);
            let mut input = transfer_input(&from.account, &to.account, "1", "USD");
            // Every transfer carries a fresh idempotency key, as a careful client's would.
            input["input"]["idempotencyKey"] = json!(format!("bench-{:016x}", rand::random::<u64>()));
            post(&clients, TRANSFER, input, Some(&from.token)).await
        }
    }

    fn users_page(self: &Arc<Self>, clients: &Dedicated<Client>) -> impl Future<Output = Result<()>> + Send + use<> {
        let (bank, clients) = (self.clone(), clients.clone());
        async move { post(&clients, USERS_QUERY, json!({}), Some(&bank.banker)).await }
    }

    fn me(
        self: &Arc<Self>,
        clients: &Dedicated<Client>,
        rng: &mut rand::rngs::ThreadRng,
    ) -> impl Future<Output = Result<()>> + Send + use<> {
        let who = rng.random_range(0..self.holders.len());
        let (bank, clients) = (self.clone(), clients.clone());
        async move { post(&clients, ME, json!({}), Some(&bank.holders[who].token)).await }
    }

    /// 16 clients logging in as fast as they can (valid passwords, so throttling does not stop them).
    fn flood_logins(
        self: &Arc<Self>,
        clients: Dedicated<Client>,
        count: Arc<AtomicU64>,
    ) -> tokio::task::JoinHandle<()> {
        let names: Arc<Vec<String>> = Arc::new(self.holders.iter().map(|h| h.username.clone()).collect());
        tokio::spawn(async move {
            let flooders = (0..CONCURRENCY).map(|c| {
                let (clients, count, names) = (clients.clone(), count.clone(), names.clone());
                async move {
                    let mut n = c;
                    loop {
                        let name = &names[n % names.len()];
                        let input = json!({ "i": { "username": name, "password": PASSWORD } });
                        let query = "mutation($i: LoginInput!) { login(input: $i) { accessToken } }";
                        if post(&clients, query, input, None).await.is_ok() {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        n += CONCURRENCY;
                    }
                }
            });
            futures::future::join_all(flooders).await;
        })
    }
}

/// A measured request: the load generator shares the cores with the server, so it does no more work than it must.
async fn post(clients: &Dedicated<Client>, query: &str, variables: Value, token: Option<&str>) -> Result<()> {
    let mut request =
        hyper::Request::post("/graphql").header(HOST, "127.0.0.1").header(CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(serde_json::to_vec(&json!({ "query": query, "variables": variables }))?)))?;
    let mut client = clients.take()?;
    client.ready().await?;
    let body = client.send_request(request).await?.into_body().collect().await?.to_bytes();
    drop(client);
    // Parsed only when it carries errors.
    if !body.windows(9).any(|w| w == br#""errors":"#) {
        return Ok(());
    }
    let body: Value = serde_json::from_slice(&body)?;
    match body.pointer("/errors/0/extensions/code").and_then(Value::as_str) {
        Some(code) => Err(code.to_owned().into()),
        None => Err(format!("an error without a code: {body}").into()),
    }
}

fn pick_pair<T>(items: &[T], rng: &mut rand::rngs::ThreadRng) -> (usize, usize) {
    let from = rng.random_range(0..items.len());
    let to = (from + rng.random_range(1..items.len())) % items.len();
    (from, to)
}

/// One turn of a load, closed-loop: CONCURRENCY workers, each sending its next request when the last is
/// answered; latencies are kept after the warm-up. With a server, its peak memory is sampled throughout.
async fn turn(load: &Load<'_>) -> Turn {
    let started = Instant::now();
    let measuring_from = started + WARMUP;
    let deadline = measuring_from + TURN;
    let statements_before = match load.server {
        Some(server) => server.statements().await,
        None => None,
    };
    let workers = (0..CONCURRENCY).map(|_| async move {
        let mut latencies = Vec::new();
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut sent_total = 0u64;
        while Instant::now() < deadline {
            let request = (load.work)(&mut rand::rng());
            let sent = Instant::now();
            // Spawned, so that the 16 workers run on every core rather than inside one task.
            let outcome = match tokio::spawn(request).await {
                Ok(outcome) => outcome,
                Err(join) => Err(join.into()),
            };
            let done = Instant::now();
            sent_total += 1;
            if sent >= measuring_from {
                latencies.push(done - sent);
                if let Err(err) = outcome {
                    *errors.entry(err.to_string()).or_default() += 1;
                }
            }
        }
        (latencies, errors, sent_total)
    });
    let server_pid = load.server.map(|s| s.child.id());
    let cpu_window = async {
        tokio::time::sleep_until(measuring_from.into()).await;
        let before = Cpu::used(server_pid);
        tokio::time::sleep_until(deadline.into()).await;
        Cpu::used(server_pid).minus(before)
    };
    let mut peak_rss: Option<f64> = None;
    let (results, cpu) = {
        let sampling = async {
            loop {
                if let Some(rss) = load.server.and_then(Server::rss_mb) {
                    peak_rss = Some(peak_rss.map_or(rss, |p: f64| p.max(rss)));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::select! {
            results = futures::future::join(futures::future::join_all(workers), cpu_window) => results,
            () = sampling => unreachable!("sampling never ends"),
        }
    };
    let mut turn = Turn { peak_rss, cpu, ..Turn::default() };
    for (latencies, errors, sent) in results {
        turn.requests_total += sent;
        turn.latencies.extend(latencies);
        for (code, n) in errors {
            *turn.errors.entry(code).or_default() += n;
        }
    }
    if let (Some(server), Some(before)) = (load.server, statements_before) {
        turn.statements = server.statements().await.map(|after| after - before);
    }
    turn
}

/// CPU time (user + system) of the server, of PostgreSQL's processes and of this benchmark.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    server: f64,
    database: f64,
    client: f64,
}

impl Cpu {
    /// So far, in seconds. PostgreSQL's are the processes named `postgres` (the postmaster's count includes the
    /// backends that have exited).
    fn used(server: Option<u32>) -> Self {
        let database = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| {
                std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|comm| comm.trim() == "postgres")
            })
            .filter_map(|entry| process_seconds(&entry.path().join("stat"), true))
            .sum();
        Self {
            server: server.and_then(|pid| process_seconds(format!("/proc/{pid}/stat").as_ref(), false)).unwrap_or(0.0),
            database,
            client: process_seconds("/proc/self/stat".as_ref(), false).unwrap_or(0.0),
        }
    }

    fn plus(self, other: Self) -> Self {
        Self {
            server: self.server + other.server,
            database: self.database + other.database,
            client: self.client + other.client,
        }
    }

    fn minus(self, before: Self) -> Self {
        Self {
            server: self.server - before.server,
            database: self.database - before.database,
            client: self.client - before.client,
        }
    }

    /// Per request, in µs.
    fn per(self, requests: f64) -> Self {
        let us = |s: f64| s * 1e6 / requests;
        Self { server: us(self.server), database: us(self.database), client: us(self.client) }
    }
}

/// User + system CPU seconds from a /proc/…/stat file, with the reaped children's too when asked.
fn process_seconds(stat: &std::path::Path, with_children: bool) -> Option<f64> {
    let text = std::fs::read_to_string(stat).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces: state is field 3, utime 14.
    let fields: Vec<u64> =
        text.rsplit_once(')')?.1.split_whitespace().skip(11).take(4).filter_map(|f| f.parse().ok()).collect();
    let [utime, stime, cutime, cstime] = fields[..] else { return None };
    let ticks = utime + stime + if with_children { cutime + cstime } else { 0 };
    // Linux reports these in clock ticks of 1/100 s (USER_HZ) on every architecture this runs on.
    Some(ticks as f64 / 100.0)
}

const RAW_TRANSFER_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION bench_transfer(p_from bigint, p_to bigint, p_amount bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE t_id bigint; f_balance bigint; f_seq bigint; t_balance bigint; t_seq bigint;
BEGIN
    PERFORM 1 FROM accounts WHERE id IN (p_from, p_to) ORDER BY id FOR UPDATE;
    UPDATE accounts SET balance = balance - p_amount, entry_count = entry_count + 1 WHERE id = p_from
        RETURNING balance, entry_count INTO f_balance, f_seq;
    UPDATE accounts SET balance = balance + p_amount, entry_count = entry_count + 1 WHERE id = p_to
        RETURNING balance, entry_count INTO t_balance, t_seq;
    INSERT INTO transfers (from_account_id, to_account_id, amount) VALUES (p_from, p_to, p_amount) RETURNING id INTO t_id;
    INSERT INTO entries (account_id, amount, transfer_id, balance_after, account_seq)
        VALUES (p_from, -p_amount, t_id, f_balance, f_seq), (p_to, p_amount, t_id, t_balance, t_seq);
    RETURN t_id;
END $$;
"#;

/// An HTTP/1.1 connection to the server.
type Client = SendRequest<Full<Bytes>>;

/// A measured load's connections, one per client, on both sides. sqlx's pool pings a connection when it is taken
/// out and again when it is put back, two round trips the database's limit must not pay; reqwest's pool does
/// bookkeeping for every request that the load generator need not add to the server's side.
struct Dedicated<C>(Arc<Mutex<Vec<C>>>);

impl<C> Clone for Dedicated<C> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// A connection taken from [`Dedicated`]; it goes back when dropped.
struct Taken<C> {
    conn: Option<C>,
    home: Arc<Mutex<Vec<C>>>,
}

impl<C> Dedicated<C> {
    fn new(conns: Vec<C>) -> Self {
        Self(Arc::new(Mutex::new(conns)))
    }

    fn take(&self) -> Result<Taken<C>> {
        let conn =
            self.0.lock().unwrap_or_else(PoisonError::into_inner).pop().ok_or("more clients than connections")?;
        Ok(Taken { conn: Some(conn), home: self.0.clone() })
    }
}

impl Dedicated<PgConnection> {
    async fn postgres(url: &str, n: usize) -> Result<Self> {
        Ok(Self::new(futures::future::try_join_all((0..n).map(|_| PgConnection::connect(url))).await?))
    }
}

impl<C> std::ops::Deref for Taken<C> {
    type Target = C;
    fn deref(&self) -> &C {
        self.conn.as_ref().expect("taken until dropped")
    }
}

impl<C> std::ops::DerefMut for Taken<C> {
    fn deref_mut(&mut self) -> &mut C {
        self.conn.as_mut().expect("taken until dropped")
    }
}

impl<C> Drop for Taken<C> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.home.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
        }
    }
}

async fn naive_transfer(conn: &mut PgConnection, from: i64, to: i64) -> Result<()> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT id FROM accounts WHERE id IN ($1, $2) ORDER BY id FOR UPDATE")
        .bind(from)
        .bind(to)
        .fetch_all(&mut *tx)
        .await?;
    // Each entry records the balance it left and its place in the account's ledger, as the server's do.
    let moved = "UPDATE accounts SET balance = balance + $2, entry_count = entry_count + 1 WHERE id = $1 \
                 RETURNING balance, entry_count";
    let (from_balance, from_seq): (i64, i64) = sqlx::query_as(moved).bind(from).bind(-1i64).fetch_one(&mut *tx).await?;
    let (to_balance, to_seq): (i64, i64) = sqlx::query_as(moved).bind(to).bind(1i64).fetch_one(&mut *tx).await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO transfers (from_account_id, to_account_id, amount) VALUES ($1, $2, 1) RETURNING id",
    )
    .bind(from)
    .bind(to)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO entries (account_id, amount, transfer_id, balance_after, account_seq) \
         VALUES ($1, -1, $3, $4, $5), ($2, 1, $3, $6, $7)",
    )
    .bind(from)
    .bind(to)
    .bind(id)
    .bind(from_balance)
    .bind(from_seq)
    .bind(to_balance)
    .bind(to_seq)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn fresh_postgres_database(admin_url: &str, name: &str) -> Result<String> {
    let admin = PgPoolOptions::new().max_connections(1).connect(admin_url).await?;
    // The name is ours (a constant), not input.
    admin
        .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))))
        .await?;
    admin.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))).await?;
    let (server, _) = admin_url.rsplit_once('/').ok_or("TEST_DATABASE_URL names a database")?;
    Ok(format!("{server}/{name}"))
}

/// The kit's ledger invariants ([`tests::LEDGER_INVARIANTS`]), checked in the database: all the money in the bank.
async fn check_ledger(url: &str, backend: &str) -> Result<i64> {
    let db = sea_orm::Database::connect(url).await?;
    let (broken, total) = ledger_check(&db).await;
    db.close().await?;
    if !broken.is_empty() {
        return Err(format!("ledger check failed on {backend}: {broken:?}").into());
    }
    Ok(total)
}

fn report(results: &[Measured], pg_total: i64, sqlite_total: i64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<58} {:>9} {:>8} {:>8} {:>8} {:>8} {:>17}  errors",
        "load (16 connections)", "req/s", "p50 ms", "p99 ms", "RSS MB", "SQL/req", "CPU µs srv/db/cli"
    );
    for m in results {
        let _ = writeln!(
            out,
            "{:<58} {:>9.0} {:>8.2} {:>8.2} {:>8} {:>8} {:>17}  {}",
            m.name,
            m.throughput,
            m.p50_ms,
            m.p99_ms,
            m.rss_mb.map_or("-".into(), |r| format!("{r:.1}")),
            m.statements_per_request.map_or("-".into(), |s| format!("{s:.1}")),
            m.cpu_us.map_or("-".into(), |c| format!("{:.0}/{:.0}/{:.0}", c.server, c.database, c.client)),
            if m.errors.is_empty() { "none".to_owned() } else { format!("{:?}", m.errors) },
        );
    }
    let find = |prefix: &str| results.iter().find(|m| m.name.starts_with(prefix));
    // A target whose loads did not run (BENCH_ONLY) is reported as such, not as missed.
    let rounds = |a: &str, b: &str| -> Vec<f64> {
        let (Some(a), Some(b)) = (find(a), find(b)) else { return Vec::new() };
        a.turn_throughputs.iter().zip(&b.turn_throughputs).filter(|(_, b)| **b > 0.0).map(|(a, b)| a / b).collect()
    };
    let ratio = |a: &str, b: &str| median(rounds(a, b));
    let p99 = |prefix: &str| find(prefix).map(|m| m.p99_ms);
    let rss = results.iter().filter_map(|m| m.rss_mb).reduce(f64::max);
    let sqlite: Vec<&Measured> = results.iter().filter(|m| m.name.starts_with("sqlite")).collect();
    let at_least = |value: Option<f64>, bar: f64, each: Vec<f64>| {
        let each: Vec<String> = each.iter().map(|r| format!("{r:.2}")).collect();
        value.map(|v| (v >= bar, format!("{v:.2}×, the median of its rounds: {}", each.join(" "))))
    };
    let at_most = |value: Option<f64>, bar: f64, unit: &str| value.map(|v| (v <= bar, format!("{v:.1} {unit}")));
    let targets = [
        (
            "transfers ≥ 0.5 × raw one-call transfer",
            at_least(
                ratio("server: transfer", "raw: transfer, one"),
                0.5,
                rounds("server: transfer", "raw: transfer, one"),
            ),
        ),
        ("transfer p99 ≤ 10 ms", at_most(p99("server: transfer"), 10.0, "ms")),
        (
            "20 users with accounts ≥ 0.5 × raw queries",
            at_least(ratio("server: 20 users", "raw: 20 users"), 0.5, rounds("server: 20 users", "raw: 20 users")),
        ),
        ("me p99 ≤ 20 ms during the login flood", at_most(p99("server: me"), 20.0, "ms")),
        ("server RSS ≤ 64 MB", at_most(rss, 64.0, "MB")),
        (
            "no errors on SQLite",
            (!sqlite.is_empty()).then(|| {
                let errors: u64 = sqlite.iter().flat_map(|m| m.errors.values()).sum();
                let requests: u64 = sqlite.iter().map(|m| m.requests).sum();
                (errors == 0, format!("{errors} errors in {requests} requests"))
            }),
        ),
    ];
    let _ = writeln!(out, "\nratios and targets:");
    for (target, outcome) in targets {
        let _ = match outcome {
            Some((met, value)) => writeln!(out, "  [{}] {target}: {value}", if met { "met" } else { "MISSED" }),
            None => writeln!(out, "  [not run] {target}"),
        };
    }
    let _ = writeln!(
        out,
        "\nledger invariants hold (balance = Σ entries, none negative, money conserved): PostgreSQL total {pg_total}, SQLite total {sqlite_total}"
    );
    out
}

fn write_outputs(root: &std::path::Path, results: &[Measured]) -> Result<()> {
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let json: Vec<Value> = results
        .iter()
        .map(|m| json!({ "load": m.name, "throughput": m.throughput, "turn_throughputs": m.turn_throughputs,
                         "p50_ms": m.p50_ms, "p99_ms": m.p99_ms,
                         "rss_mb": m.rss_mb, "sql_statements_per_request": m.statements_per_request,
                         "cpu_us_per_request": m.cpu_us.map(|c| json!({ "server": c.server, "database": c.database, "client": c.client })),
                         "requests": m.requests, "errors": m.errors }))
        .collect();
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(&json)?)?;
    std::fs::write(dir.join("latency.svg"), svg(results))?;
    println!("wrote target/bench/results.json and target/bench/latency.svg");
    Ok(())
}

/// Horizontal bars of p50 (dark) and p99 (light) latency per load.
fn svg(results: &[Measured]) -> String {
    let (width, row, left) = (900.0, 34.0, 380.0);
    let max = results.iter().map(|m| m.p99_ms).fold(1.0, f64::max);
    let scale = (width - left - 80.0) / max;
    let height = 60.0 + row * results.len() as f64;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="13"><rect width="100%" height="100%" fill="white"/><text x="10" y="22" font-size="15">Latency per load, 16 connections: p50 (dark) and p99 (light), ms</text>"#
    );
    for (i, m) in results.iter().enumerate() {
        let y = 40.0 + row * i as f64;
        let _ = write!(
            out,
            r##"<text x="10" y="{ty}">{name}</text><rect x="{left}" y="{y}" width="{w99}" height="22" fill="#9ecae1"/><rect x="{left}" y="{y}" width="{w50}" height="22" fill="#3182bd"/><text x="{tx}" y="{ty}">{p50:.1} / {p99:.1}</text>"##,
            ty = y + 16.0,
            name = m.name.replace('&', "&amp;").replace('<', "&lt;"),
            w99 = m.p99_ms * scale,
            w50 = m.p50_ms * scale,
            tx = left + m.p99_ms * scale + 6.0,
            p50 = m.p50_ms,
            p99 = m.p99_ms,
        );
    }
    out.push_str("</svg>\n");
    out
}
