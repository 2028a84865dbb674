//! Paying a user by username, and withdrawals: how money reaches a friend whose account id you do not know, and how
//! it leaves the bank.

use serde_json::{Value, json};
use tests::{AliceAndBob, Backend, Bank, TestApp, assert_ledger_consistent, on_both_backends, spawn_app};

const PAY: &str = "mutation($input: CreateTransferInput!) {
    createTransfer(input: $input) { transfer { id toAccount { id } } fromEntry { kind } } }";

const WITHDRAW: &str = "mutation($input: WithdrawInput!) {
    withdraw(input: $input) { id kind amount balanceAfter } }";

fn pay(from: &str, to_username: &str, amount: i64, currency: &str) -> Value {
    json!({ "input": { "fromAccountId": from, "toUsername": to_username, "amount": amount, "currency": currency } })
}

fn withdrawal(account: &str, amount: i64, key: Option<&str>) -> Value {
    json!({ "input": { "accountId": account, "amount": amount, "idempotencyKey": key } })
}

async fn kinds_of(app: &TestApp, token: &str, account: &str) -> Vec<String> {
    let response = app
        .graphql(
            "query($id: ID!) { account(id: $id) { entries(first: 10) { edges { node { kind } } } } }",
            json!({ "id": account }),
            Some(token),
        )
        .await;
    let edges = response.data("account/entries/edges").as_array().expect("edges").clone();
    edges.iter().map(|edge| edge["node"]["kind"].as_str().expect("a kind").to_owned()).collect()
}

async fn paying_a_username_credits_their_account_in_the_transfers_currency(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, bob, .. } = AliceAndBob::open(&app).await;
    let bob_eur = app.open_account(&bob.token, "EUR").await;

    let response = app.graphql(PAY, pay(&alice.account, "bob", 250, "USD"), Some(&alice.token)).await;

    response.assert_ok();
    assert_eq!(response.str("createTransfer/transfer/toAccount/id"), bob.account, "bob's USD account, not EUR");
    assert_eq!(app.balance(&bob.token, &bob.account).await, "5250");
    assert_eq!(app.balance(&bob.token, &bob_eur).await, "0");
    assert_eq!(response.str("createTransfer/fromEntry/kind"), "TRANSFER_OUT");
    assert_eq!(kinds_of(&app, &bob.token, &bob.account).await, ["TRANSFER_IN", "DEPOSIT"]);
}

async fn an_unknown_a_deleted_or_an_unfit_receiver_is_not_found_alike(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { banker, alice, .. } = AliceAndBob::open(&app).await;
    let carol = app.user("carol").await;
    app.open_account(&carol, "USD").await;
    app.graphql("mutation { deleteUser(username: \"carol\") }", json!({}), Some(&banker)).await.assert_ok();

    for (receiver, currency) in [("nobody", "USD"), ("carol", "USD"), ("bob", "EUR"), ("Not A Name!", "USD")] {
        let response = app.graphql(PAY, pay(&alice.account, receiver, 1, currency), Some(&alice.token)).await;
        assert_eq!(response.error_code(), Some("NOT_FOUND"), "{receiver} in {currency}: {:#}", response.0);
        let message = response.0["errors"][0]["message"].clone();
        assert_eq!(message, json!("account not found"), "the same words for each");
    }
    assert_eq!(app.balance(&alice.token, &alice.account).await, "10000", "nothing moved");
}

async fn the_receiver_is_named_exactly_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, bob, .. } = AliceAndBob::open(&app).await;
    let both = json!({ "input": { "fromAccountId": alice.account, "toAccountId": bob.account, "toUsername": "bob",
        "amount": 1, "currency": "USD" } });
    let neither = json!({ "input": { "fromAccountId": alice.account, "amount": 1, "currency": "USD" } });

    for input in [both, neither] {
        let response = app.graphql(PAY, input, Some(&alice.token)).await;
        assert_eq!(response.error_code(), Some("BAD_USER_INPUT"), "{:#}", response.0);
        assert_eq!(response.error_field(), Some("toAccountId"));
    }
}

async fn a_payment_by_username_retried_with_its_key_moves_the_money_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, bob, .. } = AliceAndBob::open(&app).await;
    let mut input = pay(&alice.account, "bob", 300, "USD");
    input["input"]["idempotencyKey"] = json!("rent-december");

    let first = app.graphql(PAY, input.clone(), Some(&alice.token)).await;
    let by_id = json!({ "input": { "fromAccountId": alice.account, "toAccountId": bob.account, "amount": 300,
        "currency": "USD", "idempotencyKey": "rent-december" } });
    let second = app.graphql(PAY, input, Some(&alice.token)).await;
    let third = app.graphql(PAY, by_id, Some(&alice.token)).await;

    let id = first.str("createTransfer/transfer/id");
    assert_eq!(second.str("createTransfer/transfer/id"), id);
    assert_eq!(third.str("createTransfer/transfer/id"), id, "the same receiver, by id");
    assert_eq!(app.balance(&bob.token, &bob.account).await, "5300");
}

