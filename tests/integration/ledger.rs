//! Accounts, deposits and transfers: money is never created, lost, overdrawn or moved twice.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tests::{
    AliceAndBob, Backend, Bank, JWT_SECRET, PASSWORD, TestApp, assert_ledger_consistent, claims_of, global_id,
    on_both_backends, sign, spawn_app, spawn_app_with, transfer_input,
};

/// A transfer with everything its answer shows the sender: the transfer, their new balance and their entry (the
/// receiver's entry is the receiver's to read).
const TRANSFER: &str = "mutation($input: CreateTransferInput!) { createTransfer(input: $input) {
    transfer { id amount currency fromAccount { id } toAccount { id } }
    fromAccount { balance } fromEntry { amount transfer { id } } } }";

async fn an_account_per_currency_and_a_second_one_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    app.open_account(&alice, "USD").await;
    app.open_account(&alice, "EUR").await;

    let again = app.graphql("mutation { createAccount(currency: USD) { id } }", json!({}), Some(&alice)).await;

    assert_eq!(again.error_code(), Some("ACCOUNT_EXISTS"));
    let mine = app.graphql("{ me { accounts { currency balance } } }", json!({}), Some(&alice)).await;
    assert_eq!(
        mine.data("me/accounts"),
        &json!([{ "currency": "USD", "balance": "0" }, { "currency": "EUR", "balance": "0" }])
    );
}

async fn only_a_banker_deposits_and_only_positive_whole_amounts(backend: Backend) {
    let app = spawn_app(backend).await;
    let banker = app.banker("banker").await;
    let alice = app.user("alice").await;
    let account = app.open_account(&alice, "USD").await;
    let deposit =
        "mutation($input: DepositInput!) { deposit(input: $input) { amount account { balance } transfer { id } } }";
    let input = |amount: Value| json!({ "input": { "accountId": account, "amount": amount } });

    assert_eq!(app.graphql(deposit, input(json!(100)), Some(&alice)).await.error_code(), Some("FORBIDDEN"));
    for bad in [json!(0), json!(-5), json!("12.5"), json!(1.5), json!("9223372036854775808"), json!("ten")] {
        let response = app.graphql(deposit, input(bad.clone()), Some(&banker)).await;
        assert_eq!(response.error_code(), Some("BAD_USER_INPUT"), "{bad}: {:#}", response.0);
    }
    let unknown = app
        .graphql(
            deposit,
            json!({ "input": { "accountId": global_id("Account", 999_999), "amount": 5 } }),
            Some(&banker),
        )
        .await;
    assert_eq!(unknown.error_code(), Some("NOT_FOUND"));

    let deposited = app.graphql(deposit, input(json!("1250")), Some(&banker)).await;
    assert_eq!(
        deposited.data("deposit"),
        &json!({ "amount": "1250", "account": { "balance": "1250" }, "transfer": null })
    );
    assert_ledger_consistent(&app.db).await;
}

async fn a_transfer_moves_money_and_writes_two_entries(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, bob, .. } = AliceAndBob::open(&app).await;

    let response =
        app.graphql(TRANSFER, transfer_input(&alice.account, &bob.account, "2500", "USD"), Some(&alice.token)).await;

    response.assert_ok();
    assert_eq!(response.str("createTransfer/transfer/amount"), "2500");
    assert_eq!(response.str("createTransfer/transfer/currency"), "USD");
    assert_eq!(response.str("createTransfer/fromAccount/balance"), "7500");
    assert_eq!(response.str("createTransfer/fromEntry/amount"), "-2500");
    let newest = "query($id: ID!) { account(id: $id) { entries(first: 1) { nodes { amount balanceAfter } } } }";
    let bobs = app.graphql(newest, json!({ "id": bob.account }), Some(&bob.token)).await;
    assert_eq!(bobs.assert_ok().str("account/entries/nodes/0/amount"), "2500");
    assert_eq!(bobs.str("account/entries/nodes/0/balanceAfter"), "7500");
    assert_eq!(response.data("createTransfer/fromEntry/transfer/id"), response.data("createTransfer/transfer/id"));
    assert_eq!(app.balance(&bob.token, &bob.account).await, "7500");
    assert_eq!(assert_ledger_consistent(&app.db).await, 15_000);
}

