//! The ledger under attack: racing retries of one keyed transfer, deleted users' accounts, and balances at the edge
//! of `Money`'s range (issue 14).

use std::collections::HashSet;

use sea_orm::{ConnectionTrait, TransactionTrait};
use serde_json::{Value, json};
use tests::{AliceAndBob, Backend, Response, TRANSFER, TestApp, assert_ledger_consistent, on_both_backends, spawn_app};
const DEPOSIT: &str = "mutation($input: DepositInput!) { deposit(input: $input) { id } }";
const MAX_MONEY: &str = "9223372036854775807";

/// A USD transfer, with an idempotency key or without.
fn transfer_input(from: &str, to: &str, amount: impl Into<Value>, key: Option<&str>) -> Value {
    let mut input = tests::transfer_input(from, to, amount, "USD");
    input["input"]["idempotencyKey"] = json!(key);
    input
}

async fn deposit(app: &TestApp, banker: &str, account: &str, amount: impl Into<Value>) -> Response {
    app.graphql(DEPOSIT, json!({ "input": { "accountId": account, "amount": amount.into() } }), Some(banker)).await
}

async fn delete_user(app: &TestApp, token: &str, username: &str) -> Response {
    app.graphql("mutation($u: String!) { deleteUser(username: $u) }", json!({ "u": username }), Some(token)).await
}

async fn twenty_identical_keyed_requests_at_once_move_the_whole_balance_exactly_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, bob, .. } = AliceAndBob::holding(&app, 1_000, 0).await;
    let (alice, alice_usd, bob, bob_usd) = (alice.token, alice.account, bob.token, bob.account);
    let input = transfer_input(&alice_usd, &bob_usd, 1_000, Some("pay-rent"));

    // All twenty are in flight at once. On PostgreSQL another transaction holds alice's account until they have
    // all started, so each has begun its statement (and its snapshot) before the first can commit; the server's
    // SQLite writer runs them one after the other whatever the test does (and another writer would only make them
    // wait).
    let holder = app.db.begin().await.expect("begin");
    if backend == Backend::Postgres {
        let hold = "UPDATE accounts SET balance = balance WHERE owner = 'alice'";
        holder.execute_unprepared(hold).await.expect("hold alice's account");
    }
    let requests = futures::future::join_all((0..20).map(|_| app.graphql(TRANSFER, input.clone(), Some(&alice))));
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        holder.commit().await.expect("release alice's account");
    };
    let (responses, ()) = tokio::join!(requests, release);

    assert_eq!(app.count("SELECT count(*) FROM transfers").await, 1, "one transfer");
    let transfer = tests::global_id("Transfer", app.count("SELECT id FROM transfers").await);
    // A request racing the first waits on the account's lock, so by the time it answers the first has committed:
    // every one of them gets the first one's transfer, none a refusal.
    for response in &responses {
        assert_eq!(response.assert_ok().str("createTransfer/transfer/id"), transfer, "{:#}", response.0);
    }
    assert_eq!(app.balance(&alice, &alice_usd).await, "0");
    assert_eq!(app.balance(&bob, &bob_usd).await, "1000");
    assert_eq!(assert_ledger_consistent(&app.db).await, 1_000);
}

async fn idempotency_keys_have_1_to_255_characters_and_no_control_characters(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, bob, .. } = AliceAndBob::open(&app).await;

    for key in [String::new(), "x".repeat(256), "a\u{0}b".into(), "line\nbreak".into()] {
        let refused = app
            .graphql(TRANSFER, transfer_input(&alice.account, &bob.account, 1, Some(&key)), Some(&alice.token))
            .await;
        assert_eq!(refused.error_code(), Some("BAD_USER_INPUT"), "{key:?}");
        assert_eq!(refused.error_field(), Some("idempotencyKey"), "{key:?}");
    }
    let longest = "é".repeat(255);
    app.graphql(TRANSFER, transfer_input(&alice.account, &bob.account, 1, Some(&longest)), Some(&alice.token))
        .await
        .assert_ok();
    assert_eq!(app.count("SELECT count(*) FROM transfers").await, 1);
}