async fn a_withdrawal_takes_money_out_of_the_bank_as_an_entry(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, .. } = AliceAndBob::open(&app).await;

    let response = app.graphql(WITHDRAW, withdrawal(&alice.account, 2_500, None), Some(&alice.token)).await;

    response.assert_ok();
    assert_eq!(response.str("withdraw/kind"), "WITHDRAWAL");
    assert_eq!(response.str("withdraw/amount"), "-2500");
    assert_eq!(response.str("withdraw/balanceAfter"), "7500");
    assert_eq!(app.balance(&alice.token, &alice.account).await, "7500");
    assert_eq!(assert_ledger_consistent(&app.db).await, AliceAndBob::TOTAL - 2_500, "the bank holds less");
}

async fn a_withdrawal_beyond_the_balance_is_refused_and_takes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, .. } = AliceAndBob::open(&app).await;

    let response = app.graphql(WITHDRAW, withdrawal(&alice.account, 10_001, None), Some(&alice.token)).await;

    assert_eq!(response.error_code(), Some("INSUFFICIENT_FUNDS"));
    assert_eq!(app.balance(&alice.token, &alice.account).await, "10000");
}

async fn only_the_owner_or_a_banker_withdraws(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { banker, alice, bob } = AliceAndBob::open(&app).await;

    let by_bob = app.graphql(WITHDRAW, withdrawal(&alice.account, 1, None), Some(&bob.token)).await;
    let by_banker = app.graphql(WITHDRAW, withdrawal(&alice.account, 1, None), Some(&banker)).await;
    let anonymous = app.graphql(WITHDRAW, withdrawal(&alice.account, 1, None), None).await;

    assert_eq!(by_bob.error_code(), Some("FORBIDDEN"));
    by_banker.assert_ok();
    assert_eq!(anonymous.error_code(), Some("UNAUTHENTICATED"));
    assert_eq!(app.balance(&alice.token, &alice.account).await, "9999");
}

async fn a_withdrawal_retried_with_its_key_takes_the_money_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, .. } = AliceAndBob::open(&app).await;
    let input = withdrawal(&alice.account, 1_000, Some("atm-42"));

    let answers =
        futures::future::join_all((0..10).map(|_| app.graphql(WITHDRAW, input.clone(), Some(&alice.token)))).await;
    let other_amount = app.graphql(WITHDRAW, withdrawal(&alice.account, 999, Some("atm-42")), Some(&alice.token)).await;

    let ids: Vec<String> = answers.iter().map(|answer| answer.str("withdraw/id")).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "every answer is the first withdrawal: {ids:?}");
    assert_eq!(app.balance(&alice.token, &alice.account).await, "9000");
    assert_eq!(other_amount.error_code(), Some("IDEMPOTENCY_KEY_REUSED"));
    assert_ledger_consistent(&app.db).await;
}

/// Σ balances = Σ deposits − Σ withdrawals, after deposits, withdrawals and transfers ran at once.
async fn deposits_withdrawals_and_transfers_at_once_keep_the_ledger_whole(backend: Backend) {
    let app = spawn_app(backend).await;
    let bank = Bank::open(&app, 6, 1_000).await;
    let deposits = futures::future::join_all(
        bank.holders.iter().map(|holder| async { app.deposit(&bank.banker, &holder.account, 100).await }),
    );
    let withdrawals = futures::future::join_all(bank.holders.iter().map(|holder| async {
        for _ in 0..5 {
            let input = withdrawal(&holder.account, 50, None);
            let response = app.graphql(WITHDRAW, input, Some(&holder.token)).await;
            assert!(
                response.error_code().is_none() || response.error_code() == Some("INSUFFICIENT_FUNDS"),
                "{:#}",
                response.0
            );
        }
    }));
    let apps = [&app];
    let (_, _, transfers) = tokio::join!(deposits, withdrawals, bank.run_transfers(&apps, 3));
    transfers.assert_mostly_succeeded();

    let withdrawn = app
        .count("SELECT CAST(-coalesce(sum(amount), 0) AS BIGINT) FROM entries WHERE transfer_id IS NULL AND amount < 0")
        .await;
    assert!(withdrawn > 0, "some withdrawals went through");
    assert_eq!(assert_ledger_consistent(&app.db).await, 6 * 1_000 + 6 * 100 - withdrawn);
}

on_both_backends!(
    paying_a_username_credits_their_account_in_the_transfers_currency,
    an_unknown_a_deleted_or_an_unfit_receiver_is_not_found_alike,
    the_receiver_is_named_exactly_once,
    a_payment_by_username_retried_with_its_key_moves_the_money_once,
    a_withdrawal_takes_money_out_of_the_bank_as_an_entry,
    a_withdrawal_beyond_the_balance_is_refused_and_takes_nothing,
    only_the_owner_or_a_banker_withdraws,
    a_withdrawal_retried_with_its_key_takes_the_money_once,
    deposits_withdrawals_and_transfers_at_once_keep_the_ledger_whole,
);
