//! Scale-out on PostgreSQL's own replication: queries read on hot standbys, each caller still sees its own writes,
//! a standby's trouble costs no request, and everything runs through pgbouncer in transaction-pooling mode. Each
//! PostgreSQL test runs a primary and a standby of its own (`pg_basebackup`), on loopback, for a few seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::{Value, json};
use tests::{
    AliceAndBob, Backend, Bank, PgServer, Pgbouncer, Socket, TRANSFER, TestApp, TestDatabase, assert_ledger_consistent,
    spawn_app_with, transfer_input,
};

/// A primary with a fresh, empty test database, and a hot standby of it.
struct Replicated {
    primary: PgServer,
    standby: PgServer,
    database: Arc<TestDatabase>,
}

impl Replicated {
    /// With `apply_delay`, the standby applies each commit only that long after the primary made it.
    async fn start(apply_delay: Option<Duration>) -> Self {
        let primary = PgServer::start();
        let database = Arc::new(TestDatabase::on_postgres(&primary.url()).await);
        let standby = PgServer::standby_of(&primary, apply_delay);
        Self { primary, standby, database }
    }

    /// The test database on the standby.
    fn standby_url(&self) -> String {
        self.standby.url_of(self.database.name())
    }

    /// Waits (at most 30 s) until the standby has replayed everything the primary has written so far.
    async fn caught_up(&self) {
        let primary = connect(&self.primary.url()).await;
        let standby = connect(&self.standby.url()).await;
        let position = text(&primary, "SELECT pg_current_wal_lsn()::text").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let replayed = format!("SELECT (pg_last_wal_replay_lsn() >= '{position}')::text");
        while text(&standby, &replayed).await != "true" {
            assert!(Instant::now() < deadline, "the standby did not replay {position} within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn connect(url: &str) -> DatabaseConnection {
    Database::connect(url).await.expect("connect")
}

async fn text(db: &DatabaseConnection, sql: &str) -> String {
    let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await.expect(sql);
    row.expect("a row").try_get_by_index::<String>(0).expect("text")
}

/// `db_query_snapshots_total{on="standby"}` or `{on="primary"}` of a server.
async fn snapshots_on(app: &TestApp, on: &str) -> u64 {
    app.metric(&format!("db_query_snapshots_total{{on=\"{on}\"}}")).await
}

/// Whether a server takes its standby as usable, as `/metrics` says.
async fn standby_usable(app: &TestApp) -> bool {
    let metrics = app.metrics().await;
    let line = metrics.lines().find(|line| line.starts_with("db_standby_usable{")).expect("db_standby_usable");
    line.ends_with(" 1")
}

/// Repeats `query` as `token` (at most `within`) until a server reads it on its standby; panics otherwise.
async fn until_read_on_the_standby(app: &TestApp, token: &str, query: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let before = snapshots_on(app, "standby").await;
        app.graphql(query, json!({}), Some(token)).await.assert_ok();
        if snapshots_on(app, "standby").await > before {
            return;
        }
        assert!(Instant::now() < deadline, "queries did not read on the standby within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const MY_ACCOUNTS: &str = "{ me { accounts { balance } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_next_query_sees_its_own_write_through_either_server_while_the_standby_lags() {
    let replicated = Replicated::start(Some(Duration::from_secs(2))).await;
    let standby = replicated.standby_url();
    let flags = ["--database-replica-urls", &standby, "--replica-max-lag-ms", "4000"];
    let a = spawn_app_with(replicated.database.clone(), &flags).await;
    let b = spawn_app_with(replicated.database.clone(), &flags).await;
    let AliceAndBob { alice, bob, .. } = AliceAndBob::open(&a).await;
    replicated.caught_up().await;
    for app in [&a, &b] {
        until_read_on_the_standby(app, &bob.token, MY_ACCOUNTS, Duration::from_secs(15)).await;
    }

    let transfer = transfer_input(&alice.account, &bob.account, 100, "USD");
    a.graphql(TRANSFER, transfer, Some(&alice.token)).await.assert_ok();
    let seen_by_alice_on_b = b.balance(&alice.token, &alice.account).await;
    let seen_by_alice_on_a = a.balance(&alice.token, &alice.account).await;
    let seen_by_bob_on_b = b.balance(&bob.token, &bob.account).await;

    assert_eq!(seen_by_alice_on_b, "9900", "the writer's next query, through the other server");
    assert_eq!(seen_by_alice_on_a, "9900");
    // Bob wrote nothing: his query read on the standby, which applies the transfer only two seconds later.
    assert_eq!(seen_by_bob_on_b, "5000", "a query by someone else reads on the lagging standby");
    replicated.caught_up().await;
    assert_eq!(b.balance(&bob.token, &bob.account).await, "5100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_counts_as_a_write_so_the_new_sessions_first_query_finds_the_user() {
    let replicated = Replicated::start(Some(Duration::from_secs(2))).await;
    let standby = replicated.standby_url();
    let flags = ["--database-replica-urls", &standby, "--replica-max-lag-ms", "4000"];
    let a = spawn_app_with(replicated.database.clone(), &flags).await;
    let b = spawn_app_with(replicated.database.clone(), &flags).await;
    let watcher = a.user("watcher").await;
    replicated.caught_up().await;
    until_read_on_the_standby(&b, &watcher, MY_ACCOUNTS, Duration::from_secs(15)).await;

    a.sign_up("carol").await;
    let (token, _) = a.login("carol").await;
    let me = b.graphql("{ me { username } }", json!({}), Some(&token)).await;

    assert_eq!(me.str("me/username"), "carol", "the standby has no carol yet: {:#}", me.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_further_behind_than_the_allowed_lag_is_skipped_until_it_catches_up() {
    let replicated = Replicated::start(Some(Duration::from_secs(2))).await;
    let standby = replicated.standby_url();
    let app = spawn_app_with(
        replicated.database.clone(),
        &["--database-replica-urls", &standby, "--replica-max-lag-ms", "500"],
    )
    .await;
    let AliceAndBob { alice, bob, .. } = AliceAndBob::open(&app).await;
    replicated.caught_up().await;
    until_read_on_the_standby(&app, &bob.token, MY_ACCOUNTS, Duration::from_secs(15)).await;

    let transfer = transfer_input(&alice.account, &bob.account, 100, "USD");
    app.graphql(TRANSFER, transfer, Some(&alice.token)).await.assert_ok();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let on_primary = snapshots_on(&app, "primary").await;
    let seen_by_bob = app.balance(&bob.token, &bob.account).await;

    assert!(!standby_usable(&app).await, "a standby a second behind, with 500 ms allowed, is skipped");
    assert_eq!(seen_by_bob, "5100", "bob's query read on the primary");
    assert_eq!(snapshots_on(&app, "primary").await, on_primary + 1);
    replicated.caught_up().await;
    until_read_on_the_standby(&app, &bob.token, MY_ACCOUNTS, Duration::from_secs(5)).await;
    assert_eq!(app.balance(&bob.token, &bob.account).await, "5100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_going_down_fails_no_request_and_serves_again_once_back() {
    let replicated = Replicated::start(None).await;
    let standby = replicated.standby_url();
    let app = spawn_app_with(replicated.database.clone(), &["--database-replica-urls", &standby]).await;
    let bank = Bank::open(&app, 4, 1_000).await;
    replicated.caught_up().await;
    until_read_on_the_standby(&app, &bank.banker, MY_ACCOUNTS, Duration::from_secs(15)).await;

    // Reads keep coming while the standby stops: each one answers, with the conserved total.
    let reads = {
        let (address, database) = (app.address.clone(), app.database.clone());
        let bank = Bank { banker: bank.banker.clone(), holders: bank.holders.clone(), total: bank.total };
        tokio::spawn(async move {
            let app = TestApp::at(address, database).await;
            let mut totals = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                totals.push(bank.total_seen(&app).await);
            }
            totals
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    replicated.standby.stop();
    let totals = reads.await.expect("the reader");
    let down = !standby_usable(&app).await;
    replicated.standby.start_again();

    assert!(totals.iter().all(|total| *total == bank.total), "every read answered the total: {totals:?}");
    assert!(down, "a stopped standby is skipped");
    until_read_on_the_standby(&app, &bank.banker, MY_ACCOUNTS, Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_run_the_bank_through_pgbouncer_in_transaction_pooling_mode_with_a_standby() {
    let replicated = Replicated::start(None).await;
    let name = replicated.database.name().to_owned();
    let target = |server: &PgServer| format!("host=127.0.0.1 port={} dbname={name}", server.port());
    // Two server connections per database for two servers of up to eight connections each: transactions of
    // different connections take turns on the same server connection all the time.
    let pgbouncer =
        Pgbouncer::start(&[("bank", target(&replicated.primary)), ("bank_standby", target(&replicated.standby))], 2)
            .await;
    let (primary, standby) = (pgbouncer.url_of("bank"), pgbouncer.url_of("bank_standby"));
    let direct = replicated.database.url.clone();
    let flags = [
        "--database-url",
        &primary,
        "--database-replica-urls",
        &standby,
        "--database-listen-url",
        &direct,
        "--database-transaction-pooling",
        "true",
    ];
    let a = spawn_app_with(replicated.database.clone(), &flags).await;
    let b = spawn_app_with(replicated.database.clone(), &flags).await;
    let bank = Bank::open(&a, 6, 1_000).await;
    replicated.caught_up().await;
    until_read_on_the_standby(&b, &bank.banker, MY_ACCOUNTS, Duration::from_secs(15)).await;

    let servers = [&a, &b];
    let (outcomes, totals) = tokio::join!(bank.run_transfers(&servers, 10), bank.watch_total(&b, 20));
    outcomes.assert_mostly_succeeded();
    assert!(totals.iter().all(|total| *total == bank.total), "{totals:?}");
    assert_eq!(bank.total_seen(&a).await, bank.total);
    assert_eq!(assert_ledger_consistent(&a.db).await, bank.total);

    // The login throttle counts on the primary, so two servers let through no more guesses than one.
    let guesses = (0..12).map(|n| {
        let app = if n % 2 == 0 { &a } else { &b };
        let input = json!({ "input": { "username": "holder_0", "password": format!("wrong {n}") } });
        async move {
            let login = "mutation($input: LoginInput!) { login(input: $input) { accessToken } }";
            app.graphql(login, input, None).await.error_code().map(str::to_owned)
        }
    });
    let codes = futures::future::join_all(guesses).await;
    let wrong = codes.iter().filter(|code| code.as_deref() == Some("INVALID_CREDENTIALS")).count();
    assert_eq!(wrong, 5, "{codes:?}");

    // A transfer made through one server reaches a subscriber of the other.
    let (from, to) = (&bank.holders[1], &bank.holders[2]);
    let mut socket = Socket::connect(&b.address, &to.token).await;
    socket
        .subscribe(
            "1",
            "subscription($id: ID!) { entryAdded(accountId: $id) { node { amount } } }",
            json!({ "id": to.account }),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.graphql(TRANSFER, transfer_input(&from.account, &to.account, 7, "USD"), Some(&from.token)).await.assert_ok();
    let payload: Value = socket.next_payload("1").await;
    assert_eq!(payload["data"]["entryAdded"]["node"]["amount"], "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standbys_are_refused_on_sqlite_with_a_clear_error() {
    use clap::Parser;
    let database = TestDatabase::empty(Backend::Sqlite).await;
    let arguments = [
        "simple-bank",
        "--database-url",
        &database.url,
        "--listen-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--database-replica-urls",
        "postgres://postgres@127.0.0.1:1/bank",
    ];
    let cli = simple_bank::cli::Cli::try_parse_from(arguments).expect("the flags parse");

    let Err(err) = simple_bank::Application::build(cli.config).await else { panic!("a server started") };

    assert!(err.to_string().contains("for PostgreSQL, not SQLite"), "{err:#}");
}
