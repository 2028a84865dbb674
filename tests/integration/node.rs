//! Relay object identification: users, accounts, entries and transfers have global ids, `node` and `nodes` fetch
//! them as each type's own query would, and every argument that names an object takes its global id only.

use serde_json::{Value, json};
use tests::{
    AliceAndBob, Backend, Received, Socket, TestApp, assert_ledger_consistent, global_id, on_both_backends, spawn_app,
    transfer_input,
};

const NODE: &str = "query($id: ID!) { node(id: $id) { __typename id ... on User { username } \
    ... on Account { balance } ... on Entry { amount } ... on Transfer { amount } } }";
const NODES: &str = "query($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }";

/// The bank the tests run in: alice paid bob 100, and bob paid the banker 10.
struct Scene {
    app: TestApp,
    banker: String,
    alice: String,
    bob: String,
    alice_usd: String,
    bob_usd: String,
    /// Alice's payment to bob, and its two entries.
    alice_to_bob: String,
    alice_entry: String,
    bob_entry: String,
    /// A transfer alice has no part in.
    bob_to_banker: String,
}

impl Scene {
    async fn new(backend: Backend) -> Self {
        let app = spawn_app(backend).await;
        let AliceAndBob { banker, alice, bob } = AliceAndBob::open(&app).await;
        let banker_usd = app.open_account(&banker, "USD").await;
        let pay = "mutation($input: CreateTransferInput!) { createTransfer(input: $input) { transfer { id } \
                   fromEntry { id } } }";
        let paid = app.graphql(pay, transfer_input(&alice.account, &bob.account, 100, "USD"), Some(&alice.token)).await;
        let alice_to_bob = paid.assert_ok().str("createTransfer/transfer/id");
        let alice_entry = paid.str("createTransfer/fromEntry/id");
        let bob_entry = newest_entry(&app, &bob.token, &bob.account).await;
        let paid = app.graphql(pay, transfer_input(&bob.account, &banker_usd, 10, "USD"), Some(&bob.token)).await;
        let bob_to_banker = paid.assert_ok().str("createTransfer/transfer/id");
        Self {
            app,
            banker,
            alice: alice.token,
            bob: bob.token,
            alice_usd: alice.account,
            bob_usd: bob.account,
            alice_to_bob,
            alice_entry,
            bob_entry,
            bob_to_banker,
        }
    }

    async fn node(&self, id: &str, token: &str) -> tests::Response {
        self.app.graphql(NODE, json!({ "id": id }), Some(token)).await
    }
}

/// The id of an account's newest entry, as its owner reads it.
async fn newest_entry(app: &TestApp, token: &str, account: &str) -> String {
    let query = "query($id: ID!) { account(id: $id) { entries(first: 1) { nodes { id } } } }";
    app.graphql(query, json!({ "id": account }), Some(token)).await.assert_ok().str("account/entries/nodes/0/id")
}

/// Whether the response holds nothing at `path` under `data` (a refused field is null, or left out with its error).
fn withheld(response: &tests::Response, path: &str) -> bool {
    response.0.pointer(&format!("/data/{path}")).is_none_or(Value::is_null)
}

/// Each error's code and response path.
fn errors(response: &tests::Response) -> Vec<(String, Value)> {
    let errors = response.0["errors"].as_array().cloned().unwrap_or_default();
    errors
        .iter()
        .map(|e| (e["extensions"]["code"].as_str().unwrap_or_default().to_owned(), e["path"].clone()))
        .collect()
}

async fn every_type_comes_back_from_node_by_the_id_it_answers_with(backend: Backend) {
    let scene = Scene::new(backend).await;
    let me = scene.app.graphql("{ me { id } }", json!({}), Some(&scene.alice)).await.assert_ok().str("me/id");
    let cases = [
        (me.as_str(), json!({ "__typename": "User", "id": me, "username": "alice" })),
        (&scene.alice_usd, json!({ "__typename": "Account", "id": scene.alice_usd, "balance": "9900" })),
        (&scene.alice_entry, json!({ "__typename": "Entry", "id": scene.alice_entry, "amount": "-100" })),
        (&scene.alice_to_bob, json!({ "__typename": "Transfer", "id": scene.alice_to_bob, "amount": "100" })),
    ];
    for (id, expected) in cases {
        for token in [&scene.alice, &scene.banker] {
            let response = scene.node(id, token).await;
            assert_eq!(response.assert_ok().data("node"), &expected);
        }
    }
    // One key, four types: four objects.
    let ids: Vec<String> = ["Account", "Entry", "Transfer"].iter().map(|kind| global_id(kind, 1)).collect();
    let response = scene.app.graphql(NODES, json!({ "ids": ids }), Some(&scene.banker)).await;
    let types: Vec<String> = (0..3).map(|i| response.str(&format!("nodes/{i}/__typename"))).collect();
    assert_eq!(types, ["Account", "Entry", "Transfer"], "{:#}", response.0);
}

