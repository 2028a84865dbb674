//! Subscriptions: an account's ledger pushed over `graphql-transport-ws`, every entry once and in order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use tests::{
    AliceAndBob, Backend, Received, Socket, TestApp, TestDatabase, assert_ledger_consistent, on_both_backends,
    spawn_app, spawn_app_with,
};

const ENTRY_ADDED: &str = "subscription($id: ID!, $after: String) {
    entryAdded(accountId: $id, after: $after) { cursor node { amount balanceAfter } } }";

const TRANSFER: &str = "mutation($input: CreateTransferInput!) { createTransfer(input: $input) { transfer { id } } }";

async fn transfer(app: &TestApp, token: &str, from: &str, to: &str, amount: i64) {
    let input = json!({ "input": { "fromAccountId": from, "toAccountId": to, "amount": amount, "currency": "USD" } });
    app.graphql(TRANSFER, input, Some(token)).await.assert_ok();
}

/// An event's (cursor, amount, balanceAfter).
fn event(payload: &Value) -> (String, i64, i64) {
    let edge = &payload["data"]["entryAdded"];
    let money = |v: &Value| v.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("money in {payload}"));
    (
        edge["cursor"].as_str().expect("a cursor").to_owned(),
        money(&edge["node"]["amount"]),
        money(&edge["node"]["balanceAfter"]),
    )
}

/// The cursor of the account's newest entry, as `Account.entries` gives it.
async fn newest_cursor(app: &TestApp, token: &str, account: &str) -> String {
    let response = app
        .graphql(
            "query($id: ID!) { account(id: $id) { entries(first: 1) { edges { cursor } } } }",
            json!({ "id": account }),
            Some(token),
        )
        .await;
    response.str("account/entries/edges/0/cursor")
}

async fn fifty_concurrent_transfers_into_one_account_arrive_as_fifty_events_in_ledger_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { banker, alice, bob } = AliceAndBob::open(&app).await;
    let (alice, alice_usd, bob, bob_usd) = (alice.token, alice.account, bob.token, bob.account);
    let carol = app.user("carol").await;
    let carol_usd = app.open_account(&carol, "USD").await;
    app.deposit(&banker, &carol_usd, 5_000).await;
    let mut socket = Socket::connect(&app.address, &alice).await;
    // From the newest cursor, as the subscription may begin after the deposit below commits; seeing the deposit
    // proves the subscription runs before the transfers start.
    let after = newest_cursor(&app, &alice, &alice_usd).await;
    socket.subscribe("1", ENTRY_ADDED, json!({ "id": alice_usd, "after": after })).await;
    app.deposit(&banker, &alice_usd, 1).await;
    let (_, amount, mut balance) = event(&socket.next_payload("1").await);
    assert_eq!((amount, balance), (1, 10_001));

    let transfers = (1..=50).map(|n| {
        let (app, bob, carol, bob_usd, carol_usd, alice_usd) = (&app, &bob, &carol, &bob_usd, &carol_usd, &alice_usd);
        async move {
            if n % 2 == 0 {
                transfer(app, bob, bob_usd, alice_usd, n).await;
            } else {
                transfer(app, carol, carol_usd, alice_usd, n).await;
            }
        }
    });
    futures::future::join_all(transfers).await;

    let mut amounts = Vec::new();
    let mut cursor = String::new();
    for _ in 0..50 {
        let (next_cursor, amount, balance_after) = event(&socket.next_payload("1").await);
        assert_eq!(balance_after, balance + amount, "each balanceAfter is the previous plus the amount");
        balance = balance_after;
        amounts.push(amount);
        cursor = next_cursor;
    }
    amounts.sort_unstable();
    assert_eq!(amounts, (1..=50).collect::<Vec<_>>(), "each transfer exactly once");
    assert_eq!(balance, 10_001 + (1..=50).sum::<i64>());
    assert_eq!(cursor, newest_cursor(&app, &alice, &alice_usd).await, "the query's cursors are the subscription's");
    assert_ledger_consistent(&app.db).await;
}

