//! How the server holds on its worst day: hostile requests, a database that goes away, a crash in the middle of
//! transfers, SERIALIZABLE isolation, and two replicas on one database. Every case is bounded in time and talks
//! to loopback addresses only; each fault scenario ends by checking the ledger in the database itself.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use tests::{
    Backend, Bank, JWT_SECRET, PgServer, TRANSFER, TestApp, TestDatabase, assert_ledger_consistent, on_both_backends,
    spawn_app, spawn_app_on, transfer_input,
};

/// The `simple-bank` binary running as its own process, so a test can kill it.
struct ServerProcess(Child);

impl ServerProcess {
    /// Starts the binary on `database` and waits (at most 30 s) until it answers.
    async fn start(database: &Arc<TestDatabase>) -> (Self, TestApp) {
        // Both bound at once, so that they differ.
        let listeners = [TcpListener::bind("127.0.0.1:0"), TcpListener::bind("127.0.0.1:0")];
        let [port, metrics_port] = listeners.map(|l| l.and_then(|l| l.local_addr()).expect("a free port").port());
        let child = Command::new(env!("CARGO_BIN_EXE_simple-bank"))
            .env_clear()
            .env("DATABASE_URL", &database.url)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("JWT_SECRET", JWT_SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the server binary starts");
        let server = Self(child);
        // The test's own connection opens only once the server has migrated the file and recovered its WAL after a
        // crash: SQLite refuses to switch a file to WAL, or to open one mid-recovery, while another process holds it.
        let (address, probe) = (format!("http://127.0.0.1:{port}"), reqwest::Client::new());
        let deadline = Instant::now() + Duration::from_secs(30);
        while !probe.get(format!("{address}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "the server did not start within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let app =
            TestApp::at(address, database.clone()).await.with_metrics_at(format!("http://127.0.0.1:{metrics_port}"));
        (server, app)
    }

    /// SIGKILL: no shutdown, no flush, nothing finished.
    fn kill(&mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("the killed server exits");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `check` and asserts it finished within 2 s.
async fn within_two_seconds<T>(what: &str, check: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(2), check).await;
    result.unwrap_or_else(|_| panic!("{what}: no answer within 2 s (started {:?} ago)", started.elapsed()))
}

async fn post_raw(app: &TestApp, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}/graphql", app.address))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("an answer");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn code(body: &Value) -> Option<&str> {
    body.pointer("/errors/0/extensions/code").and_then(Value::as_str)
}

async fn hostile_requests_are_refused_quickly_and_clearly_and_the_server_stays_healthy(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    let banker = app.banker("banker").await;

    let (status, body) = within_two_seconds("invalid JSON", post_raw(&app, r#"{"query": "{ me"#)).await;
    assert_eq!((status, code(&body)), (400, Some("BAD_REQUEST")), "invalid JSON: {body}");

    let (status, body) = within_two_seconds("empty body", post_raw(&app, "")).await;
    assert_eq!((status, code(&body)), (400, Some("BAD_REQUEST")), "empty body: {body}");

    // 20 MB announced and the first 64 KiB sent: refused from the announced length alone, without waiting for more.
    let announced = format!("Content-Length: {}", 20 * 1024 * 1024);
    let answer = within_two_seconds("20 MB body", app.post_raw_http(&[&announced], &[b' '; 64 * 1024])).await;
    assert_eq!(answer.status, 413, "a 20 MB body is refused as too large: {answer:?}");

    // MAX_QUERY_DEPTH is 16. The selection nests through `entries(first: 1)`, whose page of one keeps the cost
    // low, so that only the depth decides: 15 nested fields and a leaf answered, 16 and a leaf refused.
    let account = app.open_account(&alice, "USD").await;
    let deep = |depth: usize| {
        let cycle = ["entries(first: 1)", "edges", "node", "account"];
        // The leaf fits the type of the field it ends: an account, a page, an edge or an entry.
        let leaf = ["id", "pageInfo", "cursor", "amount"][(depth - 2) % 4];
        let fields: Vec<&str> = (1..depth - 1).map(|i| cycle[(i - 1) % 4]).collect();
        let leaf = if leaf == "pageInfo" { "pageInfo { hasNextPage }" } else { leaf };
        format!("{{ account(id: \"{account}\") {{ {} {{ {leaf} {}}} }}", fields.join(" { "), "} ".repeat(fields.len()))
    };
    let response = within_two_seconds("depth 16", app.graphql(&deep(16), json!({}), Some(&alice))).await;
    response.assert_ok();
    let response = within_two_seconds("depth 17", app.graphql(&deep(17), json!({}), Some(&alice))).await;
    assert!(response.0["data"].is_null(), "depth 17 must not run: {:#}", response.0);
    assert_eq!(response.error_code(), Some("GRAPHQL_VALIDATION_FAILED"), "{:#}", response.0);

    let aliases: String = (0..5000).map(|i| format!("a{i}: me {{ username }} ")).collect();
    let response = within_two_seconds("5000 aliases", app.graphql(&format!("{{ {aliases} }}"), json!({}), None)).await;
    assert_eq!(response.error_code(), Some("QUERY_COST_EXCEEDED"), "5000 aliases");

    let logins: String = (0..200)
        .map(|i| {
            format!(r#"l{i}: login(input: {{username: "alice", password: "wrong password {i}"}}) {{ accessToken }} "#)
        })
        .collect();
    let response =
        within_two_seconds("200 logins", app.graphql(&format!("mutation {{ {logins} }}"), json!({}), None)).await;
    assert_eq!(response.error_code(), Some("TOO_MANY_PASSWORD_FIELDS"), "one hash per request: {:#}", response.0);
    let wrong = "mutation { login(input: {username: \"alice\", password: \"wrong password\"}) { accessToken } }";
    let guesses = (0..6).map(|_| app.graphql(wrong, json!({}), None));
    let codes: Vec<Option<String>> = within_two_seconds("6 wrong logins", futures::future::join_all(guesses))
        .await
        .iter()
        .map(|response| response.error_code().map(str::to_owned))
        .collect();
    assert!(codes.iter().all(|c| matches!(c.as_deref(), Some("INVALID_CREDENTIALS" | "RATE_LIMITED"))), "{codes:?}");
    let login = "mutation { login(input: {username: \"alice\", password: \"correct horse battery\"}) { accessToken } }";
    let after_flood = app.graphql(login, json!({}), None).await;
    assert_eq!(after_flood.error_code(), Some("RATE_LIMITED"), "the flood counted: {:#}", after_flood.0);
    assert!(after_flood.0.pointer("/errors/0/extensions/retryAfter").is_some_and(Value::is_u64), "a retry hint");

    let batch: Vec<Value> = (0..500).map(|_| json!({ "query": "{ __typename }" })).collect();
    let (status, body) = within_two_seconds("batch of 500", post_raw(&app, Value::Array(batch).to_string())).await;
    assert_eq!((status, code(&body)), (400, Some("BATCH_NOT_SUPPORTED")), "{body}");

    let sql = "'; DROP TABLE users; --";
    let (create, login_sql, lookup) = within_two_seconds("SQL fragments in every string argument", async {
        let create = "mutation($s: String!) { createUser(input: {username: $s, password: $s, fullName: $s, email: $s}) { username } }";
        let login = "mutation($s: String!) { login(input: {username: $s, password: $s}) { accessToken } }";
        let lookup = "query($s: String!) { user(username: $s) { username } }";
        (
            app.graphql(create, json!({ "s": sql }), None).await,
            app.graphql(login, json!({ "s": sql }), None).await,
            app.graphql(lookup, json!({ "s": "' OR 1=1 --" }), Some(&banker)).await,
        )
    })
    .await;
    assert_eq!(create.error_code(), Some("BAD_USER_INPUT"));
    assert_eq!(login_sql.error_code(), Some("INVALID_CREDENTIALS"));
    assert_eq!(lookup.data("user"), &Value::Null);
    let stored = app
        .graphql(
            "mutation($n: String!) { updateUser(input: {fullName: $n}) { fullName } }",
            json!({ "n": "Robert'); DROP TABLE accounts;--" }),
            Some(&alice),
        )
        .await;
    assert_eq!(stored.str("updateUser/fullName"), "Robert'); DROP TABLE accounts;--", "stored as data, not run");

    let huge_page = within_two_seconds(
        "first: 100000000",
        app.graphql("{ users(first: 100000000) { edges { cursor } } }", json!({}), Some(&banker)),
    )
    .await;
    assert_eq!(huge_page.error_code(), Some("BAD_USER_INPUT"));

    assert!(app.is_alive().await, "the server is healthy afterwards");
    let users = app.graphql("{ users(first: 10) { edges { node { username } } } }", json!({}), Some(&banker)).await;
    assert_eq!(users.data("users/edges").as_array().map(Vec::len), Some(2), "and every table is still there");
}

/// A transfer whose answer takes the server a while to put together after the commit (more reads through the
/// loaders), so that a crash often falls between a commit and its answer: the case the retries must replay.
const TRANSFER_AND_HISTORY: &str = "mutation($input: CreateTransferInput!) { createTransfer(input: $input) {
    transfer { id fromAccount { entries(first: 50) { edges { node { amount transfer { toAccount { owner {
    username } } } } } } } } } }";

async fn a_crash_in_the_middle_of_transfers_loses_no_acknowledged_transfer_and_duplicates_none(backend: Backend) {
    crash_while_transferring(backend, 8, TRANSFER_AND_HISTORY, 60).await;
}

/// Many clients at once keep SQLite's writer committing batches of transfers, so the crash falls in the middle of
/// one: what was acknowledged had committed with its batch, what was not may or may not have, never in part.
async fn a_crash_in_the_middle_of_a_batch_of_concurrent_transfers_keeps_every_acknowledged_one_exactly_once(
    backend: Backend,
) {
    crash_while_transferring(backend, 64, TRANSFER, 300).await;
}

/// Starts the server binary on a fresh database, has `clients` clients send `document` (a keyed transfer) until
/// `acknowledged_before_the_crash` transfers were acknowledged, kills the server with SIGKILL and starts it again on
/// the same database. Then every acknowledged transfer is there, retrying it with its key answers it again and
/// moves nothing (so the replay of a committed transfer is always tested, not only when the crash happens to fall
/// between a commit and its answer), every unanswered one retried is made or replayed exactly once, and the ledger
/// adds up.
async fn crash_while_transferring(
    backend: Backend,
    clients: usize,
    document: &'static str,
    acknowledged_before_the_crash: usize,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let database = Arc::new(TestDatabase::empty(backend).await);
    let (mut server, app) = ServerProcess::start(&database).await;
    let bank = Arc::new(Bank::open(&app, 4, 100_000).await);
    let app = Arc::new(app);
    let acknowledgements = Arc::new(tokio::sync::Notify::new());
    let acknowledged_so_far = Arc::new(AtomicUsize::new(0));

    // Clients send transfers with unique idempotency keys until the server dies under them.
    let clients: Vec<_> = (0..clients)
        .map(|c| {
            let (app, bank) = (app.clone(), bank.clone());
            let (acknowledgements, acknowledged_so_far) = (acknowledgements.clone(), acknowledged_so_far.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut unanswered = None;
                for n in 0..200 {
                    let (from, to) = (c % 4, (c + 1 + n % 3) % 4);
                    let mut input =
                        transfer_input(&bank.holders[from].account, &bank.holders[to].account, 1 + n % 10, "USD");
                    let key = format!("client{c}-{n}");
                    input["input"]["idempotencyKey"] = json!(key);
                    let sent = app
                        .client
                        .post(format!("{}/graphql", app.address))
                        .bearer_auth(&bank.holders[from].token)
                        .json(&json!({ "query": document, "variables": input }))
                        .send()
                        .await;
                    let body = match sent {
                        Ok(response) => response.json::<Value>().await.ok(),
                        Err(_) => None,
                    };
                    match body.as_ref().and_then(|b| b.pointer("/data/createTransfer/transfer/id")) {
                        Some(id) => {
                            acknowledged.push((from, id.as_str().expect("an id").to_owned(), input));
                            acknowledged_so_far.fetch_add(1, Ordering::SeqCst);
                            acknowledgements.notify_one();
                        }
                        None => {
                            unanswered = Some((from, key, input));
                            break;
                        }
                    }
                }
                (acknowledged, unanswered)
            })
        })
        .collect();
    let counted = async {
        while acknowledged_so_far.load(Ordering::SeqCst) < acknowledged_before_the_crash {
            acknowledgements.notified().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), counted).await.expect("transfers acknowledged within 60 s");
    server.kill();
    let mut acknowledged = Vec::new();
    let mut unanswered = Vec::new();
    for client in clients {
        let (acked, pending) = client.await.expect("a client task");
        acknowledged.extend(acked);
        unanswered.extend(pending);
    }
    assert!(acknowledged.len() >= acknowledged_before_the_crash, "{} acknowledged", acknowledged.len());
    assert!(!unanswered.is_empty(), "the crash left requests unanswered");

    let (_server, app) = ServerProcess::start(&database).await;
    // Every acknowledged transfer survived the crash, and retrying it answers it again and makes no other.
    let stored = ids(&app, "SELECT id FROM transfers").await;
    for (from, id, input) in &acknowledged {
        assert!(stored.contains(id), "acknowledged transfer {id} is in the database");
        let retried = app.graphql(TRANSFER, input.clone(), Some(&bank.holders[*from].token)).await;
        assert_eq!(&retried.assert_ok().str("createTransfer/transfer/id"), id, "a retry of {id} replays it");
    }
    // A client retrying what it never got an answer for: a transfer that committed before the crash is replayed
    // (its id answered again), one that did not is made now; either way, once.
    for (from, key, input) in &unanswered {
        let committed = ids(&app, &format!("SELECT id FROM transfers WHERE idempotency_key = '{key}'")).await;
        let retried = app.graphql(TRANSFER, input.clone(), Some(&bank.holders[*from].token)).await;
        let id = retried.assert_ok().str("createTransfer/transfer/id");
        if let [before_the_crash] = committed.as_slice() {
            assert_eq!(&id, before_the_crash, "{key}: committed before the crash, so replayed");
        }
        let again = app.graphql(TRANSFER, input.clone(), Some(&bank.holders[*from].token)).await;
        assert_eq!(again.str("createTransfer/transfer/id"), id, "a second retry replays the first");
        let made = ids(&app, &format!("SELECT id FROM transfers WHERE idempotency_key = '{key}'")).await;
        assert_eq!(made, [id], "{key}: exactly one transfer");
    }
    let transfers = app.count("SELECT count(*) FROM transfers").await;
    assert_eq!(transfers as usize, acknowledged.len() + unanswered.len(), "one transfer per request, none repeated");
    assert_eq!(assert_ledger_consistent(&app.db).await, bank.total);
}

/// The transfer keys a query returns, as the API's global ids.
async fn ids(app: &TestApp, sql: &str) -> Vec<String> {
    let rows = app.db.query_all_raw(Statement::from_string(app.db.get_database_backend(), sql)).await;
    let keys = rows.expect("a query").into_iter().map(|row| row.try_get_by_index::<i64>(0).expect("a key"));
    keys.map(|key| tests::global_id("Transfer", key)).collect()
}

on_both_backends!(
    hostile_requests_are_refused_quickly_and_clearly_and_the_server_stays_healthy,
    a_crash_in_the_middle_of_transfers_loses_no_acknowledged_transfer_and_duplicates_none,
    a_crash_in_the_middle_of_a_batch_of_concurrent_transfers_keeps_every_acknowledged_one_exactly_once,
);

/// PostgreSQL going away and coming back: requests fail fast and clearly, readiness says so, and the server
/// recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_fails_requests_fast_and_the_server_recovers_by_itself() {
    let postgres = PgServer::start();
    let app = spawn_app_on(TestDatabase::on_postgres(&postgres.url()).await).await;
    let bank = Bank::open(&app, 2, 1_000).await;
    let transfer = |amount: i64| {
        let input = json!({ "input": { "fromAccountId": bank.holders[0].account, "toAccountId": bank.holders[1].account,
                                       "amount": amount, "currency": "USD" } });
        app.graphql(TRANSFER, input, Some(&bank.holders[0].token))
    };
    transfer(100).await.assert_ok();

    postgres.stop();
    let started = Instant::now();
    let during = tokio::time::timeout(Duration::from_secs(15), transfer(100)).await.expect("no hang");
    assert_eq!(during.error_code(), Some("SERVICE_UNAVAILABLE"), "{:#}", during.0);
    assert!(!during.0.to_string().to_lowercase().contains("sql"), "no internals leak: {}", during.0);
    let ready = app.client.get(format!("{}/readyz", app.address)).send().await.expect("an answer");
    assert_eq!(ready.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(15), "failed fast: {:?}", started.elapsed());

    postgres.start_again();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if transfer(100).await.error_code().is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "the server did not recover within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = app.client.get(format!("{}/readyz", app.address)).send().await.expect("an answer");
    assert_eq!(ready.status(), 200);
    assert_eq!(assert_ledger_consistent(&app.db).await, bank.total);
    assert_eq!(app.count("SELECT count(*) FROM transfers").await, 2, "nothing half-applied");
}

/// CockroachDB and YugabyteDB run every transaction SERIALIZABLE: the bank's workload must pass there too, with
/// serialization failures retried inside the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bank_workload_passes_under_serializable_isolation() {
    let database = TestDatabase::empty(Backend::Postgres).await;
    let admin = database.connection().await;
    admin
        .execute_unprepared(&format!(
            r#"ALTER DATABASE "{}" SET default_transaction_isolation TO 'serializable'"#,
            database.name()
        ))
        .await
        .expect("make the database SERIALIZABLE");
    let app = spawn_app_on(database).await;
    let isolation = app
        .db
        .query_one_raw(Statement::from_string(app.db.get_database_backend(), "SHOW default_transaction_isolation"))
        .await;
    let isolation: String = isolation.expect("a query").expect("a row").try_get_by_index(0).expect("text");
    assert_eq!(isolation, "serializable");
    let bank = Bank::open(&app, 6, 1_000).await;

    let readers = (0..2).map(|_| bank.watch_total(&app, 8));
    let apps = [&app];
    let (codes, totals) = tokio::join!(bank.run_transfers(&apps, 15), futures::future::join_all(readers));

    // Serialization failures reaching a client would be refusals other than INSUFFICIENT_FUNDS; that the server
    // retries them is unit-tested beside `with_retry` (service/src/ledger/mod.rs).
    codes.assert_mostly_succeeded();
    assert!(totals.iter().flatten().all(|t| *t == bank.total), "{totals:?}");
    assert_eq!(assert_ledger_consistent(&app.db).await, bank.total);
}

/// Two server processes on one database, clients spread over both: state lives in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_database_serve_the_bank_workload_together() {
    let database = Arc::new(TestDatabase::empty(Backend::Postgres).await);
    let (_first, a) = ServerProcess::start(&database).await;
    let (_second, b) = ServerProcess::start(&database).await;
    let bank = Bank::open(&a, 6, 1_000).await;

    // A session opened on one replica works on the other, refresh included.
    let (access, refresh) = a.login("holder_0").await;
    assert_eq!(b.graphql("{ me { username } }", json!({}), Some(&access)).await.str("me/username"), "holder_0");
    let document = "mutation($t: String!) { refreshAccessToken(refreshToken: $t) { accessToken } }";
    let variables = json!({ "t": refresh });
    b.graphql(document, variables.clone(), None).await.assert_ok();
    let replay = a.graphql(document, variables, None).await;
    assert_eq!(replay.error_code(), Some("UNAUTHENTICATED"), "rotation holds across replicas");

    let codes = bank.run_transfers(&[&a, &b], 15).await;
    codes.assert_mostly_succeeded();
    assert_eq!(bank.total_seen(&a).await, bank.total);
    assert_eq!(bank.total_seen(&b).await, bank.total);
    assert_eq!(assert_ledger_consistent(&a.db).await, bank.total);
}
