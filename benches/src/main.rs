//! `make bench`: the server under load, beside the database's own limit for the same work, in one run.
//!
//! This file only orchestrates; each job has a module:
//! - [`server`]: the release server as a process, and the kit's bank opened on it;
//! - [`loads`]: the server's loads (transfers, the users page, `me` during a login flood);
//! - [`raw`]: the same work sent straight to PostgreSQL or SQLite, each backend's limit;
//! - [`subscriptions`]: `entryAdded` subscribers under paced transfers, their cost, idle subscriptions' memory;
//! - [`measure`]: closed-loop turns and what they measure; [`connections`]: a client's own connection;
//! - [`hardening`]: what the server's per-request hardening costs the transfer and the users page;
//! - [`report`]: the table, the targets, `results.json` and the latency chart.
//!
//! The run: on PostgreSQL (TEST_DATABASE_URL, a throwaway stock server started by `make bench`) 200 users with
//! funded USD accounts, then each server load in turns with its raw baseline, what the hardening costs the transfer
//! and the users page, then the subscription loads; then on
//! SQLite the transfer and the users page in turns with their raw baselines. It ends by checking the ledger's
//! invariants in both databases. `BENCH_ONLY=<text>` runs only the loads whose names contain it.

mod connections;
mod hardening;
mod loads;
mod measure;
mod raw;
mod report;
mod server;
mod subscriptions;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tests::{Backend, ledger_check};

use crate::loads::{Loads, pick_pair};
use crate::measure::{FEW_ROUNDS, Load, POSTMASTER, ROUNDS, in_turns};
use crate::report::{Run, name};
use crate::server::{Release, Server};

/// Clients of a closed-loop load, each with a connection of its own.
const CONCURRENCY: usize = 16;
/// The PostgreSQL bank's holders.
const USERS: usize = 200;
/// The SQLite bank's holders (sign-ups hash passwords: the setup's cost).
const SQLITE_USERS: usize = 50;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() -> Result<()> {
    let admin_url =
        std::env::var("TEST_DATABASE_URL").map_err(|_| "run through `make bench` (needs TEST_DATABASE_URL)")?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let release =
        Release { binary: root.join("target/release/simple-bank"), log: root.join("target/bench/server.log") };
    if !release.binary.exists() {
        return Err("build the server first: cargo build --release -p simple-bank".into());
    }
    std::fs::create_dir_all(root.join("target/bench"))?;
    std::fs::write(&release.log, "")?;
    let started = Instant::now();
    // BENCH_ONLY=transfer (say) runs only the loads whose names contain it, for a quick look at one of them.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();

    // PostgreSQL: the server, and the same work sent straight to the database.
    let pg_url = raw::fresh_postgres_database(&admin_url, "bench").await?;
    let _ = POSTMASTER.set(raw::postmaster(&pg_url).await?);
    let server = Server::start(&release, &pg_url)?;
    let bank = server.open_bank(Backend::Postgres, USERS).await?;
    let raw = raw::Postgres::connect(&pg_url, CONCURRENCY).await?;
    println!("setup: {USERS} users with funded accounts in {:.1}s", started.elapsed().as_secs_f64());
    let clients = server.clients(CONCURRENCY).await?;
    let transfer = |rng: &mut rand::rngs::ThreadRng| bank.transfer(&clients, pick_pair(bank.holders.len(), rng), 1);
    let mut results = in_turns(
        vec![
            Load::new(name::PG_TRANSFER, Some(&server), transfer),
            Load::new(name::PG_RAW_TRANSFER, None, |rng| raw.transfer(rng)),
            Load::new(name::PG_RAW_NAIVE_TRANSFER, None, |rng| raw.naive_transfer(rng)),
        ],
        ROUNDS,
        &only,
    )
    .await;
    results.extend(
        in_turns(
            vec![
                Load::new(name::PG_USERS, Some(&server), |_| bank.users_page(&clients)),
                Load::new(name::PG_RAW_USERS, None, |_| raw.users_page()),
            ],
            ROUNDS,
            &only,
        )
        .await,
    );
    // What the hardening costs each of those loads, beside what the loads measured of the server's CPU time.
    let hardened: Vec<hardening::Load> =
        [(name::PG_TRANSFER, hardening::Load::Transfer), (name::PG_USERS, hardening::Load::UsersPage)]
            .into_iter()
            .filter(|(load, _)| load.contains(only.as_str()))
            .map(|(_, load)| load)
            .collect();
    let hardening = match hardened.is_empty() {
        true => Vec::new(),
        false => hardening::measure(&pg_url, server::SECRET, bank.clone(), hardened).await?,
    };
    let mut logins_per_second = None;
    if name::PG_ME.contains(only.as_str()) {
        let flood = Arc::new(AtomicU64::new(0));
        let flooding = bank.flood_logins(server.clients(CONCURRENCY).await?, flood.clone());
        let started = Instant::now();
        let me = Load::new(name::PG_ME, Some(&server), |rng| bank.me(&clients, rng));
        results.extend(in_turns(vec![me], FEW_ROUNDS, "").await);
        flooding.abort();
        logins_per_second = Some(flood.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64());
    }
    let mut subscriptions = None;
    eprintln!("{:.0} s: the subscription loads", started.elapsed().as_secs_f64());
    if name::SUBSCRIPTIONS.iter().any(|load| load.contains(only.as_str())) {
        let (rows, figures) = subscriptions::run(&release, &server, &bank, &clients).await?;
        results.extend(rows);
        subscriptions = Some(figures);
    }
    drop(server);
    let pg_total = check_ledger(&pg_url, "PostgreSQL").await?;

    // SQLite: the same two loads, each beside its raw baseline on a copy of the server's database.
    eprintln!("{:.0} s: SQLite", started.elapsed().as_secs_f64());
    let dir = tempfile::tempdir()?;
    let sqlite_file = dir.path().join("bench.db");
    let sqlite_url = format!("sqlite://{}?mode=rwc", sqlite_file.display());
    let server = Server::start(&release, &sqlite_url)?;
    let bank = server.open_bank(Backend::Sqlite, SQLITE_USERS).await?;
    let raw = raw::Sqlite::copy_of(&sqlite_file, &dir.path().join("raw.db"), CONCURRENCY).await?;
    let clients = server.clients(CONCURRENCY).await?;
    let transfer = |rng: &mut rand::rngs::ThreadRng| bank.transfer(&clients, pick_pair(bank.holders.len(), rng), 1);
    results.extend(
        in_turns(
            vec![
                Load::new(name::SQLITE_TRANSFER, Some(&server), transfer),
                Load::new(name::SQLITE_RAW_TRANSFER, None, |rng| raw.transfer(rng)),
            ],
            FEW_ROUNDS,
            &only,
        )
        .await,
    );
    results.extend(
        in_turns(
            vec![
                Load::new(name::SQLITE_USERS, Some(&server), |_| bank.users_page(&clients)),
                Load::new(name::SQLITE_RAW_USERS, None, |_| raw.users_page()),
            ],
            FEW_ROUNDS,
            &only,
        )
        .await,
    );
    drop(server);
    let sqlite_total = check_ledger(&sqlite_url, "SQLite").await?;

    let run = Run {
        results,
        hardening,
        logins_per_second,
        subscriptions,
        pg_total,
        sqlite_total,
        seconds: started.elapsed().as_secs_f64(),
    };
    print!("{}", report::report(&run));
    report::write_outputs(&root, &run)?;
    println!("bench: done in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
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
