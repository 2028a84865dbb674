//! The server's loads: the requests they send, made on the kit's bank over the load's own HTTP connections.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use rand::Rng;
use serde_json::{Value, json};
use tests::{Bank, PASSWORD, TRANSFER, transfer_input};

use crate::connections::Dedicated;
use crate::{CONCURRENCY, Result};

/// An HTTP/1.1 connection to the server.
pub type Client = SendRequest<Full<Bytes>>;

pub const USERS_QUERY: &str =
    "{ users(first: 20) { edges { node { username fullName email accounts { id balance currency } } } } }";
const ME: &str = "{ me { accounts { balance } } }";

/// The loads' requests, made on the kit's bank.
pub trait Loads {
    /// `amount` from one holder's account to another's (indexes into `holders`), authenticated as its sender.
    fn transfer(
        self: &Arc<Self>,
        clients: &Dedicated<Client>,
        pair: (usize, usize),
        amount: i64,
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
        (from, to): (usize, usize),
        amount: i64,
    ) -> impl Future<Output = Result<()>> + Send + use<> {
        let (bank, clients) = (self.clone(), clients.clone());
        async move {
            let (input, token) = transfer_variables(&bank, (from, to), amount);
            post(&clients, TRANSFER, input, Some(token)).await
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

/// A transfer's variables, `amount` from one holder's account to another's (indexes into `holders`), and the token
/// it is sent with: its sender's.
pub fn transfer_variables(bank: &Bank, (from, to): (usize, usize), amount: i64) -> (Value, &str) {
    let (from, to) = (&bank.holders[from], &bank.holders[to]);
    let mut input = transfer_input(&from.account, &to.account, amount, "USD");
    // Every transfer carries a fresh idempotency key, as a careful client's would.
    input["input"]["idempotencyKey"] = json!(format!("bench-{:016x}", rand::random::<u64>()));
    (input, &from.token)
}

/// A measured request: the load generator shares the cores with the server, so it does no more work than it must.
pub async fn post(clients: &Dedicated<Client>, query: &str, variables: Value, token: Option<&str>) -> Result<()> {
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

/// Two different indexes below `count`.
pub fn pick_pair(count: usize, rng: &mut rand::rngs::ThreadRng) -> (usize, usize) {
    let from = rng.random_range(0..count);
    let to = (from + rng.random_range(1..count)) % count;
    (from, to)
}