async fn a_transfer_is_refused_with_a_clear_code_for_each_broken_rule(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { banker, alice, bob } = AliceAndBob::open(&app).await;
    let alice_eur = app.open_account(&alice.token, "EUR").await;
    let bob_eur = app.open_account(&bob.token, "EUR").await;
    app.deposit(&banker, &alice_eur, 100).await;
    let code = |input: Value, token: String| {
        let app = &app;
        async move { app.graphql(TRANSFER, input, Some(&token)).await.error_code().map(str::to_owned) }
    };

    let cases = [
        (transfer_input(&alice.account, &bob_eur, 10, "USD"), alice.token.clone(), "CURRENCY_MISMATCH"),
        (transfer_input(&alice_eur, &bob_eur, 10, "USD"), alice.token.clone(), "CURRENCY_MISMATCH"),
        (transfer_input(&alice.account, &alice.account, 10, "USD"), alice.token.clone(), "SAME_ACCOUNT"),
        (transfer_input(&alice.account, &bob.account, 10_001, "USD"), alice.token.clone(), "INSUFFICIENT_FUNDS"),
        (transfer_input(&alice.account, &bob.account, 0, "USD"), alice.token.clone(), "BAD_USER_INPUT"),
        (transfer_input(&alice.account, &bob.account, -10, "USD"), alice.token.clone(), "BAD_USER_INPUT"),
        (transfer_input(&alice.account, &global_id("Account", 999_999), 10, "USD"), alice.token.clone(), "NOT_FOUND"),
        (transfer_input(&global_id("Account", 999_999), &bob.account, 10, "USD"), alice.token.clone(), "NOT_FOUND"),
        (transfer_input(&bob.account, &alice.account, 10, "USD"), alice.token.clone(), "FORBIDDEN"),
        (transfer_input(&bob.account, &alice.account, 10, "USD"), banker.clone(), "FORBIDDEN"),
    ];
    for (input, token, expected) in cases {
        assert_eq!(code(input.clone(), token).await.as_deref(), Some(expected), "{input}");
    }
    assert_eq!(assert_ledger_consistent(&app.db).await, 15_100);
    assert_eq!(app.balance(&alice.token, &alice.account).await, "10000");
}

async fn accounts_and_transfers_are_visible_to_their_owners_and_bankers_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { banker, alice, bob } = AliceAndBob::open(&app).await;
    let carol = app.user("carol").await;
    let sent =
        app.graphql(TRANSFER, transfer_input(&alice.account, &bob.account, 100, "USD"), Some(&alice.token)).await;
    let transfer_id = sent.str("createTransfer/transfer/id");
    let account = |id: &str| json!({ "id": id });
    let read_account = "query($id: ID!) { account(id: $id) { id owner { username } } }";
    let read_transfer = "query($id: ID!) { transfer(id: $id) { amount } }";

    assert_eq!(app.graphql(read_account, account(&alice.account), Some(&carol)).await.error_code(), Some("FORBIDDEN"));
    assert_eq!(
        app.graphql(read_account, account(&alice.account), Some(&banker)).await.str("account/owner/username"),
        "alice"
    );
    assert_eq!(
        app.graphql(read_account, account(&global_id("Account", 999_999)), Some(&alice.token)).await.data("account"),
        &Value::Null
    );
    assert_eq!(app.graphql(read_transfer, account(&transfer_id), Some(&carol)).await.error_code(), Some("FORBIDDEN"));
    for token in [&alice.token, &bob.token, &banker] {
        assert_eq!(app.graphql(read_transfer, account(&transfer_id), Some(token)).await.str("transfer/amount"), "100");
    }
    // The sender sees the receiving account, but not its balance.
    let peek = app
        .graphql(
            "query($id: ID!) { transfer(id: $id) { toAccount { balance } } }",
            account(&transfer_id),
            Some(&alice.token),
        )
        .await;
    assert_eq!(peek.error_code(), Some("FORBIDDEN"));
}

