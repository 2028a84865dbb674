//! `/metrics` in the Prometheus text format: requests and latency by operation, errors by code, transfers, SQL
//! statements and database pool use. Kept per server (no global registry), so several servers in one process do not mix.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use service::db::Database;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Operation names are chosen by callers: past this many distinct ones, the rest are counted as `other`, so that
/// callers cannot grow the server's memory or every scrape without bound.
const MAX_OPERATIONS: usize = 100;
/// Longer operation names are counted as `other` too (characters).
const MAX_OPERATION_LEN: usize = 64;
const ANONYMOUS: &str = "anonymous";
const OTHER: &str = "other";

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    /// By operation label, then kind.
    requests: Mutex<HashMap<String, HashMap<&'static str, Histogram>>>,
    errors: Mutex<HashMap<String, u64>>,
    transfers: AtomicU64,
    statements: AtomicU64,
}

impl Metrics {
    /// One GraphQL request: its operation name (or `anonymous`), `query` or `mutation`, and how long it took.
    pub fn observe_request(&self, operation: Option<&str>, kind: &'static str, seconds: f64) {
        let mut requests = self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let label = match operation {
            None => ANONYMOUS,
            Some(name) if requests.contains_key(name) => name,
            Some(name) => {
                let names = requests.keys().filter(|label| ![ANONYMOUS, OTHER].contains(&label.as_str())).count();
                let short = name.chars().nth(MAX_OPERATION_LEN).is_none();
                if short && names < MAX_OPERATIONS { name } else { OTHER }
            }
        };
        if !requests.contains_key(label) {
            requests.insert(label.to_owned(), HashMap::new());
        }
        let Some(kinds) = requests.get_mut(label) else { return };
        let histogram = kinds.entry(kind).or_default();
        histogram.count += 1;
        histogram.sum += seconds;
        for (bucket, bound) in histogram.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
    }

    /// The `extensions.code` of each error a response carried.
    pub fn count_error(&self, code: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *errors.entry(code.to_owned()).or_default() += 1;
    }

    /// One SQL statement sent to the database (counted by the connection's callback).
    pub fn count_statement(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_transfer(&self) {
        self.transfers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, db: &Database) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP graphql_requests_total GraphQL requests, by operation name and kind.");
        let _ = writeln!(out, "# TYPE graphql_requests_total counter");
        let _ = writeln!(out, "# HELP graphql_request_duration_seconds Time to answer a GraphQL request.");
        let _ = writeln!(out, "# TYPE graphql_request_duration_seconds histogram");
        {
            let requests = self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut rows: Vec<_> = requests
                .iter()
                .flat_map(|(operation, kinds)| {
                    kinds.iter().map(move |(kind, histogram)| ((operation, kind), histogram))
                })
                .collect();
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            for ((operation, kind), histogram) in rows {
                let labels = format!("operation=\"{}\",kind=\"{kind}\"", escape(operation));
                let _ = writeln!(out, "graphql_requests_total{{{labels}}} {}", histogram.count);
                for (count, bound) in histogram.buckets.iter().zip(BUCKETS) {
                    let _ = writeln!(out, "graphql_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}");
                }
                let _ = writeln!(
                    out,
                    "graphql_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    histogram.count
                );
                let _ = writeln!(out, "graphql_request_duration_seconds_sum{{{labels}}} {}", histogram.sum);
                let _ = writeln!(out, "graphql_request_duration_seconds_count{{{labels}}} {}", histogram.count);
            }
        }
        let _ = writeln!(out, "# HELP graphql_errors_total Errors answered, by extensions.code.");
        let _ = writeln!(out, "# TYPE graphql_errors_total counter");
        {
            let errors = self.errors.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut rows: Vec<_> = errors.iter().collect();
            rows.sort();
            for (code, count) in rows {
                let _ = writeln!(out, "graphql_errors_total{{code=\"{}\"}} {count}", escape(code));
            }
        }
        let _ = writeln!(out, "# HELP bank_transfers_total Transfers made.");
        let _ = writeln!(out, "# TYPE bank_transfers_total counter");
        let _ = writeln!(out, "bank_transfers_total {}", self.transfers.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP db_statements_total SQL statements sent to the database.");
        let _ = writeln!(out, "# TYPE db_statements_total counter");
        let _ = writeln!(out, "db_statements_total {}", self.statements.load(Ordering::Relaxed));
        let (open, idle) = db.pool_usage();
        let _ = writeln!(out, "# HELP db_pool_connections Database connections, by state.");
        let _ = writeln!(out, "# TYPE db_pool_connections gauge");
        let _ = writeln!(out, "db_pool_connections{{state=\"idle\"}} {idle}");
        let _ = writeln!(out, "db_pool_connections{{state=\"in_use\"}} {}", (open as usize).saturating_sub(idle));
        if let Some(report) = db.replica_report() {
            let _ =
                writeln!(out, "# HELP db_query_snapshots_total Query snapshots opened, on a standby or the primary.");
            let _ = writeln!(out, "# TYPE db_query_snapshots_total counter");
            let _ = writeln!(out, "db_query_snapshots_total{{on=\"standby\"}} {}", report.on_standby);
            let _ = writeln!(out, "db_query_snapshots_total{{on=\"primary\"}} {}", report.on_primary);
            let label = |name: &str| format!("standby=\"{}\"", escape(name));
            let _ =
                writeln!(out, "# HELP db_standby_lag_seconds How far behind the primary each standby is known to be.");
            let _ = writeln!(out, "# TYPE db_standby_lag_seconds gauge");
            for standby in &report.standbys {
                if let Some(lag) = standby.lag {
                    let _ = writeln!(out, "db_standby_lag_seconds{{{}}} {}", label(&standby.name), lag.as_secs_f64());
                }
            }
            let _ = writeln!(out, "# HELP db_standby_usable Whether queries may read on each standby (1) or not (0).");
            let _ = writeln!(out, "# TYPE db_standby_usable gauge");
            for standby in &report.standbys {
                let _ = writeln!(out, "db_standby_usable{{{}}} {}", label(&standby.name), u8::from(standby.usable));
            }
        }
        out
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
