//! What the server's per-request hardening costs a load: the load's own requests through the server's own router
//! (`simple_bank::router`, middleware and all), built twice on the benchmark's database, once as every server builds
//! it and once without the hardening (`simple_bank::Hardening::Off`, which no setting reaches), taking turns request
//! batch by request batch on one thread, whose CPU time each batch is charged.
//!
//! Two servers taking turns under load could not show it: on two shared cores their rates moved by a tenth or more
//! between turns, and by as much between two copies of the same server. Here the two routers share one thread, one
//! database and one moment: batches alternate (with, without, without, with, …), so whatever the machine does weighs
//! on both alike, and a thread's CPU time (`/proc/thread-self/schedstat`, in ns) is not stretched by other
//! processes' work the way a rate is. Everything the router does for a request (sqlx's side of its statements
//! included) runs on that thread; what both routers do alike cancels out in the difference, which is the
//! hardening's. The report divides it by the server process's CPU time per request measured under load.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use clap::Parser;
use futures::StreamExt;
use serde_json::json;
use simple_bank::{AppState, Hardening, cli::Cli};
use tests::Bank;
use tower::ServiceExt;

use crate::Result;
use crate::loads::{USERS_QUERY, pick_pair, transfer_variables};
use crate::measure::median;

/// Rounds, each of `BATCHES` batches of `BATCH` requests per router: a round's figure is its difference, and the
/// cost is the median round's. Fifteen, not five: on two shared cores a round moves by ±20 µs, about the whole
/// cost, and a round of transfers takes a third of a second.
const ROUNDS: usize = 15;
const BATCHES: usize = 30;
const BATCH: usize = 20;
/// Requests of a batch in flight at once: the thread stays busy while the database works, so that a batch takes
/// less time and the run can afford more of them.
const IN_FLIGHT: usize = 8;
/// Requests through each router before the first round: the parse cache, the session cache, pooled connections.
const WARM_UP: usize = 100;

/// The load measured: the transfer or the users page, the loads' own requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    Transfer,
    UsersPage,
}

/// One load's rounds: the router's CPU time per request in each, with the hardening and without, in µs.
#[derive(Clone, Debug)]
pub struct Cost {
    pub load: Load,
    pub rounds: Vec<(f64, f64)>,
}

impl Cost {
    /// The median round's difference: what the hardening costs a request, in µs of CPU time.
    pub fn per_request_us(&self) -> f64 {
        median(self.rounds.iter().map(|(with, without)| with - without).collect()).unwrap_or(0.0)
    }

    /// The router's CPU time per request with the hardening, in the median round.
    pub fn with_us(&self) -> f64 {
        median(self.rounds.iter().map(|(with, _)| *with).collect()).unwrap_or(0.0)
    }
}

/// Measures `loads` on the database at `database_url`, with the bank's users (its server signed their tokens with
/// `jwt_secret`). Runs on a thread of its own, with a single-threaded runtime, so that a request's every step runs
/// where its CPU time is read.
pub async fn measure(database_url: &str, jwt_secret: &str, bank: Arc<Bank>, loads: Vec<Load>) -> Result<Vec<Cost>> {
    let args = ["simple-bank", "--database-url", database_url, "--jwt-secret", jwt_secret];
    let config = Cli::try_parse_from(args)?.config;
    let thread = std::thread::spawn(move || -> Result<Vec<Cost>> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move {
            let with = simple_bank::router(AppState::new(&config, Hardening::On).await?, &config);
            let without = simple_bank::router(AppState::new(&config, Hardening::Off).await?, &config);
            let mut costs = Vec::new();
            for load in loads {
                costs.push(cost(&bank, load, &with, &without).await?);
            }
            Ok(costs)
        })
    });
    tokio::task::spawn_blocking(move || thread.join().map_err(|_| "the hardening measurement panicked"))
        .await?
        .map_err(|err| err.to_owned())?
}

async fn cost(bank: &Bank, load: Load, with: &axum::Router, without: &axum::Router) -> Result<Cost> {
    batch(bank, load, with, WARM_UP).await?;
    batch(bank, load, without, WARM_UP).await?;
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let (mut with_cpu, mut without_cpu) = (Duration::ZERO, Duration::ZERO);
        for i in 0..BATCHES {
            // With, without; then without, with: neither always goes first.
            if i % 2 == 0 {
                with_cpu += batch(bank, load, with, BATCH).await?;
                without_cpu += batch(bank, load, without, BATCH).await?;
            } else {
                without_cpu += batch(bank, load, without, BATCH).await?;
                with_cpu += batch(bank, load, with, BATCH).await?;
            }
        }
        let per_request = |cpu: Duration| cpu.as_secs_f64() * 1e6 / (BATCHES * BATCH) as f64;
        rounds.push((per_request(with_cpu), per_request(without_cpu)));
    }
    eprintln!("  measured the hardening's cost on {load:?}: {rounds:.1?} µs per request, with and without");
    Ok(Cost { load, rounds })
}

/// `n` requests of `load` through `router`, [`IN_FLIGHT`] at a time, and the CPU time of this thread meanwhile. The
/// requests are made before and the answers checked after the measured part.
async fn batch(bank: &Bank, load: Load, router: &axum::Router, n: usize) -> Result<Duration> {
    let requests: Vec<_> = (0..n).map(|_| request(bank, load)).collect::<Result<_>>()?;
    let started = thread_cpu()?;
    let answers: Vec<_> = futures::stream::iter(requests)
        .map(|request| async move {
            let response = router.clone().oneshot(request).await?;
            axum::body::to_bytes(response.into_body(), usize::MAX).await.map_err(Into::into)
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<Result<_>>>()
        .await;
    let cpu = thread_cpu()? - started;
    let answers: Vec<_> = answers.into_iter().collect::<Result<_>>()?;
    if let Some(answer) = answers
        .iter()
        .find(|answer| !answer.starts_with(br#"{"data":"#) || answer.windows(9).any(|w| w == br#""errors":"#))
    {
        return Err(format!("{load:?}: {}", String::from_utf8_lossy(answer)).into());
    }
    Ok(cpu)
}

/// The load's next request, as `loads` sends it to the server.
fn request(bank: &Bank, load: Load) -> Result<axum::http::Request<Body>> {
    let (query, variables, token) = match load {
        Load::Transfer => {
            let (from, to) = pick_pair(bank.holders.len(), &mut rand::rng());
            let (variables, token) = transfer_variables(bank, (from, to), 1);
            (tests::TRANSFER, variables, token)
        }
        Load::UsersPage => (USERS_QUERY, json!({}), bank.banker.as_str()),
    };
    let body = serde_json::to_vec(&json!({ "query": query, "variables": variables }))?;
    let mut request = axum::http::Request::post("/graphql")
        .header(HOST, "127.0.0.1")
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from(body))?;
    // What a bound server attaches: the client's address.
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    Ok(request)
}

/// The CPU time this thread has run, to the nanosecond.
fn thread_cpu() -> Result<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let ns: u64 = text.split_whitespace().next().ok_or("an empty schedstat")?.parse()?;
    Ok(Duration::from_nanos(ns))
}
