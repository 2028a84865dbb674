//! What a run prints and writes: one table of every load with its ratio to its baseline, the subscription figures,
//! the targets met and missed, `target/bench/results.json`, and the latency chart `latency.svg` (written to
//! `target/bench/` and `docs/bench/`, where the README shows it).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::Result;
use crate::hardening;
use crate::measure::{Measured, median};
use crate::subscriptions::Figures;

/// Every load's name: a row of the table. `<backend> <server or raw>: <load>[, how]`; the chart groups rows by
/// `<load>`.
pub mod name {
    pub const PG_TRANSFER: &str = "pg server: transfer";
    pub const PG_RAW_TRANSFER: &str = "pg raw: transfer, one function call";
    pub const PG_RAW_NAIVE_TRANSFER: &str = "pg raw: transfer, 7 statements";
    pub const PG_USERS: &str = "pg server: 20 users with accounts";
    pub const PG_RAW_USERS: &str = "pg raw: 20 users with accounts, 2 queries";
    pub const PG_ME: &str = "pg server: me during a login flood";
    pub const TRANSFER_WITHOUT_SUBSCRIBERS: &str = "pg server: transfer among 100 accounts, no subscribers";
    pub const TRANSFER_WITH_SUBSCRIBERS: &str = "pg server: transfer among 100 accounts, 1,000 subscribers";
    pub const DELIVERIES: &str = "pg server: entryAdded deliveries, 200 transfers/s";
    pub const SQLITE_TRANSFER: &str = "sqlite server: transfer";
    pub const SQLITE_RAW_TRANSFER: &str = "sqlite raw: transfer";
    pub const SQLITE_USERS: &str = "sqlite server: 20 users with accounts";
    pub const SQLITE_RAW_USERS: &str = "sqlite raw: 20 users with accounts, 2 queries";
    /// The subscription loads' rows, which run together.
    pub const SUBSCRIPTIONS: [&str; 3] = [TRANSFER_WITHOUT_SUBSCRIBERS, TRANSFER_WITH_SUBSCRIBERS, DELIVERIES];
}

/// Each load beside what it is judged against, and the baseline's short name in the table.
const BASELINES: [(&str, &str, &str); 7] = [
    (name::PG_TRANSFER, name::PG_RAW_TRANSFER, "raw"),
    (name::PG_USERS, name::PG_RAW_USERS, "raw"),
    (name::TRANSFER_WITH_SUBSCRIBERS, name::TRANSFER_WITHOUT_SUBSCRIBERS, "without"),
    (name::SQLITE_TRANSFER, name::SQLITE_RAW_TRANSFER, "raw"),
    (name::SQLITE_TRANSFER, name::PG_TRANSFER, "pg"),
    (name::SQLITE_USERS, name::SQLITE_RAW_USERS, "raw"),
    (name::SQLITE_USERS, name::PG_USERS, "pg"),
];

/// Whether two loads took turns (so that their ratio is one of rounds): all but SQLite's and PostgreSQL's, which
/// ran minutes apart on different servers.
fn took_turns(load: &str, baseline: &str) -> bool {
    load.split(' ').next() == baseline.split(' ').next()
}

/// Everything one run measured.
pub struct Run {
    pub results: Vec<Measured>,
    /// What the hardening costs the transfer and the users page, those measured.
    pub hardening: Vec<hardening::Cost>,
    /// Logins a second during the `me` load.
    pub logins_per_second: Option<f64>,
    pub subscriptions: Option<Figures>,
    /// The money in each bank when the ledger checks passed.
    pub pg_total: i64,
    pub sqlite_total: i64,
    /// The run's time, the build excluded.
    pub seconds: f64,
}

impl Run {
    fn find(&self, name: &str) -> Option<&Measured> {
        self.results.iter().find(|m| m.name == name)
    }

    /// Each round's throughput ratio of two loads that took turns (each pair ran back to back); nothing for loads
    /// that did not.
    fn rounds(&self, load: &str, baseline: &str) -> Vec<f64> {
        let (Some(a), Some(b)) = (self.find(load), self.find(baseline)) else { return Vec::new() };
        if !took_turns(load, baseline) {
            return Vec::new();
        }
        a.turn_throughputs.iter().zip(&b.turn_throughputs).filter(|(_, b)| **b > 0.0).map(|(a, b)| a / b).collect()
    }