async fn a_user_is_deleted_only_once_their_accounts_are_empty(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { banker, alice, bob } = AliceAndBob::open(&app).await;
    let alice_eur = app.open_account(&alice.token, "EUR").await;
    app.deposit(&banker, &alice_eur, 1).await;

    assert_eq!(delete_user(&app, &alice.token, "alice").await.error_code(), Some("ACCOUNT_NOT_EMPTY"));
    app.graphql(TRANSFER, transfer_input(&alice.account, &bob.account, 10_000, None), Some(&alice.token))
        .await
        .assert_ok();
    assert_eq!(delete_user(&app, &banker, "alice").await.error_code(), Some("ACCOUNT_NOT_EMPTY"), "the EUR cent");
    let closed = app.count("SELECT count(*) FROM accounts WHERE closed_at IS NOT NULL").await;
    assert_eq!(closed, 0, "a refused deletion closes nothing");
    assert_eq!(app.graphql("{ me { username } }", json!({}), Some(&alice.token)).await.str("me/username"), "alice");

    let bob_eur = app.open_account(&bob.token, "EUR").await;
    let eur = json!({ "input": { "fromAccountId": alice_eur, "toAccountId": bob_eur, "amount": 1, "currency": "EUR" }});
    app.graphql(TRANSFER, eur, Some(&alice.token)).await.assert_ok();
    assert_eq!(delete_user(&app, &alice.token, "alice").await.data("deleteUser"), &json!(true));
    assert_eq!(app.count("SELECT count(*) FROM accounts WHERE closed_at IS NOT NULL").await, 2);
    assert_eq!(assert_ledger_consistent(&app.db).await, 15_001);
}

async fn a_closed_account_takes_no_money_and_bankers_still_read_its_history(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { banker, alice, bob } = AliceAndBob::open(&app).await;
    let bob_eur = app.open_account(&bob.token, "EUR").await;
    app.graphql(TRANSFER, transfer_input(&bob.account, &alice.account, 5_000, None), Some(&bob.token))
        .await
        .assert_ok();
    assert_eq!(delete_user(&app, &banker, "bob").await.data("deleteUser"), &json!(true));

    assert_eq!(deposit(&app, &banker, &bob.account, 1).await.error_code(), Some("ACCOUNT_CLOSED"));
    let into_closed =
        app.graphql(TRANSFER, transfer_input(&alice.account, &bob.account, 100, None), Some(&alice.token)).await;
    assert_eq!(into_closed.error_code(), Some("ACCOUNT_CLOSED"));
    // ACCOUNT_CLOSED comes after CURRENCY_MISMATCH and before INSUFFICIENT_FUNDS, on both backends.
    let wrong_currency =
        app.graphql(TRANSFER, transfer_input(&alice.account, &bob_eur, 100, None), Some(&alice.token)).await;
    assert_eq!(wrong_currency.error_code(), Some("CURRENCY_MISMATCH"));
    let too_much =
        app.graphql(TRANSFER, transfer_input(&alice.account, &bob.account, 1_000_000, None), Some(&alice.token)).await;
    assert_eq!(too_much.error_code(), Some("ACCOUNT_CLOSED"));

    let history = app
        .graphql(
            "query($id: ID!) { account(id: $id) { balance closedAt owner { username }
                entries { nodes { amount } } transfers { nodes { amount toAccount { id } } } } }",
            json!({ "id": bob.account }),
            Some(&banker),
        )
        .await;
    history.assert_ok();
    assert!(history.data("account/closedAt").is_string(), "{:#}", history.0);
    assert_eq!(history.str("account/balance"), "0");
    assert_eq!(history.data("account/entries/nodes"), &json!([{ "amount": "-5000" }, { "amount": "5000" }]));
    assert_eq!(
        history.data("account/transfers/nodes"),
        &json!([{ "amount": "5000", "toAccount": { "id": alice.account } }])
    );
    let open = app.graphql(
        "query($id: ID!) { account(id: $id) { closedAt } }",
        json!({ "id": alice.account }),
        Some(&alice.token),
    );
    assert_eq!(open.await.data("account/closedAt"), &Value::Null);
    assert_eq!(assert_ledger_consistent(&app.db).await, 15_000);
}