async fn a_client_resuming_from_its_last_cursor_gets_what_it_missed_once_and_then_what_follows(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, bob, .. } = AliceAndBob::open(&app).await;
    let (alice, alice_usd, bob, bob_usd) = (alice.token, alice.account, bob.token, bob.account);
    let mut socket = Socket::connect(&app.address, &alice).await;
    socket
        .subscribe("1", ENTRY_ADDED, json!({ "id": alice_usd, "after": newest_cursor(&app, &alice, &alice_usd).await }))
        .await;
    transfer(&app, &bob, &bob_usd, &alice_usd, 10).await;
    let (last, amount, balance) = event(&socket.next_payload("1").await);
    assert_eq!((amount, balance), (10, 10_010));
    drop(socket);

    for amount in [20, 30, 40] {
        transfer(&app, &bob, &bob_usd, &alice_usd, amount).await;
    }
    let mut socket = Socket::connect(&app.address, &alice).await;
    socket.subscribe("again", ENTRY_ADDED, json!({ "id": alice_usd, "after": last })).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (_, amount, balance) = event(&socket.next_payload("again").await);
        seen.push((amount, balance));
    }
    assert_eq!(seen, [(20, 10_030), (30, 10_060), (40, 10_100)]);
    transfer(&app, &alice, &alice_usd, &bob_usd, 100).await;
    let (_, amount, balance) = event(&socket.next_payload("again").await);
    assert_eq!((amount, balance), (-100, 10_000), "then what follows, and nothing twice");
}