    /// What the hardening costs a load ([`crate::hardening`]), with its row in the table.
    fn hardening(&self, load: hardening::Load) -> Option<(&hardening::Cost, &Measured)> {
        let cost = self.hardening.iter().find(|cost| cost.load == load)?;
        let row = match load {
            hardening::Load::Transfer => name::PG_TRANSFER,
            hardening::Load::UsersPage => name::PG_USERS,
        };
        Some((cost, self.find(row)?))
    }

    /// A ratio of two loads: the median of their rounds' ratios when they took turns, else of their throughputs.
    fn ratio(&self, load: &str, baseline: &str) -> Option<f64> {
        if took_turns(load, baseline) {
            return median(self.rounds(load, baseline));
        }
        let (a, b) = (self.find(load)?, self.find(baseline)?);
        (b.throughput > 0.0).then(|| a.throughput / b.throughput)
    }
}

/// The loads whose hardening is measured, with their names in the target's line and in results.json; and the bar:
/// the hardening may cost each at most this share of the server's CPU time per request under the load.
const HARDENED: [(&str, hardening::Load); 2] =
    [("transfer", hardening::Load::Transfer), ("users page", hardening::Load::UsersPage)];
const HARDENING_BAR: f64 = 0.05;

/// What the hardening costs a load, as a share: of the server's CPU time per request under the load (the target's),
/// and of the in-process router's (larger: it leaves out HTTP and the contention of a loaded server).
fn hardening_shares(cost: &hardening::Cost, row: &Measured) -> (f64, f64) {
    let server = row.cpu_us.map_or(f64::NAN, |cpu| cpu.server);
    (cost.per_request_us() / server, cost.per_request_us() / cost.with_us())
}

pub fn report(run: &Run) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<58} {:>7} {:>7} {:>7} {:>6} {:>7} {:>17}  {:<18}  errors",
        "load (closed loop, 16 connections)",
        "rate/s",
        "p50 ms",
        "p99 ms",
        "RSS MB",
        "SQL/req",
        "CPU µs srv/db/cli",
        "vs baseline"
    );
    for m in &run.results {
        let baselines: Vec<String> = BASELINES
            .iter()
            .filter(|(load, ..)| *load == m.name)
            .filter_map(|(load, baseline, short)| run.ratio(load, baseline).map(|r| format!("{r:.2}× {short}")))
            .collect();
        let _ = writeln!(
            out,
            "{:<58} {:>7.0} {:>7.2} {:>7.2} {:>6} {:>7} {:>17}  {:<18}  {}",
            m.name,
            m.throughput,
            m.p50_ms,
            m.p99_ms,
            m.rss_mb.map_or("-".into(), |r| format!("{r:.1}")),
            m.statements_per_request.map_or("-".into(), |s| format!("{s:.2}")),
            m.cpu_us.map_or("-".into(), |c| format!("{:.0}/{:.0}/{:.0}", c.server, c.database, c.client)),
            baselines.join(", "),
            if m.errors.is_empty() { "none".to_owned() } else { format!("{:?}", m.errors) },
        );
    }
    if let Some(logins) = run.logins_per_second {
        let _ = writeln!(out, "(the login flood during the `me` load: {logins:.0} logins/s)");
    }
    if let Some(figures) = &run.subscriptions {
        subscriptions(&mut out, figures);
    }
    let _ = writeln!(out, "\nratios and targets:");
    for (target, outcome) in targets(run) {
        let _ = match outcome {
            Some((met, value)) => writeln!(out, "  [{}] {target}: {value}", if met { "met" } else { "MISSED" }),
            None => writeln!(out, "  [not run] {target}"),
        };
    }
    let _ = writeln!(
        out,
        "\nledger invariants hold (balance = Σ entries, none negative, money conserved): PostgreSQL total {}, SQLite total {}",
        run.pg_total, run.sqlite_total
    );
    out
}