async fn a_deposit_racing_a_deletion_either_lands_first_or_finds_the_account_closed(backend: Backend) {
    let app = spawn_app(backend).await;
    let banker = app.banker("banker").await;
    let mut outcomes = HashSet::new();
    for round in 0..10 {
        let username = format!("user_{round}");
        let token = app.user(&username).await;
        let account = app.open_account(&token, "USD").await;

        let (deposited, deleted) =
            tokio::join!(deposit(&app, &banker, &account, 100), delete_user(&app, &banker, &username));

        let outcome = (deposited.error_code().map(str::to_owned), deleted.error_code().map(str::to_owned));
        match outcome {
            (None, Some(ref code)) => assert_eq!(code, "ACCOUNT_NOT_EMPTY", "{:#}", deleted.0),
            (Some(ref code), None) => assert_eq!(code, "ACCOUNT_CLOSED", "{:#}", deposited.0),
            _ => panic!("exactly one of the two succeeds: {:#} {:#}", deposited.0, deleted.0),
        }
        outcomes.insert(outcome);
    }
    eprintln!("outcomes: {outcomes:?}");
    let frozen = app.count("SELECT count(*) FROM accounts WHERE closed_at IS NOT NULL AND balance <> 0").await;
    assert_eq!(frozen, 0, "money in a closed account");
    assert_ledger_consistent(&app.db).await;
}

async fn a_deposit_past_the_top_of_the_money_range_is_refused_and_moves_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let banker = app.banker("banker").await;
    let alice = app.user("alice").await;
    let alice_usd = app.open_account(&alice, "USD").await;
    deposit(&app, &banker, &alice_usd, MAX_MONEY).await.assert_ok();

    for amount in [json!(1), json!(MAX_MONEY)] {
        let refused = deposit(&app, &banker, &alice_usd, amount.clone()).await;
        assert_eq!(refused.error_code(), Some("BALANCE_OUT_OF_RANGE"), "{amount}: {:#}", refused.0);
    }

    assert_eq!(app.balance(&alice, &alice_usd).await, MAX_MONEY);
    assert_eq!(assert_ledger_consistent(&app.db).await, i64::MAX);
}

async fn a_transfer_into_a_full_account_is_refused_and_moves_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { banker, alice, bob } = AliceAndBob::holding(&app, 10, 0).await;
    let (alice, alice_usd, bob, bob_usd) = (alice.token, alice.account, bob.token, bob.account);
    deposit(&app, &banker, &bob_usd, (i64::MAX - 9).to_string()).await.assert_ok();

    app.graphql(TRANSFER, transfer_input(&alice_usd, &bob_usd, 9, None), Some(&alice)).await.assert_ok();
    let refused = app.graphql(TRANSFER, transfer_input(&alice_usd, &bob_usd, 1, Some("one-more")), Some(&alice)).await;

    assert_eq!(refused.error_code(), Some("BALANCE_OUT_OF_RANGE"), "{:#}", refused.0);
    assert_eq!(app.balance(&alice, &alice_usd).await, "1");
    assert_eq!(app.balance(&bob, &bob_usd).await, MAX_MONEY);
    assert_eq!(app.count("SELECT count(*) FROM transfers").await, 1, "only the transfer that fit");
    // The bank as a whole holds more than one Money can count, so the ledger is checked account by account.
    let unbalanced = app
        .count(
            "SELECT count(*) FROM accounts a WHERE a.balance <> \
         (SELECT coalesce(sum(e.amount), 0) FROM entries e WHERE e.account_id = a.id)",
        )
        .await;
    assert_eq!(unbalanced, 0);
}

on_both_backends!(
    twenty_identical_keyed_requests_at_once_move_the_whole_balance_exactly_once,
    idempotency_keys_have_1_to_255_characters_and_no_control_characters,
    a_user_is_deleted_only_once_their_accounts_are_empty,
    a_closed_account_takes_no_money_and_bankers_still_read_its_history,
    a_deposit_racing_a_deletion_either_lands_first_or_finds_the_account_closed,
    a_deposit_past_the_top_of_the_money_range_is_refused_and_moves_nothing,
    a_transfer_into_a_full_account_is_refused_and_moves_nothing,
);