async fn a_global_id_is_base64url_of_the_type_and_the_key_as_the_readme_maps_them(backend: Backend) {
    let scene = Scene::new(backend).await;
    let account = scene.app.count("SELECT id FROM accounts WHERE owner = 'alice'").await;
    let transfer = scene.app.count("SELECT min(id) FROM transfers").await;
    let entry = scene.app.count(&format!("SELECT id FROM entries WHERE transfer_id = {transfer} AND amount < 0")).await;
    assert_eq!(global_id("Account", account), scene.alice_usd);
    assert_eq!(global_id("Transfer", transfer), scene.alice_to_bob);
    assert_eq!(global_id("Entry", entry), scene.alice_entry);
    let me = scene.app.graphql("{ me { id } }", json!({}), Some(&scene.alice)).await;
    assert_eq!(me.str("me/id"), global_id("User", "alice"));
    assert_eq!(global_id("Account", 1), "QWNjb3VudDox", "the README's example");
}

async fn nodes_answers_every_id_in_its_place_and_null_for_what_names_nothing_or_is_not_yours(backend: Backend) {
    let scene = Scene::new(backend).await;
    let ids = [
        scene.alice_usd.clone(),
        "not an id".to_owned(),
        global_id("Account", 999_999),
        "1".to_owned(),
        scene.alice_to_bob.clone(),
        scene.bob_usd.clone(),
        global_id("User", "alice"),
        global_id("Teller", 1),
        scene.alice_entry.clone(),
        scene.bob_to_banker.clone(),
    ];
    let response = scene.app.graphql(NODES, json!({ "ids": ids }), Some(&scene.alice)).await;

    let types: Vec<Value> = response
        .data("nodes")
        .as_array()
        .expect("a list")
        .iter()
        .map(|node| if node.is_null() { Value::Null } else { node["__typename"].clone() })
        .collect();
    assert_eq!(
        types,
        [
            json!("Account"),
            Value::Null,
            Value::Null,
            Value::Null,
            json!("Transfer"),
            Value::Null,
            json!("User"),
            Value::Null,
            json!("Entry"),
            Value::Null
        ],
        "{:#}",
        response.0
    );
    assert_eq!(response.data("nodes/0/id"), &json!(scene.alice_usd));
    let refused = [("FORBIDDEN".to_owned(), json!(["nodes", 5])), ("FORBIDDEN".to_owned(), json!(["nodes", 9]))];
    let mut seen = errors(&response);
    seen.sort_by_key(|(_, path)| path.to_string());
    assert_eq!(seen, refused, "only what is someone else's is refused, each in its own place");

    let as_banker = scene.app.graphql(NODES, json!({ "ids": ids }), Some(&scene.banker)).await;
    let nulls = as_banker.assert_ok().data("nodes").as_array().expect("a list").iter().filter(|n| n.is_null()).count();
    assert_eq!(nulls, 4, "a banker sees everything that exists: {:#}", as_banker.0);
    let unknown = scene.app.graphql(NODE, json!({ "id": global_id("User", "nobody") }), Some(&scene.banker)).await;
    assert_eq!(unknown.assert_ok().data("node"), &Value::Null);
}