fn subscriptions(out: &mut String, figures: &Figures) {
    let (paced, idle) = (&figures.paced, &figures.idle);
    let _ = writeln!(
        out,
        "\nsubscriptions on PostgreSQL: 1,000 subscribers (10 on each of 100 accounts, a socket each), transfers between those accounts paced at 200/s for {:.0} s",
        paced.seconds
    );
    let _ = writeln!(
        out,
        "  deliveries: {} expected ({} acknowledged transfers × 2 entries × 10 subscribers, {:.0}/s), {} delivered ({:.0}/s), {} missing, {} duplicated, {} of entries no acknowledged transfer wrote",
        paced.expected,
        paced.transfers,
        paced.expected as f64 / paced.seconds,
        paced.delivered,
        paced.delivered as f64 / paced.seconds,
        paced.missing(),
        paced.duplicated,
        paced.unexpected
    );
    let _ = writeln!(
        out,
        "  from the transfer's acknowledgement to the subscriber's receipt: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} arrived before the acknowledgement, counted as 0)",
        paced.p50_ms, paced.p99_ms, paced.max_ms, paced.before_ack
    );
    let _ = writeln!(
        out,
        "  database statements per delivery: {} (the server's statements meanwhile, less the transfers' own as measured without subscribers)",
        paced.statements_per_delivery.map_or("-".into(), |s| format!("{s:.3}"))
    );
    let _ = writeln!(
        out,
        "  {} idle subscriptions (100 sockets × 100) on a fresh server process: {} KiB of resident memory each, {} statements in {:.0} s",
        idle.subscriptions,
        idle.kib_per_subscription.map_or("-".into(), |k| format!("{k:.1}")),
        idle.statements.map_or("-".into(), |s| s.to_string()),
        idle.seconds
    );
}

