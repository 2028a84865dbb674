//! The scale-out topology as `make cluster` starts it (scripts/cluster: a primary, a hot standby, pgbouncer, two
//! server processes, HAProxy), under the bank's workload while first a server process and then the standby go away.
//! Loopback only; about half a minute.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::{Value, json};
use tempfile::TempDir;
use tests::{Backend, Bank, TRANSFER, TestApp, TestDatabase, assert_ledger_consistent, transfer_input};

/// A cluster of the test's own, taken down when the test ends however it ends.
struct Cluster {
    dir: TempDir,
    env: HashMap<String, String>,
}

impl Cluster {
    fn up() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // The script runs PostgreSQL and pgbouncer as `postgres` when root, which must reach the directory.
        let _ = Command::new("chmod").arg("755").arg(dir.path()).status();
        // Taken down on drop from here on, also if it fails to come up whole.
        let mut cluster = Self { dir, env: HashMap::new() };
        let state = cluster.dir.path().join("cluster");
        let output = Self::script(&state).arg("up").output().expect("scripts/cluster runs");
        assert!(output.status.success(), "make cluster failed: {}", String::from_utf8_lossy(&output.stderr));
        let env = std::fs::read_to_string(state.join("cluster.env")).expect("cluster.env");
        cluster.env = env
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        cluster
    }

    fn script(state: &Path) -> Command {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut command = Command::new(root.join("scripts/cluster"));
        command.env("CLUSTER_DIR", state).env("SIMPLE_BANK_BIN", env!("CARGO_BIN_EXE_simple-bank"));
        command
    }

    fn get(&self, name: &str) -> &str {
        self.env.get(name).unwrap_or_else(|| panic!("{name} in cluster.env"))
    }

    /// `scripts/cluster stop PART`.
    fn stop(&self, part: &str) {
        let status = Self::script(&self.dir.path().join("cluster")).args(["stop", part]).status().expect("stop");
        assert!(status.success(), "scripts/cluster stop {part}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Self::script(&self.dir.path().join("cluster")).arg("down").output();
    }
}

/// How one request went: answered (with a body that says), or not answered at all (the balancer's 502, a broken
/// connection).
enum Outcome {
    Answered(Value),
    Failed(String),
}