async fn someone_elses_account_is_refused_and_the_socket_stays_open(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { banker, alice, bob } = AliceAndBob::open(&app).await;
    let (alice_usd, bob, bob_usd) = (alice.account, bob.token, bob.account);
    let mut socket = Socket::connect(&app.address, &bob).await;
    socket.subscribe("theirs", ENTRY_ADDED, json!({ "id": alice_usd })).await;
    let refused = match socket.receive().await {
        Received::Message(message) => message,
        closed => panic!("the socket closed: {closed:?}"),
    };
    let errors = if refused["type"] == "error" { &refused["payload"] } else { &refused["payload"]["errors"] };
    assert_eq!(errors[0]["extensions"]["code"], "FORBIDDEN", "{refused}");

    let after = newest_cursor(&app, &bob, &bob_usd).await;
    socket.subscribe("mine", ENTRY_ADDED, json!({ "id": bob_usd, "after": after })).await;
    app.deposit(&banker, &bob_usd, 7).await;
    loop {
        // The refused operation may still complete before the new one's first event.
        match socket.receive().await {
            Received::Message(message) if message["id"] == "mine" && message["type"] == "next" => {
                assert_eq!(event(&message["payload"]).1, 7);
                break;
            }
            Received::Message(message) if message["id"] == "theirs" => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn logging_out_closes_the_sessions_socket_with_4403(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up("alice").await;
    let (access, refresh) = app.login("alice").await;
    let account = app.open_account(&access, "USD").await;
    let mut socket = Socket::connect(&app.address, &access).await;
    socket.subscribe("1", ENTRY_ADDED, json!({ "id": account })).await;

    let logout = app.graphql("mutation($t: String!) { logout(refreshToken: $t) }", json!({ "t": refresh }), None).await;
    logout.assert_ok();
    let started = Instant::now();

    assert_eq!(socket.close_code().await, Some(4403));
    assert!(started.elapsed() < Duration::from_secs(2), "closed after {:?}", started.elapsed());
}

async fn a_bad_or_missing_token_closes_the_socket_with_4403(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut forged = Socket::init(&app.address, "not-a-token").await;
    assert_eq!(forged.close_code().await, Some(4403));
    let mut bare = Socket::open(&app.address).await;
    bare.send(json!({ "type": "connection_init" })).await;
    assert_eq!(bare.close_code().await, Some(4403));
}

async fn the_tokens_key_in_connection_init_may_be_capitalised_as_graphiql_sends_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    let mut socket = Socket::open(&app.address).await;
    socket.send(json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {alice}") } })).await;
    match socket.receive().await {
        Received::Message(message) if message["type"] == "connection_ack" => {}
        other => panic!("expected connection_ack, got {other:?}"),
    }
}

async fn a_socket_that_never_initialises_is_closed_with_4408(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut socket = Socket::open(&app.address).await;
    let started = Instant::now();
    assert_eq!(socket.close_code().await, Some(4408));
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// The `extensions.code` of an operation's refusal, whether the server sent it as `error` or as `next`.
fn refusal_code(message: &Value) -> &Value {
    let errors = if message["type"] == "error" { &message["payload"] } else { &message["payload"]["errors"] };
    &errors[0]["extensions"]["code"]
}

/// Waits for the next event of `id`, letting messages of other operations (say a refused one completing) pass.
async fn next_event_of(socket: &mut Socket, id: &str) -> Value {
    loop {
        match socket.receive().await {
            Received::Message(message) if message["id"] == id && message["type"] == "next" => {
                return message["payload"].clone();
            }
            Received::Message(message) if message["id"] != id => continue,
            other => panic!("expected an event for {id}, got {other:?}"),
        }
    }
}

/// The socket closes with 4403 within two seconds of `started`.
async fn assert_closed_for_the_session(socket: &mut Socket, started: Instant) {
    assert_eq!(socket.close_code().await, Some(4403));
    assert!(started.elapsed() < Duration::from_secs(2), "closed after {:?}", started.elapsed());
}

async fn a_password_change_closes_the_other_sessions_sockets_with_4403(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up("alice").await;
    let (elsewhere, _) = app.login("alice").await;
    let account = app.open_account(&elsewhere, "USD").await;
    let mut socket = Socket::connect(&app.address, &elsewhere).await;
    socket.subscribe("1", ENTRY_ADDED, json!({ "id": account })).await;
    let (here, _) = app.login("alice").await;

    let change = app
        .graphql(
            "mutation($input: UpdateUserInput!) { updateUser(input: $input) { username } }",
            json!({ "input": { "password": "a-brand-new-passphrase-9", "currentPassword": tests::PASSWORD } }),
            Some(&here),
        )
        .await;
    change.assert_ok();
    let started = Instant::now();

    assert_closed_for_the_session(&mut socket, started).await;
}

async fn deleting_the_user_closes_their_sockets_with_4403(backend: Backend) {
    let app = spawn_app(backend).await;
    let banker = app.banker("bea").await;
    let alice = app.user("alice").await;
    let account = app.open_account(&alice, "USD").await;
    let mut socket = Socket::connect(&app.address, &alice).await;
    socket.subscribe("1", ENTRY_ADDED, json!({ "id": account })).await;

    let deleted = app.graphql("mutation { deleteUser(username: \"alice\") }", json!({}), Some(&banker)).await;
    deleted.assert_ok();
    let started = Instant::now();

    assert_closed_for_the_session(&mut socket, started).await;
}

async fn a_role_change_closes_the_users_sockets_with_4403(backend: Backend) {
    let app = spawn_app(backend).await;
    let banker = app.banker("bea").await;
    let carol = app.banker("carol").await;
    let alice = app.user("alice").await;
    let account = app.open_account(&alice, "USD").await;
    let mut socket = Socket::connect(&app.address, &carol).await;
    socket.subscribe("1", ENTRY_ADDED, json!({ "id": account })).await;

    let demoted = app
        .graphql(
            "mutation { updateUser(input: {username: \"carol\", role: DEPOSITOR}) { role } }",
            json!({}),
            Some(&banker),
        )
        .await;
    demoted.assert_ok();
    let started = Instant::now();

    assert_closed_for_the_session(&mut socket, started).await;
}

async fn an_expiring_access_token_closes_its_socket_with_4403(backend: Backend) {
    let database = Arc::new(TestDatabase::empty(backend).await);
    let app = spawn_app_with(database, &["--access-token-ttl-secs", "2"]).await;
    app.sign_up("alice").await;
    let issued = Instant::now();
    let (access, _) = app.login("alice").await;
    let account = app.open_account(&access, "USD").await;
    let mut socket = Socket::connect(&app.address, &access).await;
    socket.subscribe("1", ENTRY_ADDED, json!({ "id": account })).await;

    assert_eq!(socket.close_code().await, Some(4403));
    // The token lives two seconds (counted in whole seconds); the socket goes within two more.
    let lived = issued.elapsed();
    assert!(lived >= Duration::from_secs(1) && lived < Duration::from_secs(4), "closed after {lived:?}");
}

async fn a_subscription_over_the_sockets_limit_is_refused_and_the_others_keep_running(backend: Backend) {
    let database = Arc::new(TestDatabase::empty(backend).await);
    let app = spawn_app_with(database, &["--max-subscriptions-per-socket", "1"]).await;
    let AliceAndBob { banker, alice, .. } = AliceAndBob::open(&app).await;
    let (alice, alice_usd) = (alice.token, alice.account);
    let mut socket = Socket::connect(&app.address, &alice).await;
    let after = newest_cursor(&app, &alice, &alice_usd).await;
    socket.subscribe("first", ENTRY_ADDED, json!({ "id": alice_usd, "after": after })).await;
    socket.subscribe("second", ENTRY_ADDED, json!({ "id": alice_usd, "after": after })).await;

    let refused = match socket.receive().await {
        Received::Message(message) if message["id"] == "second" => message,
        other => panic!("expected the second refused, got {other:?}"),
    };
    assert_eq!(refusal_code(&refused), "TOO_MANY_SUBSCRIPTIONS", "{refused}");
    app.deposit(&banker, &alice_usd, 3).await;
    assert_eq!(event(&next_event_of(&mut socket, "first").await).1, 3, "the first goes on");

    // Completing the first frees its slot.
    socket.send(json!({ "id": "first", "type": "complete" })).await;
    socket.subscribe("third", ENTRY_ADDED, json!({ "id": alice_usd, "after": after })).await;
    assert_eq!(event(&next_event_of(&mut socket, "third").await).1, 3);
}

async fn a_socket_over_the_users_limit_is_closed_with_4429_and_the_others_stay(backend: Backend) {
    let database = Arc::new(TestDatabase::empty(backend).await);
    let app = spawn_app_with(database, &["--max-sockets-per-user", "1"]).await;
    let AliceAndBob { banker, alice, bob } = AliceAndBob::open(&app).await;
    let (alice, alice_usd) = (alice.token, alice.account);
    let mut first = Socket::connect(&app.address, &alice).await;

    let mut second = Socket::init(&app.address, &alice).await;
    assert_eq!(second.close_code().await, Some(4429));
    // Another user's sockets are theirs to count.
    Socket::connect(&app.address, &bob.token).await;

    let after = newest_cursor(&app, &alice, &alice_usd).await;
    first.subscribe("1", ENTRY_ADDED, json!({ "id": alice_usd, "after": after })).await;
    app.deposit(&banker, &alice_usd, 4).await;
    assert_eq!(event(&first.next_payload("1").await).1, 4, "the first socket is undisturbed");
}

async fn a_subscription_costing_more_than_the_limit_is_refused_and_the_socket_stays_open(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { banker, alice, .. } = AliceAndBob::open(&app).await;
    let (alice, alice_usd) = (alice.token, alice.account);
    let mut socket = Socket::connect(&app.address, &alice).await;
    // 100 entries of each of 100 entries' accounts: some 20,000 nodes, over the default 4,000.
    let costly = "subscription($id: ID!) { entryAdded(accountId: $id) { node { account {
        entries(first: 100) { nodes { account { entries(first: 100) { nodes { id amount } } } } } } } } }";
    socket.subscribe("costly", costly, json!({ "id": alice_usd })).await;
    let refused = match socket.receive().await {
        Received::Message(message) if message["id"] == "costly" => message,
        other => panic!("expected the refusal, got {other:?}"),
    };
    assert_eq!(refusal_code(&refused), "QUERY_COST_EXCEEDED", "{refused}");

    let after = newest_cursor(&app, &alice, &alice_usd).await;
    socket.subscribe("cheap", ENTRY_ADDED, json!({ "id": alice_usd, "after": after })).await;
    app.deposit(&banker, &alice_usd, 5).await;
    assert_eq!(event(&next_event_of(&mut socket, "cheap").await).1, 5);
}