async fn a_depositor_is_refused_anothers_objects_through_node_as_through_their_own_fields(backend: Backend) {
    let scene = Scene::new(backend).await;
    let app = &scene.app;
    let pay = "mutation($input: CreateTransferInput!) { createTransfer(input: $input) { toEntry { id } } }";
    let paid = app.graphql(pay, transfer_input(&scene.alice_usd, &scene.bob_usd, 1, "USD"), Some(&scene.alice)).await;
    let bobs_entry = newest_entry(app, &scene.bob, &scene.bob_usd).await;
    let own_fields = [
        (bobs_entry.as_str(), paid, "createTransfer/toEntry"),
        (
            &scene.bob_usd,
            app.graphql(
                "query($id: ID!) { account(id: $id) { id } }",
                json!({ "id": scene.bob_usd }),
                Some(&scene.alice),
            )
            .await,
            "account",
        ),
        (
            &scene.bob_to_banker,
            app.graphql(
                "query($id: ID!) { transfer(id: $id) { id } }",
                json!({ "id": scene.bob_to_banker }),
                Some(&scene.alice),
            )
            .await,
            "transfer",
        ),
        (
            &global_id("User", "bob"),
            app.graphql(r#"{ user(username: "bob") { id } }"#, json!({}), Some(&scene.alice)).await,
            "user",
        ),
    ];
    for (id, own, path) in &own_fields {
        let node = scene.node(id, &scene.alice).await;
        assert!(withheld(&node, "node"), "{:#}", node.0);
        assert_eq!(node.error_code(), Some("FORBIDDEN"), "{:#}", node.0);
        assert!(withheld(own, path), "{:#}", own.0);
        assert_eq!(own.error_code(), node.error_code(), "{path}: {:#}", own.0);
        assert!(scene.node(id, &scene.banker).await.assert_ok().data("node").is_object(), "a banker reads it");
        assert!(scene.node(id, &scene.bob).await.assert_ok().data("node").is_object(), "bob reads his own");
    }
    let anonymous = app.graphql(NODE, json!({ "id": scene.alice_usd }), None).await;
    assert_eq!(anonymous.error_code(), Some("UNAUTHENTICATED"));
}

async fn an_id_of_one_type_is_refused_where_another_types_is_expected(backend: Backend) {
    let scene = Scene::new(backend).await;
    let app = &scene.app;
    let user = global_id("User", "alice");
    let alice = scene.alice.as_str();
    let read = |query: &'static str, id: &str| {
        let variables = json!({ "id": id });
        async move { app.graphql(query, variables, Some(alice)).await }
    };
    let deposit = "mutation($input: DepositInput!) { deposit(input: $input) { id } }";
    let withdraw = "mutation($input: WithdrawInput!) { withdraw(input: $input) { id } }";
    let cases = [
        (read("query($id: ID!) { account(id: $id) { id } }", &scene.alice_to_bob).await, "id"),
        (read("query($id: ID!) { transfer(id: $id) { id } }", &scene.alice_usd).await, "id"),
        (
            app.graphql(
                deposit,
                json!({ "input": { "accountId": scene.alice_entry, "amount": 1 } }),
                Some(&scene.banker),
            )
            .await,
            "accountId",
        ),
        (
            app.graphql(withdraw, json!({ "input": { "accountId": user, "amount": 1 } }), Some(&scene.alice)).await,
            "accountId",
        ),
        (
            app.graphql(
                tests::TRANSFER,
                transfer_input(&scene.alice_to_bob, &scene.bob_usd, 1, "USD"),
                Some(&scene.alice),
            )
            .await,
            "fromAccountId",
        ),
        (
            app.graphql(
                tests::TRANSFER,
                transfer_input(&scene.alice_usd, &scene.bob_entry, 1, "USD"),
                Some(&scene.alice),
            )
            .await,
            "toAccountId",
        ),
    ];
    for (response, field) in cases {
        assert_eq!(response.error_code(), Some("BAD_USER_INPUT"), "{:#}", response.0);
        assert_eq!(response.error_field(), Some(field), "{:#}", response.0);
        let message = response.0["errors"][0]["message"].as_str().expect("a message");
        assert!(message.contains("takes an Account id") || message.contains("takes a Transfer id"), "{message}");
    }

    let mut socket = Socket::connect(&app.address, &scene.alice).await;
    let subscription = "subscription($id: ID!) { entryAdded(accountId: $id) { cursor } }";
    socket.subscribe("1", subscription, json!({ "id": scene.alice_entry })).await;
    let refused = match socket.receive().await {
        Received::Message(message) => message,
        closed => panic!("the socket closed: {closed:?}"),
    };
    let errors = if refused["type"] == "error" { &refused["payload"] } else { &refused["payload"]["errors"] };
    assert_eq!(errors[0]["extensions"]["code"], "BAD_USER_INPUT", "{refused}");
    assert_eq!(errors[0]["extensions"]["field"], "accountId", "{refused}");

    assert_eq!(app.balance(&scene.alice, &scene.alice_usd).await, "9900", "nothing moved");
    assert_ledger_consistent(&app.db).await;
}

