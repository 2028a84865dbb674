//! The closed-loop measurement every load goes through: [`in_turns`] runs compared loads in turns, each
//! [`turn`] a warm-up and a measured part with CPU time and memory sampled, and [`Measured`] sums one load's turns.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::server::Server;
use crate::{CONCURRENCY, Result};

/// Loads compared with each other run in turns, this many times each, so that a machine that slows down or
/// speeds up during the run (shared machines do) weighs on both alike. A ratio is the median of the rounds' ratios:
/// five rounds outvote a turn that a stall of the shared disk or CPU happened to hit.
pub const ROUNDS: usize = 5;
/// Rounds of the loads that fit the run's 5 minutes only with fewer: SQLite's (their ratio to the PostgreSQL server
/// is not one of turns anyway) and `me` (which is compared with nothing).
pub const FEW_ROUNDS: usize = 3;
/// Each turn: a warm-up, then the measured part.
const WARMUP: Duration = Duration::from_secs(1);
pub const TURN: Duration = Duration::from_secs(3);

/// What one load measured, over all its turns: one row of the table.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub name: String,
    /// Requests per second: the median turn's.
    pub throughput: f64,
    /// Requests per second in each turn, round by round.
    pub turn_throughputs: Vec<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: BTreeMap<String, u64>,
    /// Requests sent, warm-ups included.
    pub requests: u64,
    pub rss_mb: Option<f64>,
    /// CPU time per request in the measured parts, in µs: the server (if any), PostgreSQL, this client.
    pub cpu_us: Option<Cpu>,
    pub statements_per_request: Option<f64>,
}

/// One turn of one load.
#[derive(Default)]
pub struct Turn {
    latencies: Vec<Duration>,
    errors: BTreeMap<String, u64>,
    peak_rss: Option<f64>,
    cpu: Cpu,
    /// Requests sent, warm-up included, and the SQL statements the server counted meanwhile.
    requests_total: u64,
    statements: Option<u64>,
}

impl Measured {
    pub fn from_turns(name: &str, turns: &[Turn]) -> Self {
        let mut latencies: Vec<Duration> = turns.iter().flat_map(|t| t.latencies.iter().copied()).collect();
        latencies.sort();
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
            p50_ms: percentile_ms(&latencies, 0.50),
            p99_ms: percentile_ms(&latencies, 0.99),
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

/// The latency below which a share `p` of the sorted `latencies` fall, in ms.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The middle value (the upper one of an even count).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// Makes one request of a load.
type Work<'a> = Box<dyn Fn(&mut rand::rngs::ThreadRng) -> BoxFuture<'static, Result<()>> + Sync + 'a>;

/// A load: requests made by `work`, through `server` if it goes through one.
pub struct Load<'a> {
    pub name: &'static str,
    server: Option<&'a Server>,
    work: Work<'a>,
}

impl<'a> Load<'a> {
    pub fn new<Fut>(
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

/// Runs the loads whose names contain `only` in turns, `rounds` times.
pub async fn in_turns(loads: Vec<Load<'_>>, rounds: usize, only: &str) -> Vec<Measured> {
    let loads: Vec<Load<'_>> = loads.into_iter().filter(|load| load.name.contains(only)).collect();
    let mut turns: Vec<Vec<Turn>> = loads.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (load, turns) in loads.iter().zip(&mut turns) {
            turns.push(turn(load).await);
        }
    }
    loads.iter().zip(&turns).map(|(load, turns)| Measured::from_turns(load.name, turns)).collect()
}

/// One turn of a load, closed-loop: CONCURRENCY workers, each sending its next request when the last is
/// answered; latencies are kept after the warm-up. With a server, its peak memory is sampled throughout.
pub async fn turn(load: &Load<'_>) -> Turn {
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
    let server_pid = load.server.map(Server::pid);
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

/// The PostgreSQL cluster whose processes' CPU time counts as the database's: its postmaster, set once the
/// benchmark has connected. Other clusters on the machine (other people's tests) are not this benchmark's.
pub static POSTMASTER: OnceLock<u32> = OnceLock::new();

/// CPU time (user + system) of the server, of PostgreSQL's processes and of this benchmark.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    pub server: f64,
    pub database: f64,
    pub client: f64,
}

impl Cpu {
    /// So far, in seconds. PostgreSQL's are [`POSTMASTER`]'s (whose count includes its children that have exited)
    /// and its children's.
    pub fn used(server: Option<u32>) -> Self {
        let database = POSTMASTER.get().map_or(0.0, |&postmaster| {
            let children: f64 = std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter(|entry| {
                    let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
                    parent(&stat) == Some(postmaster)
                })
                .filter_map(|entry| process_seconds(&entry.path().join("stat"), false))
                .sum();
            children + process_seconds(format!("/proc/{postmaster}/stat").as_ref(), true).unwrap_or(0.0)
        });
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

    pub fn minus(self, before: Self) -> Self {
        Self {
            server: self.server - before.server,
            database: self.database - before.database,
            client: self.client - before.client,
        }
    }

    /// Per request, in µs.
    pub fn per(self, requests: f64) -> Self {
        let us = |s: f64| s * 1e6 / requests;
        Self { server: us(self.server), database: us(self.database), client: us(self.client) }
    }
}

/// The parent's pid in the text of a /proc/…/stat file.
pub fn parent(stat: &str) -> Option<u32> {
    // After the command name, which is in parentheses and may hold spaces: the state, then the parent's pid.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
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