async fn the_server_pings_and_a_client_that_answers_keeps_its_socket(backend: Backend) {
    let database = Arc::new(TestDatabase::empty(backend).await);
    let app = spawn_app_with(database, &["--ws-ping-interval-secs", "1"]).await;
    let AliceAndBob { banker, alice, .. } = AliceAndBob::open(&app).await;
    let (alice, alice_usd) = (alice.token, alice.account);
    let mut socket = Socket::connect(&app.address, &alice).await;
    let after = newest_cursor(&app, &alice, &alice_usd).await;
    socket.subscribe("1", ENTRY_ADDED, json!({ "id": alice_usd, "after": after })).await;

    // Four pings answered span more than the three intervals a silent client is given.
    let started = Instant::now();
    for _ in 0..4 {
        match socket.receive_unanswered().await {
            Received::Message(message) if message["type"] == "ping" => socket.send(json!({ "type": "pong" })).await,
            other => panic!("expected a ping, got {other:?}"),
        }
    }
    assert!(started.elapsed() > Duration::from_secs(3));

    app.deposit(&banker, &alice_usd, 6).await;
    assert_eq!(event(&socket.next_payload("1").await).1, 6, "the socket still serves");
}

async fn an_up_to_date_subscriber_costs_the_database_no_statement_per_entry(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { banker, alice, bob } = AliceAndBob::open(&app).await;
    let (alice, alice_usd, bob, bob_usd) = (alice.token, alice.account, bob.token, bob.account);
    let statements_of_transfers = async || {
        let before = app.metric("db_statements_total").await;
        for amount in 1..=5 {
            transfer(&app, &bob, &bob_usd, &alice_usd, amount).await;
        }
        app.metric("db_statements_total").await - before
    };
    let alone = statements_of_transfers().await;

    let after = newest_cursor(&app, &alice, &alice_usd).await;
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let mut socket = Socket::connect(&app.address, &alice).await;
        socket.subscribe("1", ENTRY_ADDED, json!({ "id": alice_usd, "after": after })).await;
        subscribers.push(socket);
    }
    // Each subscriber sees this deposit, whenever it started.
    app.deposit(&banker, &alice_usd, 1).await;
    for socket in &mut subscribers {
        event(&socket.next_payload("1").await);
    }
    let before = app.metric("db_statements_total").await;
    let watched = statements_of_transfers().await;
    for socket in &mut subscribers {
        for amount in 1..=5 {
            assert_eq!(event(&socket.next_payload("1").await).1, amount);
        }
    }

    assert_eq!(watched, alone, "the same transfers cost as many statements with subscribers as without");
    assert_eq!(app.metric("db_statements_total").await - before, alone, "delivering the entries cost none");
}