async fn a_bare_number_where_an_id_is_expected_is_bad_user_input_that_says_so(backend: Backend) {
    let scene = Scene::new(backend).await;
    let app = &scene.app;
    let key = app.count("SELECT id FROM accounts WHERE owner = 'bob'").await.to_string();
    let responses = [
        (
            app.graphql("query($id: ID!) { account(id: $id) { id } }", json!({ "id": key }), Some(&scene.alice)).await,
            "id",
        ),
        (
            app.graphql(tests::TRANSFER, transfer_input(&scene.alice_usd, &key, 1, "USD"), Some(&scene.alice)).await,
            "toAccountId",
        ),
    ];
    for (response, field) in responses {
        assert_eq!(response.error_code(), Some("BAD_USER_INPUT"), "{:#}", response.0);
        assert_eq!(response.error_field(), Some(field));
        let message = response.0["errors"][0]["message"].as_str().expect("a message");
        assert_eq!(message, format!("{field} takes the global id of an Account (its `id` field), not a bare number"));
    }
    let node = app.graphql(NODE, json!({ "id": key }), Some(&scene.banker)).await;
    assert_eq!(node.assert_ok().data("node"), &Value::Null, "node answers null for what is no id");
}

async fn nodes_takes_at_most_100_ids_and_reads_them_in_a_few_statements(backend: Backend) {
    let scene = Scene::new(backend).await;
    let app = &scene.app;
    // 25 of each type: the scene's objects and keys that name nothing.
    let ids: Vec<String> = (1..=25)
        .flat_map(|key| {
            [
                global_id("Account", key),
                global_id("Entry", key),
                global_id("Transfer", key),
                global_id(
                    "User",
                    ["alice", "bob", "banker"].get(key - 1).map_or(format!("nobody_{key}"), |u| u.to_string()),
                ),
            ]
        })
        .collect();
    assert_eq!(ids.len(), 100);
    let query = "query($ids: [ID!]!) { nodes(ids: $ids) { id ... on Entry { account { id } } \
                 ... on Transfer { fromAccount { id } } } }";

    let before = app.metric("db_statements_total").await;
    let response = app.graphql(query, json!({ "ids": ids }), Some(&scene.banker)).await;
    let statements = app.metric("db_statements_total").await - before;

    let nodes = response.assert_ok().data("nodes").as_array().expect("a list");
    assert_eq!(nodes.len(), 100);
    assert_eq!(nodes.iter().filter(|node| !node.is_null()).count(), 3 + 6 + 2 + 3, "{:#}", response.0);
    eprintln!("SQL statements for nodes of 100 ids: {statements}");
    // Authentication, one statement per type, then accounts: of the transfers' `fromAccount` once the transfers
    // are read, of the entries (whose owners may read them) once they are, of the entries' `account` after that;
    // those that become due at once are one batch. One per id would be 100.
    assert!(statements <= 9, "{statements}");

    let too_many: Vec<String> = (0..101).map(|key| global_id("Account", key)).collect();
    let refused = app.graphql(NODES, json!({ "ids": too_many }), Some(&scene.banker)).await;
    assert_eq!(refused.error_code(), Some("BAD_USER_INPUT"), "{:#}", refused.0);
    assert_eq!(refused.error_field(), Some("ids"));
}

on_both_backends!(
    every_type_comes_back_from_node_by_the_id_it_answers_with,
    a_global_id_is_base64url_of_the_type_and_the_key_as_the_readme_maps_them,
    nodes_answers_every_id_in_its_place_and_null_for_what_names_nothing_or_is_not_yours,
    a_depositor_is_refused_anothers_objects_through_node_as_through_their_own_fields,
    an_id_of_one_type_is_refused_where_another_types_is_expected,
    a_bare_number_where_an_id_is_expected_is_bad_user_input_that_says_so,
    nodes_takes_at_most_100_ids_and_reads_them_in_a_few_statements,
);
