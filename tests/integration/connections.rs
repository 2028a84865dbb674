//! Relay cursor connections: paging forwards and backwards, with both page flags right, a total count, and
//! cursors that stay put while new rows arrive.

use serde_json::{Value, json};
use tests::{AliceAndBob, Backend, TestApp, on_both_backends, spawn_app};

const ENTRIES: &str = "query($id: ID!, $first: Int, $after: String, $last: Int, $before: String) {
    account(id: $id) { entries(first: $first, after: $after, last: $last, before: $before) {
      totalCount pageInfo { hasPreviousPage hasNextPage } edges { cursor node { amount } } } } }";

/// A page of alice's entries: (amounts, cursors, hasPreviousPage, hasNextPage, totalCount).
struct Seen {
    amounts: Vec<i64>,
    cursors: Vec<String>,
    has_previous: bool,
    has_next: bool,
    total: i64,
}

async fn page(app: &TestApp, token: &str, account: &str, args: Value) -> Seen {
    let mut variables = args;
    variables["id"] = json!(account);
    let response = app.graphql(ENTRIES, variables, Some(token)).await;
    response.assert_ok();
    let connection = response.data("account/entries");
    let edges = connection["edges"].as_array().expect("edges");
    Seen {
        amounts: edges
            .iter()
            .map(|e| e["node"]["amount"].as_str().expect("money").parse().expect("a number"))
            .collect(),
        cursors: edges.iter().map(|e| e["cursor"].as_str().expect("a cursor").to_owned()).collect(),
        has_previous: connection["pageInfo"]["hasPreviousPage"].as_bool().expect("a flag"),
        has_next: connection["pageInfo"]["hasNextPage"].as_bool().expect("a flag"),
        total: connection["totalCount"].as_i64().expect("a count"),
    }
}

/// Alice's ledger, newest first: 5, 4, 3, 2, 1 and her opening deposit of 10 000.
async fn ledger_of_six(app: &TestApp) -> AliceAndBob {
    let bank = AliceAndBob::open(app).await;
    for amount in 1..=5 {
        app.deposit(&bank.banker, &bank.alice.account, amount).await;
    }
    bank
}

async fn first_and_after_page_forwards_with_both_flags_right(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, .. } = ledger_of_six(&app).await;

    let one = page(&app, &alice.token, &alice.account, json!({ "first": 2 })).await;
    let two = page(&app, &alice.token, &alice.account, json!({ "first": 2, "after": one.cursors[1] })).await;
    let three = page(&app, &alice.token, &alice.account, json!({ "first": 2, "after": two.cursors[1] })).await;

    assert_eq!((one.amounts, one.has_previous, one.has_next), (vec![5, 4], false, true));
    assert_eq!((two.amounts, two.has_previous, two.has_next), (vec![3, 2], true, true));
    assert_eq!((three.amounts, three.has_previous, three.has_next), (vec![1, 10_000], true, false));
}

async fn last_and_before_page_backwards_with_both_flags_right(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, .. } = ledger_of_six(&app).await;

    let end = page(&app, &alice.token, &alice.account, json!({ "last": 2 })).await;
    let middle = page(&app, &alice.token, &alice.account, json!({ "last": 2, "before": end.cursors[0] })).await;
    let start = page(&app, &alice.token, &alice.account, json!({ "last": 2, "before": middle.cursors[0] })).await;

    assert_eq!((end.amounts, end.has_previous, end.has_next), (vec![1, 10_000], true, false), "the oldest two");
    assert_eq!((middle.amounts, middle.has_previous, middle.has_next), (vec![3, 2], true, true));
    assert_eq!((start.amounts, start.has_previous, start.has_next), (vec![5, 4], false, true));
}

async fn the_total_count_is_the_whole_lists_whatever_the_page(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { banker, alice, .. } = ledger_of_six(&app).await;

    let first = page(&app, &alice.token, &alice.account, json!({ "first": 1 })).await;
    let last = page(&app, &alice.token, &alice.account, json!({ "last": 3, "before": first.cursors[0] })).await;
    let users =
        app.graphql("{ users(last: 1) { totalCount edges { node { username } } } }", json!({}), Some(&banker)).await;

    assert_eq!((first.total, last.total), (6, 6));
    assert_eq!(users.data("users/totalCount"), &json!(3), "banker, alice and bob");
    assert_eq!(users.data("users/edges/0/node/username"), &json!("bob"), "the last in username order");
}

async fn cursors_stay_put_while_new_entries_arrive(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { banker, alice, .. } = ledger_of_six(&app).await;
    let one = page(&app, &alice.token, &alice.account, json!({ "first": 3 })).await;

    for amount in 100..103 {
        app.deposit(&banker, &alice.account, amount).await;
    }
    let two = page(&app, &alice.token, &alice.account, json!({ "first": 3, "after": one.cursors[2] })).await;
    let newer = page(&app, &alice.token, &alice.account, json!({ "last": 10, "before": one.cursors[0] })).await;

    assert_eq!(two.amounts, [2, 1, 10_000], "the next page goes on where the first stopped");
    assert_eq!(newer.amounts, [102, 101, 100], "what arrived since lies before the first page");
    assert_eq!(two.total, 9);
}

async fn first_and_last_together_or_out_of_range_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, .. } = AliceAndBob::open(&app).await;

    for (args, field) in [
        (json!({ "first": 1, "last": 1 }), "last"),
        (json!({ "last": 101 }), "last"),
        (json!({ "last": -1 }), "last"),
        (json!({ "before": "nonsense" }), "before"),
    ] {
        let mut variables = args.clone();
        variables["id"] = json!(alice.account);
        let response = app.graphql(ENTRIES, variables, Some(&alice.token)).await;
        assert_eq!(response.error_code(), Some("BAD_USER_INPUT"), "{args}");
        assert_eq!(response.error_field(), Some(field), "{args}");
    }
}

on_both_backends!(
    first_and_after_page_forwards_with_both_flags_right,
    last_and_before_page_backwards_with_both_flags_right,
    the_total_count_is_the_whole_lists_whatever_the_page,
    cursors_stay_put_while_new_entries_arrive,
    first_and_last_together_or_out_of_range_are_refused,
);
