//! The release server as a process of its own, so that its CPU time and memory can be read from /proc, and the
//! kit's bank opened on it.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tests::{Backend, Bank, TestApp, TestDatabase};

use crate::connections::Dedicated;
use crate::loads::Client;
use crate::{Result, USERS};

pub const SECRET: &str = "benchmark-secret-that-is-32-bytes-long";
/// The idle-subscription load holds 100 sockets of one banker with 100 subscriptions each.
pub const MAX_SOCKETS_PER_USER: usize = 100;
pub const MAX_SUBSCRIPTIONS_PER_SOCKET: usize = 100;

/// How the benchmark's servers start: the release binary, and the file their logs (warnings and errors) go to.
pub struct Release {
    pub binary: PathBuf,
    pub log: PathBuf,
}

pub struct Server {
    child: Child,
    database_url: String,
    address: SocketAddr,
    /// `http://` and the API's address.
    pub base: String,
    /// Where `/metrics` is (`METRICS_ADDR`): not on the API's address.
    metrics: String,
    /// For setting up and looking on; the measured loads have connections of their own ([`Server::clients`]).
    http: reqwest::Client,
}

impl Server {
    pub fn start(release: &Release, database_url: &str) -> Result<Self> {
        // Both bound at once, so that they differ.
        let (api, metrics) = (TcpListener::bind("127.0.0.1:0")?, TcpListener::bind("127.0.0.1:0")?);
        let (address, metrics_address) = (api.local_addr()?, metrics.local_addr()?);
        drop((api, metrics));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&release.log)?;
        let child = Command::new(&release.binary)
            .env("DATABASE_URL", database_url)
            .env("LISTEN_ADDR", address.to_string())
            .env("METRICS_ADDR", metrics_address.to_string())
            .env("JWT_SECRET", SECRET)
            // The setup signs up all its users from this one address, more than the default allows in an hour.
            .env("SIGNUPS_PER_ADDRESS_PER_HOUR", (USERS + 1).to_string())
            .env("MAX_SOCKETS_PER_USER", MAX_SOCKETS_PER_USER.to_string())
            .env("MAX_SUBSCRIPTIONS_PER_SOCKET", MAX_SUBSCRIPTIONS_PER_SOCKET.to_string())
            .env("RUST_LOG", "warn")
            .stdout(log)
            .spawn()?;
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
        let database_url = database_url.to_owned();
        let (base, metrics) = (format!("http://{address}"), format!("http://{metrics_address}"));
        Ok(Self { child, database_url, address, base, metrics, http })
    }

    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Opens the kit's bank: a banker and `users` depositors with funded USD accounts, the same setup the tests
    /// use.
    pub async fn open_bank(&self, backend: Backend, users: usize) -> Result<Arc<Bank>> {
        self.wait_ready().await?;
        let database = Arc::new(TestDatabase::existing(self.database_url.clone(), backend));
        let app = TestApp::at(self.base.clone(), database).await;
        Ok(Arc::new(Bank::open(&app, users, 100_000_000).await))
    }

    /// `n` keep-alive HTTP/1.1 connections for a load's clients, one each.
    pub async fn clients(&self, n: usize) -> Result<Dedicated<Client>> {
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

    /// A GraphQL request outside the measured loads, answering its `data`.
    pub async fn graphql(&self, query: &str, variables: Value, token: &str) -> Result<Value> {
        let body: Value = self
            .http
            .post(format!("{}/graphql", self.base))
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await?;
        match body.get("errors") {
            Some(errors) => Err(format!("{query}: {errors}").into()),
            None => Ok(body["data"].clone()),
        }
    }

    pub async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.http.get(format!("{}/readyz", self.base)).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("the server did not become ready".into())
    }

    /// The SQL statements the server has run so far (`db_statements_total`; BEGIN and COMMIT not counted).
    pub async fn statements(&self) -> Option<u64> {
        let text = self.http.get(format!("{}/metrics", self.metrics)).send().await.ok()?.text().await.ok()?;
        text.lines().find_map(|line| line.strip_prefix("db_statements_total ")?.parse().ok())
    }

    pub fn rss_mb(&self) -> Option<f64> {
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