/// Each target with whether it was met and the value behind it; `None` when its loads did not run (BENCH_ONLY).
fn targets(run: &Run) -> Vec<(&'static str, Option<(bool, String)>)> {
    let at_least = |load: &str, baseline: &str, bar: f64| {
        let each: Vec<String> = run.rounds(load, baseline).iter().map(|r| format!("{r:.2}")).collect();
        let how = if each.is_empty() {
            "of the median turns".to_owned()
        } else {
            format!("the median of its rounds: {}", each.join(" "))
        };
        run.ratio(load, baseline).map(|v| (v >= bar, format!("{v:.2}×, {how}")))
    };
    let at_most = |value: Option<f64>, bar: f64, unit: &str| value.map(|v| (v <= bar, format!("{v:.2}{unit}")));
    let p99_ratio = run
        .find(name::PG_TRANSFER)
        .zip(run.find(name::PG_RAW_TRANSFER))
        .map(|(server, raw)| server.p99_ms / raw.p99_ms);
    // Sockets and subscriptions have a memory target of their own.
    let rss = run
        .results
        .iter()
        .filter(|m| !name::SUBSCRIPTIONS.contains(&m.name.as_str()))
        .filter_map(|m| m.rss_mb)
        .reduce(f64::max);
    let sqlite: Vec<&Measured> = run.results.iter().filter(|m| m.name.starts_with("sqlite server")).collect();
    let paced = run.subscriptions.as_ref().map(|f| &f.paced);
    let idle = run.subscriptions.as_ref().map(|f| &f.idle);
    let hardening: Option<Vec<(&str, &hardening::Cost, &Measured)>> =
        HARDENED.iter().map(|(short, load)| run.hardening(*load).map(|(cost, row)| (*short, cost, row))).collect();
    let hardening = hardening.map(|costs| {
        let shares: Vec<(f64, f64)> = costs.iter().map(|(_, cost, row)| hardening_shares(cost, row)).collect();
        let met = shares.iter().all(|(of_server, _)| *of_server <= HARDENING_BAR);
        let each: Vec<String> = costs
            .iter()
            .zip(&shares)
            .map(|((short, cost, row), (of_server, of_router))| {
                let rounds: Vec<String> =
                    cost.rounds.iter().map(|(with, without)| format!("{:.1}", with - without)).collect();
                format!(
                    "{short} {} of the server's {:.0} µs a request, {} of the router's {:.0} ({:.1} µs, rounds {})",
                    percent(*of_server),
                    row.cpu_us.map_or(f64::NAN, |cpu| cpu.server),
                    percent(*of_router),
                    cost.with_us(),
                    cost.per_request_us(),
                    rounds.join(" ")
                )
            })
            .collect();
        (met, format!("{}; CPU time a request with − without, in-process", each.join("; ")))
    });
    vec![
        ("transfers ≥ 0.5 × raw one-call transfer", at_least(name::PG_TRANSFER, name::PG_RAW_TRANSFER, 0.5)),
        ("transfer p99 ≤ 1.5 × raw one-call transfer p99", at_most(p99_ratio, 1.5, "×")),
        ("20 users with accounts ≥ 0.5 × raw queries", at_least(name::PG_USERS, name::PG_RAW_USERS, 0.5)),
        ("SQLite transfers ≥ 1.5 × PostgreSQL server's", at_least(name::SQLITE_TRANSFER, name::PG_TRANSFER, 1.5)),
        ("SQLite 20 users ≥ 1.5 × PostgreSQL server's", at_least(name::SQLITE_USERS, name::PG_USERS, 1.5)),
        ("me p99 ≤ 20 ms during the login flood", at_most(run.find(name::PG_ME).map(|m| m.p99_ms), 20.0, " ms")),
        ("server RSS ≤ 64 MB, subscriptions aside", at_most(rss, 64.0, " MB")),
        (
            "no errors on SQLite",
            (!sqlite.is_empty()).then(|| {
                let errors: u64 = sqlite.iter().flat_map(|m| m.errors.values()).sum();
                let requests: u64 = sqlite.iter().map(|m| m.requests).sum();
                (errors == 0, format!("{errors} errors in {requests} requests"))
            }),
        ),
        (
            "every subscription event delivered, once",
            paced.map(|p| {
                let exact = p.missing() == 0 && p.duplicated == 0 && p.unexpected == 0;
                (
                    exact,
                    format!("{} of {} ({} missing, {} duplicated)", p.delivered, p.expected, p.missing(), p.duplicated),
                )
            }),
        ),
        ("delivery p99 ≤ 50 ms at 4,000 deliveries/s", at_most(paced.map(|p| p.p99_ms), 50.0, " ms")),
        (
            "database statements per delivery ≤ 0.1 (one read per entry, shared by its 10 subscribers)",
            at_most(paced.and_then(|p| p.statements_per_delivery), 0.1, ""),
        ),
        ("≤ 10 KiB per idle subscription", at_most(idle.and_then(|i| i.kib_per_subscription), 10.0, " KiB")),
        (
            "transfers with 1,000 subscribers ≥ 0.9 × without",
            at_least(name::TRANSFER_WITH_SUBSCRIBERS, name::TRANSFER_WITHOUT_SUBSCRIBERS, 0.9),
        ),
        ("hardening ≤ 5% of transfer / of the users page", hardening),
        ("make bench ≤ 300 s, the build excluded", Some((run.seconds <= 300.0, format!("{:.0} s", run.seconds)))),
    ]
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// Writes `target/bench/results.json` and the chart, to `target/bench/latency.svg` and `docs/bench/latency.svg`.
pub fn write_outputs(root: &Path, run: &Run) -> Result<()> {
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let loads: Vec<Value> = run
        .results
        .iter()
        .map(|m| {
            let baselines: serde_json::Map<String, Value> = BASELINES
                .iter()
                .filter(|(load, ..)| *load == m.name)
                .filter_map(|(load, baseline, _)| Some((baseline.to_string(), json!(run.ratio(load, baseline)?))))
                .collect();
            json!({ "load": m.name, "throughput": m.throughput, "turn_throughputs": m.turn_throughputs,
                    "p50_ms": m.p50_ms, "p99_ms": m.p99_ms,
                    "rss_mb": m.rss_mb, "sql_statements_per_request": m.statements_per_request,
                    "cpu_us_per_request": m.cpu_us.map(|c| json!({ "server": c.server, "database": c.database, "client": c.client })),
                    "ratio_to": baselines, "requests": m.requests, "errors": m.errors })
        })
        .collect();
    let subscriptions = run.subscriptions.as_ref().map(|Figures { paced, idle }| {
        json!({ "paced": { "seconds": paced.seconds, "transfers": paced.transfers, "expected": paced.expected,
                           "delivered": paced.delivered, "duplicated": paced.duplicated, "unexpected": paced.unexpected,
                           "before_ack": paced.before_ack, "p50_ms": paced.p50_ms, "p99_ms": paced.p99_ms,
                           "max_ms": paced.max_ms, "statements_per_delivery": paced.statements_per_delivery },
                "idle": { "subscriptions": idle.subscriptions, "kib_per_subscription": idle.kib_per_subscription,
                          "statements": idle.statements, "seconds": idle.seconds } })
    });
    let hardening: serde_json::Map<String, Value> = HARDENED
        .iter()
        .filter_map(|(short, load)| {
            let (cost, row) = run.hardening(*load)?;
            let (of_server, of_router) = hardening_shares(cost, row);
            let rounds: Vec<Value> =
                cost.rounds.iter().map(|(with, without)| json!({ "with_us": with, "without_us": without })).collect();
            Some((
                short.replace(' ', "_"),
                json!({ "us_per_request": cost.per_request_us(), "share_of_server": of_server,
                        "share_of_router": of_router, "router_us_per_request": cost.with_us(), "rounds": rounds }),
            ))
        })
        .collect();
    let hardening = json!({ "bar": HARDENING_BAR, "loads": hardening });
    let json = json!({ "loads": loads, "logins_per_second": run.logins_per_second, "subscriptions": subscriptions,
                       "hardening": hardening, "seconds": run.seconds });
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(&json)?)?;
    let chart = svg(&run.results);
    std::fs::write(dir.join("latency.svg"), &chart)?;
    let docs = root.join("docs/bench");
    std::fs::create_dir_all(&docs)?;
    std::fs::write(docs.join("latency.svg"), &chart)?;
    println!("wrote target/bench/results.json, target/bench/latency.svg and docs/bench/latency.svg");
    Ok(())
}