async fn send(client: &reqwest::Client, url: &str, query: &str, variables: Value, token: &str) -> Outcome {
    let request = client
        .post(format!("{url}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }));
    match request.send().await {
        Ok(response) if response.status().is_success() => match response.json::<Value>().await {
            Ok(body) => Outcome::Answered(body),
            Err(err) => Outcome::Failed(err.to_string()),
        },
        Ok(response) => Outcome::Failed(format!("status {}", response.status())),
        Err(err) => Outcome::Failed(err.to_string()),
    }
}

/// What a client saw, each with when.
#[derive(Default)]
struct Seen {
    /// Transfers acknowledged: their ids.
    acknowledged: Vec<String>,
    /// Totals the banker read.
    totals: Vec<i64>,
    /// Requests that failed, and when each was sent.
    failures: Vec<(Instant, String)>,
    /// Requests answered, and when.
    answered: Vec<Instant>,
}

/// Reads on the standby so far, as the standby itself counts them: scans of `accounts` there. Only query snapshots
/// read tables on the standby (sessions are checked, and everything written, on the primary).
async fn scans_on_standby(standby: &DatabaseConnection) -> i64 {
    let sql = "SELECT CAST(coalesce(sum(coalesce(idx_scan, 0) + coalesce(seq_scan, 0)), 0) AS BIGINT) \
               FROM pg_stat_user_tables WHERE relname = 'accounts'";
    let row = standby.query_one_raw(Statement::from_string(standby.get_database_backend(), sql)).await.expect(sql);
    row.expect("a row").try_get_by_index::<i64>(0).expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bank_behind_the_balancer_loses_nothing_when_a_server_process_and_then_the_standby_go_away() {
    let cluster = Cluster::up();
    let url = cluster.get("CLUSTER_URL").to_owned();
    let database = Arc::new(TestDatabase::existing(cluster.get("PRIMARY_URL").to_owned(), Backend::Postgres));
    let app = TestApp::at(url.clone(), database).await;
    let standby = Database::connect(cluster.get("STANDBY_URL")).await.expect("connect to the standby");
    let bank = Bank::open(&app, 6, 1_000).await;
    let scans_before = scans_on_standby(&standby).await;

    let stop = Arc::new(AtomicBool::new(false));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("a client");
    let n = bank.holders.len();
    let senders = (0..n).map(|from| {
        let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
        let (holder, to) = (bank.holders[from].clone(), bank.holders[(from + 1) % n].account.clone());
        tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut round = 0_i64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let input = transfer_input(&holder.account, &to, 10 + round % 40, "USD");
                let sent = Instant::now();
                match send(&client, &url, TRANSFER, input, &holder.token).await {
                    Outcome::Answered(body) => {
                        seen.answered.push(Instant::now());
                        match body.pointer("/data/createTransfer/transfer/id").and_then(Value::as_str) {
                            Some(id) => seen.acknowledged.push(id.to_owned()),
                            None => {
                                let code = body.pointer("/errors/0/extensions/code").and_then(Value::as_str);
                                if code != Some("INSUFFICIENT_FUNDS") {
                                    seen.failures.push((sent, body.to_string()));
                                }
                            }
                        }
                    }
                    Outcome::Failed(why) => seen.failures.push((sent, why)),
                }
            }
            seen
        })
    });
    let senders: Vec<_> = senders.collect();
    let banker = {
        let (client, url, stop, token) = (client.clone(), url.clone(), stop.clone(), bank.banker.clone());
        let fields: String = bank
            .holders
            .iter()
            .enumerate()
            .map(|(i, holder)| format!("a{i}: account(id: \"{}\") {{ balance }} ", holder.account))
            .collect();
        tokio::spawn(async move {
            let mut seen = Seen::default();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                match send(&client, &url, &format!("{{ {fields} }}"), json!({}), &token).await {
                    Outcome::Answered(body) if body.get("errors").is_none() => {
                        seen.answered.push(Instant::now());
                        let balances = body["data"].as_object().expect("balances").values();
                        let money = |v: &Value| v["balance"].as_str().and_then(|b| b.parse::<i64>().ok());
                        seen.totals.push(balances.map(|v| money(v).expect("a balance")).sum());
                    }
                    Outcome::Answered(body) => seen.failures.push((sent, body.to_string())),
                    Outcome::Failed(why) => seen.failures.push((sent, why)),
                }
            }
            seen
        })
    };

    // All up: the standby serves the banker's reads, as the standby itself counts them.
    let deadline = Instant::now() + Duration::from_secs(15);
    while scans_on_standby(&standby).await <= scans_before {
        assert!(Instant::now() < deadline, "no read reached the standby within 15 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server_killed = Instant::now();
    cluster.stop("server1");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let scans_on_standby_before_it_stopped = scans_on_standby(&standby).await;
    let standby_stopped = Instant::now();
    cluster.stop("standby");
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);

    let mut all = Seen::default();
    for task in senders.into_iter().chain([banker]) {
        let seen = task.await.expect("a client");
        all.acknowledged.extend(seen.acknowledged);
        all.totals.extend(seen.totals);
        all.failures.extend(seen.failures);
        all.answered.extend(seen.answered);
    }

    let reads_on_standby = scans_on_standby_before_it_stopped - scans_before;
    eprintln!(
        "{} transfers acknowledged, {} totals read, {} index scans on the standby, {} requests failed (all within 2 s of the process's death)",
        all.acknowledged.len(),
        all.totals.len(),
        reads_on_standby,
        all.failures.len()
    );
    // No acknowledged transfer lost: the bank finds each one (asked through the balancer, a hundred per request),
    // and the ledger adds up.
    assert!(all.acknowledged.len() > 20, "only {} transfers went through", all.acknowledged.len());
    for ids in all.acknowledged.chunks(100) {
        let fields: String =
            ids.iter().enumerate().map(|(i, id)| format!("t{i}: transfer(id: {}) {{ id }} ", json!(id))).collect();
        let found = app.graphql(&format!("{{ {fields} }}"), json!({}), Some(&bank.banker)).await;
        found.assert_ok();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(found.str(&format!("t{i}/id")), *id, "acknowledged transfer {id} is in the ledger");
        }
    }
    assert_eq!(assert_ledger_consistent(&app.db).await, bank.total);
    // No read saw money appear or vanish.
    assert!(!all.totals.is_empty());
    assert!(all.totals.iter().all(|total| *total == bank.total), "totals seen: {:?}", all.totals);
    // Only requests sent about when the process died failed (before the balancer's checks noticed, within a
    // second), and nothing failed for the standby.
    let late: Vec<_> = all
        .failures
        .iter()
        .filter(|(sent, _)| *sent > server_killed + Duration::from_secs(2))
        .map(|(sent, why)| {
            let after = |moment: Instant| sent.saturating_duration_since(moment).as_secs_f64();
            format!(
                "sent {:.2} s after the kill, {:.2} s after the standby's stop: {why}",
                after(server_killed),
                after(standby_stopped)
            )
        })
        .collect();
    assert!(late.is_empty(), "{} requests failed later: {:#?}", late.len(), &late[..late.len().min(5)]);
    // The surviving process kept answering, after the standby stopped too.
    assert!(all.answered.iter().filter(|at| **at > standby_stopped + Duration::from_secs(1)).count() > 20);
}
