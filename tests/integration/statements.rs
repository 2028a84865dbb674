//! Statements: an account's ledger over a period, with balances and totals that agree with its entries, also while
//! the ledger is being written.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tests::{AliceAndBob, Backend, Bank, TestApp, on_both_backends, spawn_app};

const STATEMENT: &str = "query($id: ID!, $since: DateTime!, $until: DateTime!) { account(id: $id) { balance
    statement(since: $since, until: $until) { openingBalance closingBalance totalIn totalOut entryCount
      entries(first: 100) { edges { node { amount kind } } } } } }";

/// A moment between what happened before and what happens after: every entry written before it was stamped
/// earlier, and every entry after it later (SQLite stamps to the millisecond, hence the pauses).
async fn moment() -> DateTime<Utc> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let now = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    now
}

fn money(value: &Value) -> i64 {
    value.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("money, not {value}"))
}

struct Figures {
    balance: i64,
    opening: i64,
    closing: i64,
    total_in: i64,
    total_out: i64,
    count: i64,
    amounts: Vec<i64>,
}

async fn statement(app: &TestApp, token: &str, account: &str, since: DateTime<Utc>, until: DateTime<Utc>) -> Figures {
    let response = app.graphql(STATEMENT, json!({ "id": account, "since": since, "until": until }), Some(token)).await;
    response.assert_ok();
    let statement = response.data("account/statement");
    let edges = statement["entries"]["edges"].as_array().expect("edges");
    Figures {
        balance: money(response.data("account/balance")),
        opening: money(&statement["openingBalance"]),
        closing: money(&statement["closingBalance"]),
        total_in: money(&statement["totalIn"]),
        total_out: money(&statement["totalOut"]),
        count: statement["entryCount"].as_i64().expect("a count"),
        amounts: edges.iter().map(|edge| money(&edge["node"]["amount"])).collect(),
    }
}

async fn a_statement_gives_the_periods_balances_totals_and_entries(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { banker, alice, bob } = AliceAndBob::open(&app).await;
    let start = moment().await;
    app.deposit(&banker, &alice.account, 500).await;
    app.graphql(tests::TRANSFER, tests::transfer_input(&alice.account, &bob.account, 2_000, "USD"), Some(&alice.token))
        .await
        .assert_ok();
    app.graphql(tests::TRANSFER, tests::transfer_input(&bob.account, &alice.account, 300, "USD"), Some(&bob.token))
        .await
        .assert_ok();
    let end = moment().await;
    app.deposit(&banker, &alice.account, 7).await;

    let december = statement(&app, &alice.token, &alice.account, start, end).await;
    let after = statement(&app, &alice.token, &alice.account, end, moment().await).await;

    assert_eq!((december.opening, december.closing), (10_000, 8_800));
    assert_eq!((december.total_in, december.total_out, december.count), (800, 2_000, 3));
    assert_eq!(december.amounts, [300, -2_000, 500], "the period's entries, newest first");
    assert_eq!((after.opening, after.closing, after.count), (8_800, 8_807, 1), "the next period opens at the close");
}

async fn the_entries_and_transfers_of_an_account_can_be_limited_to_a_period(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, bob, .. } = AliceAndBob::open(&app).await;
    let start = moment().await;
    app.graphql(tests::TRANSFER, tests::transfer_input(&alice.account, &bob.account, 1, "USD"), Some(&alice.token))
        .await
        .assert_ok();
    let end = moment().await;

    let response = app
        .graphql(
            "query($id: ID!, $since: DateTime, $until: DateTime) { account(id: $id) {
                entries(since: $since, until: $until) { edges { node { kind } } }
                transfers(since: $since, until: $until) { edges { node { amount } } }
                before: entries(until: $since) { edges { node { kind } } } } }",
            json!({ "id": alice.account, "since": start, "until": end }),
            Some(&alice.token),
        )
        .await;

    assert_eq!(response.data("account/entries/edges"), &json!([{ "node": { "kind": "TRANSFER_OUT" } }]));
    assert_eq!(response.data("account/transfers/edges"), &json!([{ "node": { "amount": "1" } }]));
    assert_eq!(response.data("account/before/edges"), &json!([{ "node": { "kind": "DEPOSIT" } }]));
}

async fn a_period_that_ends_before_it_starts_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, .. } = AliceAndBob::open(&app).await;
    let now = Utc::now();
    let response = app
        .graphql(
            STATEMENT,
            json!({ "id": alice.account, "since": now, "until": now - chrono::Duration::hours(1) }),
            Some(&alice.token),
        )
        .await;

    assert_eq!(response.error_code(), Some("BAD_USER_INPUT"));
    assert_eq!(response.error_field(), Some("until"));
}

async fn someone_elses_statement_is_forbidden(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, bob, .. } = AliceAndBob::open(&app).await;
    let now = Utc::now();
    let response =
        app.graphql(STATEMENT, json!({ "id": alice.account, "since": now, "until": now }), Some(&bob.token)).await;

    assert_eq!(response.error_code(), Some("FORBIDDEN"));
}

/// Statements read while transfers commit always add up, and one up to now closes at the balance read beside it.
async fn statements_read_while_the_ledger_is_written_always_add_up(backend: Backend) {
    let app = spawn_app(backend).await;
    let bank = Bank::open(&app, 6, 5_000).await;
    let start = moment().await;
    let apps = [&app];
    let reading = async {
        let mut read = 0;
        for round in 0..30 {
            let holder = &bank.holders[round % bank.holders.len()];
            let until = Utc::now() + chrono::Duration::hours(1);
            let figures = statement(&app, &holder.token, &holder.account, start, until).await;
            assert_eq!(figures.closing, figures.opening + figures.total_in - figures.total_out, "adds up");
            assert_eq!(figures.closing, figures.balance, "closes at the balance of the same snapshot");
            assert_eq!(figures.opening, 5_000);
            if figures.count <= 100 {
                assert_eq!(figures.amounts.len() as i64, figures.count, "entryCount counts the period's entries");
                assert_eq!(figures.amounts.iter().filter(|a| **a > 0).sum::<i64>(), figures.total_in);
            }
            read += 1;
        }
        read
    };
    let (outcomes, read) = tokio::join!(bank.run_transfers(&apps, 10), reading);

    outcomes.assert_mostly_succeeded();
    assert_eq!(read, 30);
}

on_both_backends!(
    a_statement_gives_the_periods_balances_totals_and_entries,
    the_entries_and_transfers_of_an_account_can_be_limited_to_a_period,
    a_period_that_ends_before_it_starts_is_refused,
    someone_elses_statement_is_forbidden,
    statements_read_while_the_ledger_is_written_always_add_up,
);