/// The load a row measures: its name after the side (`pg server: `) and before any `, how`.
fn load_of(name: &str) -> &str {
    let load = name.split_once(": ").map_or(name, |(_, load)| load);
    load.split(',').next().unwrap_or(load)
}

/// Horizontal bars of p50 (dark) and p99 (light) latency, the rows grouped by load so that each server row stands
/// beside its raw baseline; server rows blue, raw rows grey. The scale is logarithmic: latencies here range from
/// 2 ms to a second, and the question is how many times slower the server is than the raw baseline.
fn svg(results: &[Measured]) -> String {
    let mut groups: Vec<(&str, Vec<&Measured>)> = Vec::new();
    for m in results {
        match groups.iter_mut().find(|(load, _)| *load == load_of(&m.name)) {
            Some((_, rows)) => rows.push(m),
            None => groups.push((load_of(&m.name), vec![m])),
        }
    }
    let (width, row, left, top) = (1000.0, 26.0, 420.0, 56.0);
    // From 0.5 ms to the power of ten at or above the largest p99.
    let decades = results.iter().map(|m| m.p99_ms).fold(1.0, f64::max).log10().ceil();
    let span = width - left - 120.0;
    let x = |ms: f64| left + span * ((ms.max(0.5) * 2.0).log10() / (decades + 2f64.log10()));
    let height = top + 10.0 + row * (results.len() + groups.len()) as f64;
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="13"><rect width="100%" height="100%" fill="white"/><text x="10" y="22" font-size="15">Latency, ms (log scale): p50 (dark) and p99 (light); the server blue, the raw database grey</text>"##
    );
    for decade in 0..=decades as i32 {
        let ms = 10f64.powi(decade);
        let _ = write!(
            out,
            r##"<line x1="{gx:.1}" y1="{top}" x2="{gx:.1}" y2="{height}" stroke="#eeeeee"/><text x="{gx:.1}" y="{ty}" text-anchor="middle" fill="#666666">{ms}</text>"##,
            gx = x(ms),
            ty = top - 6.0,
        );
    }
    let mut y = top;
    for (load, rows) in groups {
        let _ = write!(out, r#"<text x="10" y="{}" font-weight="bold">{}</text>"#, y + 17.0, escape(load));
        y += row;
        for m in rows {
            let (p50_fill, p99_fill) =
                if m.name.contains(" raw: ") { ("#737373", "#d9d9d9") } else { ("#3182bd", "#9ecae1") };
            let _ = write!(
                out,
                r#"<text x="24" y="{ty}">{name}</text><rect x="{left}" y="{y}" width="{w99:.1}" height="20" fill="{p99_fill}"/><rect x="{left}" y="{y}" width="{w50:.1}" height="20" fill="{p50_fill}"/><text x="{tx:.1}" y="{ty}">{p50:.1} / {p99:.1}</text>"#,
                ty = y + 15.0,
                name = escape(&m.name),
                w99 = x(m.p99_ms) - left,
                w50 = x(m.p50_ms) - left,
                tx = x(m.p99_ms) + 6.0,
                p50 = m.p50_ms,
                p99 = m.p99_ms,
            );
            y += row;
        }
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;")
}