async fn an_accounts_history_pages_newest_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, bob, .. } = AliceAndBob::open(&app).await;
    for amount in [1, 2, 3] {
        app.graphql(TRANSFER, transfer_input(&alice.account, &bob.account, amount, "USD"), Some(&alice.token))
            .await
            .assert_ok();
    }
    let history = "query($id: ID!, $after: String) { account(id: $id) {
        entries(first: 2, after: $after) { edges { node { amount } } pageInfo { hasNextPage endCursor } }
        transfers(first: 10) { edges { node { amount } } } } }";

    let first = app.graphql(history, json!({ "id": alice.account }), Some(&alice.token)).await;
    let amounts = |r: &tests::Response, path: &str| -> Vec<String> {
        r.data(path)
            .as_array()
            .expect("edges")
            .iter()
            .map(|e| e["node"]["amount"].as_str().expect("amount").to_owned())
            .collect()
    };
    assert_eq!(amounts(&first, "account/entries/edges"), ["-3", "-2"]);
    assert_eq!(amounts(&first, "account/transfers/edges"), ["3", "2", "1"]);
    let next = app
        .graphql(
            history,
            json!({ "id": alice.account, "after": first.str("account/entries/pageInfo/endCursor") }),
            Some(&alice.token),
        )
        .await;
    assert_eq!(amounts(&next, "account/entries/edges"), ["-1", "10000"]);
    assert_eq!(next.data("account/entries/pageInfo/hasNextPage"), &json!(false));
}

async fn a_retried_transfer_with_the_same_idempotency_key_moves_money_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, bob, .. } = AliceAndBob::open(&app).await;
    let mut input = transfer_input(&alice.account, &bob.account, 700, "USD");
    input["input"]["idempotencyKey"] = json!("order-42");

    let first = app.graphql(TRANSFER, input.clone(), Some(&alice.token)).await;
    let retry = app.graphql(TRANSFER, input.clone(), Some(&alice.token)).await;
    input["input"]["amount"] = json!(701);
    let changed = app.graphql(TRANSFER, input, Some(&alice.token)).await;

    assert_eq!(first.data("createTransfer/transfer"), retry.data("createTransfer/transfer"));
    assert_eq!(changed.error_code(), Some("IDEMPOTENCY_KEY_REUSED"));
    assert_eq!(app.balance(&alice.token, &alice.account).await, "9300");
    assert_ledger_consistent(&app.db).await;
}

async fn a_token_whose_session_ended_or_whose_user_changed_moves_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { banker, alice, bob } = AliceAndBob::open(&app).await;
    let transfer = |token: String| {
        let app = &app;
        let input = transfer_input(&alice.account, &bob.account, 100, "USD");
        async move { app.graphql(TRANSFER, input, Some(&token)).await.error_code().map(str::to_owned) }
    };
    // Deletion needs empty accounts: alice moves her money out first, while her token is as fresh as can be.
    let everything = transfer_input(&alice.account, &bob.account, 10_000, "USD");
    app.graphql(TRANSFER, everything, Some(&alice.token)).await.assert_ok();
    let (logged_out, refresh) = app.login("alice").await;
    app.graphql("mutation($t: String!) { logout(refreshToken: $t) }", json!({ "t": refresh }), None).await.assert_ok();
    assert_eq!(transfer(logged_out).await.as_deref(), Some("UNAUTHENTICATED"), "after logout");

    let mut earlier = claims_of(&alice.token);
    earlier["iat"] = json!(chrono::Utc::now().timestamp() - 10);
    let issued_before_the_change = sign(&earlier, JWT_SECRET);
    let new_password = "mutation($current: String!) { updateUser(input: { password: \"a brand new passphrase\", currentPassword: $current }) { username } }";
    app.graphql(new_password, json!({ "current": PASSWORD }), Some(&alice.token)).await.assert_ok();
    assert_eq!(transfer(issued_before_the_change).await.as_deref(), Some("UNAUTHENTICATED"), "after a password change");

    app.graphql("mutation { deleteUser(username: \"alice\") }", json!({}), Some(&banker)).await.assert_ok();
    assert_eq!(transfer(alice.token).await.as_deref(), Some("UNAUTHENTICATED"), "after deletion");
    assert_eq!(assert_ledger_consistent(&app.db).await, 15_000);
}