on_both_backends!(
    fifty_concurrent_transfers_into_one_account_arrive_as_fifty_events_in_ledger_order,
    an_up_to_date_subscriber_costs_the_database_no_statement_per_entry,
    a_client_resuming_from_its_last_cursor_gets_what_it_missed_once_and_then_what_follows,
    someone_elses_account_is_refused_and_the_socket_stays_open,
    logging_out_closes_the_sessions_socket_with_4403,
    a_bad_or_missing_token_closes_the_socket_with_4403,
    a_socket_that_never_initialises_is_closed_with_4408,
    the_tokens_key_in_connection_init_may_be_capitalised_as_graphiql_sends_it,
    a_password_change_closes_the_other_sessions_sockets_with_4403,
    deleting_the_user_closes_their_sockets_with_4403,
    a_role_change_closes_the_users_sockets_with_4403,
    an_expiring_access_token_closes_its_socket_with_4403,
    a_subscription_over_the_sockets_limit_is_refused_and_the_others_keep_running,
    a_socket_over_the_users_limit_is_closed_with_4429_and_the_others_stay,
    a_subscription_costing_more_than_the_limit_is_refused_and_the_socket_stays_open,
    the_server_pings_and_a_client_that_answers_keeps_its_socket,
);

/// The change feed across processes and connections, which only PostgreSQL has.
mod feed_on_postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_entry_written_through_one_server_reaches_a_subscriber_of_another_within_a_second() {
        let first = spawn_app(Backend::Postgres).await;
        let second = spawn_app_with(Arc::clone(&first.database), &[]).await;
        let AliceAndBob { alice, bob, .. } = AliceAndBob::open(&first).await;
        let (alice, alice_usd, bob, bob_usd) = (alice.token, alice.account, bob.token, bob.account);
        let mut socket = Socket::connect(&second.address, &alice).await;
        socket
            .subscribe(
                "1",
                ENTRY_ADDED,
                json!({ "id": alice_usd, "after": newest_cursor(&first, &alice, &alice_usd).await }),
            )
            .await;