async fn a_retried_transfer_gets_its_first_answer_even_when_it_could_no_longer_succeed(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, bob, .. } = AliceAndBob::open(&app).await;
    let mut input = transfer_input(&alice.account, &bob.account, 10_000, "USD");
    input["input"]["idempotencyKey"] = json!("everything");

    let first = app.graphql(TRANSFER, input.clone(), Some(&alice.token)).await;
    let retry = app.graphql(TRANSFER, input, Some(&alice.token)).await;

    assert_eq!(first.assert_ok().data("createTransfer/transfer"), retry.assert_ok().data("createTransfer/transfer"));
    assert_eq!(app.balance(&alice.token, &alice.account).await, "0");
    assert_ledger_consistent(&app.db).await;
}

/// Sends ten identical requests with one idempotency key at once, spread over `apps`, and asserts that exactly one
/// transfer was made and that every request was answered with it.
async fn ten_identical_keyed_requests_make_one_transfer(apps: &[&TestApp]) {
    let app = apps[0];
    let AliceAndBob { alice, bob, .. } = AliceAndBob::open(app).await;
    let mut input = transfer_input(&alice.account, &bob.account, 1_000, "USD");
    input["input"]["idempotencyKey"] = json!("double-click");

    let requests = (0..10).map(|i| apps[i % apps.len()].graphql(TRANSFER, input.clone(), Some(&alice.token)));
    let responses = futures::future::join_all(requests).await;

    let ids: std::collections::HashSet<String> =
        responses.iter().map(|r| r.assert_ok().str("createTransfer/transfer/id")).collect();
    assert_eq!(ids.len(), 1, "one transfer, answered ten times: {ids:?}");
    assert_eq!(app.count("SELECT count(*) FROM transfers").await, 1, "one transfer in the database");
    assert_eq!(app.balance(&alice.token, &alice.account).await, "9000");
    assert_eq!(assert_ledger_consistent(&app.db).await, AliceAndBob::TOTAL);
}

async fn ten_concurrent_identical_requests_with_one_key_make_exactly_one_transfer(backend: Backend) {
    let app = spawn_app(backend).await;

    ten_identical_keyed_requests_make_one_transfer(&[&app]).await;
}

/// Two servers on one PostgreSQL database, as two replicas behind a load balancer: the key is claimed in the
/// database, not in a server's memory, so ten identical requests spread over both still make one transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_identical_keyed_requests_across_two_servers_on_one_database_make_exactly_one_transfer() {
    let first = spawn_app(Backend::Postgres).await;
    let second = spawn_app_with(Arc::clone(&first.database), &[]).await;

    ten_identical_keyed_requests_make_one_transfer(&[&first, &second]).await;
}

/// The server holds its PostgreSQL connections for single statements rather than borrowing them from a pool that
/// checks them: one the database closed while it sat idle (a restart, an operator's `pg_terminate_backend`) is found
/// out and replaced before a request runs on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_database_closed_while_they_sat_idle_fail_no_transfer() {
    let app = spawn_app(Backend::Postgres).await;
    let AliceAndBob { alice, bob, .. } = AliceAndBob::open(&app).await;
    let transfer = || app.graphql(TRANSFER, transfer_input(&alice.account, &bob.account, 1, "USD"), Some(&alice.token));
    // At once, so that several connections are held.
    for response in futures::future::join_all((0..4).map(|_| transfer())).await {
        response.assert_ok();
    }

    let closed = app
        .count(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await;
    assert!(closed >= 2, "the server's connections closed: {closed}");
    tokio::time::sleep(Duration::from_millis(600)).await;

    for _ in 0..4 {
        transfer().await.assert_ok();
    }
    assert_eq!(assert_ledger_consistent(&app.db).await, AliceAndBob::TOTAL);
}

async fn one_idempotency_key_on_two_debited_accounts_makes_two_transfers(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, bob, .. } = AliceAndBob::open(&app).await;
    let keyed = |from: &str, to: &str| {
        let mut input = transfer_input(from, to, 100, "USD");
        input["input"]["idempotencyKey"] = json!("same-key");
        input
    };

    let from_alice = app.graphql(TRANSFER, keyed(&alice.account, &bob.account), Some(&alice.token)).await;
    let from_bob = app.graphql(TRANSFER, keyed(&bob.account, &alice.account), Some(&bob.token)).await;

    // Keys are per debited account: each account's key is its own.
    let ids = [
        from_alice.assert_ok().str("createTransfer/transfer/id"),
        from_bob.assert_ok().str("createTransfer/transfer/id"),
    ];
    assert_ne!(ids[0], ids[1]);
    assert_eq!(app.balance(&alice.token, &alice.account).await, "10000");
    assert_eq!(app.balance(&bob.token, &bob.account).await, "5000");
    assert_eq!(assert_ledger_consistent(&app.db).await, AliceAndBob::TOTAL);
}

async fn concurrent_transfers_both_ways_never_lose_money_and_every_read_sees_the_total(backend: Backend) {
    let app = spawn_app(backend).await;
    let bank = Bank::open(&app, 6, 1_000).await;

    let readers = (0..2).map(|_| bank.watch_total(&app, 10));
    let apps = [&app];
    let (outcomes, totals) = tokio::join!(bank.run_transfers(&apps, 15), futures::future::join_all(readers));

    outcomes.assert_mostly_succeeded();
    // Each read sums balances read by separate statements while transfers commit between them: only a snapshot
    // shared by the whole query keeps the sum whole.
    assert!(totals.iter().flatten().all(|total| *total == bank.total), "a read saw money in flight: {totals:?}");
    assert_eq!(assert_ledger_consistent(&app.db).await, bank.total);
}

async fn nested_users_and_accounts_cost_a_few_statements_whatever_the_page_size(backend: Backend) {
    let app = spawn_app(backend).await;
    let banker = app.banker("banker").await;
    let query = "{ users(first: 100) { edges { node { username email emails accounts { id balance currency } } } } }";
    let mut counts = Vec::new();
    for (from, to) in [(0, 2), (2, 25)] {
        for i in from..to {
            let token = app.user(&format!("user_{i}")).await;
            app.open_account(&token, "USD").await;
            app.open_account(&token, "EUR").await;
        }
        let before = app.metric("db_statements_total").await;
        let response = app.graphql(query, json!({}), Some(&banker)).await;
        assert_eq!(response.data("users/edges").as_array().map(Vec::len), Some(to + 1));
        counts.push(app.metric("db_statements_total").await - before);
    }

    eprintln!("SQL statements for 3 and 26 users with their accounts and emails: {counts:?}");
    // Authentication (unless the session is remembered), the page of users, their accounts, their emails: a
    // request's loads wait until its fields can go no further, so each kind is one batch. One statement per user
    // would be 26 here.
    assert!(counts.iter().all(|&count| count <= 4), "{counts:?}");
}

on_both_backends!(
    an_account_per_currency_and_a_second_one_is_refused,
    only_a_banker_deposits_and_only_positive_whole_amounts,
    a_transfer_moves_money_and_writes_two_entries,
    a_transfer_is_refused_with_a_clear_code_for_each_broken_rule,
    accounts_and_transfers_are_visible_to_their_owners_and_bankers_only,
    an_accounts_history_pages_newest_first,
    a_retried_transfer_with_the_same_idempotency_key_moves_money_once,
    a_retried_transfer_gets_its_first_answer_even_when_it_could_no_longer_succeed,
    a_token_whose_session_ended_or_whose_user_changed_moves_nothing,
    ten_concurrent_identical_requests_with_one_key_make_exactly_one_transfer,
    one_idempotency_key_on_two_debited_accounts_makes_two_transfers,
    concurrent_transfers_both_ways_never_lose_money_and_every_read_sees_the_total,
    nested_users_and_accounts_cost_a_few_statements_whatever_the_page_size,
);