        let started = Instant::now();
        transfer(&first, &bob, &bob_usd, &alice_usd, 25).await;
        let (_, amount, _) = event(&socket.next_payload("1").await);

        assert_eq!(amount, 25);
        assert!(started.elapsed() < Duration::from_secs(1), "delivered after {:?}", started.elapsed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_a_stopped_process_committed_but_never_announced_arrive_when_a_server_starts() {
        let first = spawn_app(Backend::Postgres).await;
        let AliceAndBob { alice, .. } = AliceAndBob::open(&first).await;
        let mut socket = Socket::connect(&first.address, &alice.token).await;
        let after = newest_cursor(&first, &alice.token, &alice.account).await;
        socket.subscribe("1", ENTRY_ADDED, json!({ "id": alice.account, "after": after })).await;
        // A deposit as a process killed between its commit and its announcement leaves it: committed, unheard.
        first
            .db
            .execute_raw(Statement::from_string(
                first.db.get_database_backend(),
                "WITH moved AS (UPDATE accounts SET balance = balance + 7, entry_count = entry_count + 1 \
                 WHERE owner = 'alice' AND currency = 'USD' RETURNING id, balance, entry_count) \
                 INSERT INTO entries (account_id, amount, balance_after, account_seq) \
                 SELECT id, 7, balance, entry_count FROM moved",
            ))
            .await
            .expect("an unannounced deposit");

        let started = Instant::now();
        let _restarted = spawn_app_with(Arc::clone(&first.database), &[]).await;
        let (_, amount, balance) = event(&socket.next_payload("1").await);

        assert_eq!((amount, balance), (7, 10_007));
        assert!(started.elapsed() < Duration::from_secs(2), "delivered after {:?}", started.elapsed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killing_the_listening_connection_mid_stream_loses_no_entry() {
        let app = spawn_app(Backend::Postgres).await;
        let AliceAndBob { alice, bob, .. } = AliceAndBob::open(&app).await;
        let (alice, alice_usd, bob, bob_usd) = (alice.token, alice.account, bob.token, bob.account);
        let mut socket = Socket::connect(&app.address, &alice).await;
        socket
            .subscribe(
                "1",
                ENTRY_ADDED,
                json!({ "id": alice_usd, "after": newest_cursor(&app, &alice, &alice_usd).await }),
            )
            .await;
        let writer = tokio::spawn({
            let (address, database) = (app.address.clone(), Arc::clone(&app.database));
            async move {
                let app = TestApp::at(address, database).await;
                for amount in 1..=40 {
                    transfer(&app, &bob, &bob_usd, &alice_usd, amount).await;
                }
            }
        });

        let mut amounts = Vec::new();
        for n in 1..=40 {
            if n == 10 {
                let killed = app
                    .db
                    .query_one_raw(Statement::from_string(
                        app.db.get_database_backend(),
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
                    ))
                    .await
                    .expect("terminate the listener")
                    .expect("a row")
                    .try_get_by_index::<i64>(0)
                    .expect("a count");
                assert_eq!(killed, 1, "one listening connection");
            }
            amounts.push(event(&socket.next_payload("1").await).1);
        }
        writer.await.expect("the writer");

        assert_eq!(amounts, (1..=40).collect::<Vec<_>>(), "every entry once, in ledger order");
    }
}
