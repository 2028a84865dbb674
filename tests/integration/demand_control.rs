//! What a caller can make the server do or keep is bounded by the server: an operation's worst-case node count
//! (`MAX_QUERY_COST`), password hashes per request, metric labels, request ids; and `/metrics` is not on the API's
//! address.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::{Backend, PASSWORD, Response, TestApp, on_both_backends, spawn_app};

/// The default `MAX_QUERY_COST`.
const LIMIT: u64 = 4000;

const MILLION_NODES: &str = "{ me { accounts { entries(first: 100) { nodes { account { entries(first: 100) { nodes { \
                             account { entries(first: 100) { nodes { id } } } } } } } } } } }";

/// Sends `query` and asserts it was answered within a second.
async fn quickly(app: &TestApp, query: &str, variables: Value, token: Option<&str>) -> Response {
    let started = Instant::now();
    let response = app.graphql(query, variables, token).await;
    assert!(started.elapsed() < Duration::from_secs(1), "answered in {:?}", started.elapsed());
    response
}

fn assert_cost_exceeded(response: &Response) -> u64 {
    assert_eq!(response.error_code(), Some("QUERY_COST_EXCEEDED"), "{:#}", response.0);
    assert!(response.0["data"].is_null(), "nothing ran: {:#}", response.0);
    let extensions = &response.0["errors"][0]["extensions"];
    assert_eq!(extensions["limit"].as_u64(), Some(LIMIT), "{:#}", response.0);
    let cost = extensions["cost"].as_u64().expect("extensions.cost");
    assert!(cost > LIMIT, "{cost}");
    cost
}

async fn the_million_node_query_is_refused_unexecuted_at_once_with_its_cost_and_the_limit(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    app.open_account(&alice, "USD").await;
    let statements = app.metric("db_statements_total").await;

    let response = quickly(&app, MILLION_NODES, json!({}), Some(&alice)).await;

    let cost = assert_cost_exceeded(&response);
    assert!(cost > 1_000_000, "{cost}");
    assert_eq!(app.metric("db_statements_total").await, statements, "no SQL ran");
    let status = app
        .client
        .post(format!("{}/graphql", app.address))
        .header("accept", "application/graphql-response+json")
        .json(&json!({ "query": MILLION_NODES }))
        .send()
        .await
        .expect("an answer")
        .status();
    assert_eq!(status, 400, "a request error before execution, in GraphQL over HTTP's own media type");
}

async fn five_thousand_typename_aliases_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let aliases: String = (0..5000).map(|i| format!("a{i}: __typename ")).collect();

    let response = quickly(&app, &format!("{{ {aliases} }}"), json!({}), None).await;

    assert_eq!(assert_cost_exceeded(&response), 5000);
}

async fn a_page_of_twenty_users_with_their_accounts_and_twenty_entries_each_is_answered(backend: Backend) {
    let app = spawn_app(backend).await;
    let banker = app.banker("banker").await;
    for name in ["alice", "bob"] {
        let token = app.user(name).await;
        for currency in ["USD", "EUR"] {
            let account = app.open_account(&token, currency).await;
            for amount in 1..=3 {
                app.deposit(&banker, &account, amount).await;
            }
        }
    }
    let query = "{ users(first: 20) { nodes { username accounts { currency \
                 entries(first: 20) { nodes { amount createdAt } } } } } }";

    let response = app.graphql(query, json!({}), Some(&banker)).await;

    response.assert_ok();
    let alice = &response.data("users/nodes")[0];
    assert_eq!(alice["username"], "alice");
    assert_eq!(alice["accounts"][0]["entries"]["nodes"].as_array().map(Vec::len), Some(3));
}

async fn a_page_size_in_a_variable_is_judged_by_the_variables_value(backend: Backend) {
    let app = spawn_app(backend).await;
    let banker = app.banker("banker").await;
    let query =
        "query($n: Int!) { users(first: $n) { nodes { accounts { entries(first: $n) { nodes { id amount } } } } } }";

    let small = app.graphql(query, json!({ "n": 10 }), Some(&banker)).await;
    let large = quickly(&app, query, json!({ "n": 100 }), Some(&banker)).await;

    small.assert_ok();
    // 100 users, each up to 3 accounts of 100 entries of two fields.
    assert_eq!(assert_cost_exceeded(&large), 2 + 100 * (1 + 3 * (2 + 100 * 2)));
}

async fn every_operation_of_the_typescript_example_is_admitted(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.user("alice").await;
    let directory = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/typescript-client/operations");
    let mut operations = 0;
    for file in std::fs::read_dir(directory).expect("the example's operations") {
        let document = std::fs::read_to_string(file.expect("a file").path()).expect("a document");
        let names = document
            .lines()
            .filter_map(|line| line.strip_prefix("query ").or_else(|| line.strip_prefix("mutation ")))
            .map(|rest| rest.split(['(', ' ', '{']).next().expect("a name").to_owned());
        for name in names {
            let body = json!({ "query": document, "operationName": name });
            let response = app.client.post(format!("{}/graphql", app.address)).bearer_auth(&token).json(&body);
            let response: Value = response.send().await.expect("an answer").json().await.expect("JSON");
            let code = response.pointer("/errors/0/extensions/code").and_then(Value::as_str);
            assert!(
                !matches!(code, Some("QUERY_COST_EXCEEDED" | "TOO_MANY_PASSWORD_FIELDS")),
                "{name} is refused: {response:#}"
            );
            operations += 1;
        }
    }
    assert!(operations >= 6, "{operations} operations found");
}

async fn five_hundred_logins_in_one_request_are_refused_before_any_hashing(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up("alice").await;
    let logins: String = (0..500)
        .map(|i| {
            format!(r#"l{i}: login(input: {{username: "alice", password: "wrong password {i}"}}) {{ accessToken }} "#)
        })
        .collect();

    let response = quickly(&app, &format!("mutation {{ {logins} }}"), json!({}), None).await;

    assert_eq!(response.error_code(), Some("TOO_MANY_PASSWORD_FIELDS"), "{:#}", response.0);
    assert!(response.0["data"].is_null());
    app.login("alice").await; // No failure was counted: the owner is not locked out.
}

async fn two_sign_ups_in_one_request_are_refused_and_one_is_fine(backend: Backend) {
    let app = spawn_app(backend).await;
    let sign_up = |alias: &str| {
        format!(
            r#"{alias}: createUser(input: {{username: "{alias}", password: "{PASSWORD}", fullName: "{alias}", email: "{alias}@example.com"}}) {{ username }}"#
        )
    };

    let two = quickly(&app, &format!("mutation {{ {} {} }}", sign_up("ann"), sign_up("ben")), json!({}), None).await;
    let one = app.graphql(&format!("mutation {{ {} }}", sign_up("cat")), json!({}), None).await;

    assert_eq!(two.error_code(), Some("TOO_MANY_PASSWORD_FIELDS"), "{:#}", two.0);
    let login = "mutation($u: String!, $p: String!) { login(input: {username: $u, password: $p}) { accessToken } }";
    let ann = app.graphql(login, json!({ "u": "ann", "p": PASSWORD }), None).await;
    assert_eq!(ann.error_code(), Some("INVALID_CREDENTIALS"), "ann was not created: {:#}", ann.0);
    assert_eq!(one.assert_ok().str("cat/username"), "cat");
}

async fn metrics_are_served_on_their_own_address_and_not_on_the_apis(backend: Backend) {
    let app = spawn_app(backend).await;

    let on_api = app.client.get(format!("{}/metrics", app.address)).send().await.expect("an answer");

    assert_eq!(on_api.status(), 404);
    assert!(app.metrics().await.contains("db_statements_total"));
}

async fn operation_names_of_any_length_keep_metrics_small(backend: Backend) {
    let app = spawn_app(backend).await;
    for i in 0..10 {
        let name = format!("N{i}{}", "x".repeat(100_000));
        app.graphql(&format!("query {name} {{ __typename }}"), json!({}), None).await.assert_ok();
    }
    let kept = "K".repeat(64);
    app.graphql(&format!("query {kept} {{ __typename }}"), json!({}), None).await.assert_ok();

    let metrics = app.metrics().await;

    assert!(metrics.len() < 64 * 1024, "/metrics is {} bytes", metrics.len());
    assert!(metrics.lines().any(|l| l == r#"graphql_requests_total{operation="other",kind="query"} 10"#), "{metrics}");
    let line = format!(r#"graphql_requests_total{{operation="{kept}",kind="query"}} 1"#);
    assert!(metrics.lines().any(|l| l == line), "a 64-character name is kept: {metrics}");
}

async fn past_a_hundred_distinct_operation_names_the_rest_count_as_other(backend: Backend) {
    let app = spawn_app(backend).await;
    for i in 1..=101 {
        app.graphql(&format!("query Op{i} {{ __typename }}"), json!({}), None).await.assert_ok();
    }

    let metrics = app.metrics().await;

    assert!(metrics.contains(r#"graphql_requests_total{operation="Op100",kind="query"} 1"#), "{metrics}");
    assert!(!metrics.contains(r#"operation="Op101""#), "{metrics}");
    assert!(metrics.contains(r#"graphql_requests_total{operation="other",kind="query"} 1"#), "{metrics}");
}

async fn an_over_long_or_unprintable_request_id_is_replaced_by_a_fresh_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let id_for = |id: String| {
        let request = app.client.get(format!("{}/healthz", app.address)).header("x-request-id", id);
        async move {
            let response = request.send().await.expect("an answer");
            response.headers()["x-request-id"].to_str().expect("ASCII").to_owned()
        }
    };

    for hostile in ["x".repeat(10_000), "two words".to_owned(), "tab\there".to_owned()] {
        let answered = id_for(hostile.clone()).await;
        assert_ne!(answered, hostile);
        assert!(answered.len() <= 64 && answered.bytes().all(|b| b.is_ascii_graphic()), "{answered}");
    }
    assert_eq!(id_for("trace-me-42".to_owned()).await, "trace-me-42");
}

on_both_backends!(
    the_million_node_query_is_refused_unexecuted_at_once_with_its_cost_and_the_limit,
    five_thousand_typename_aliases_are_refused,
    a_page_of_twenty_users_with_their_accounts_and_twenty_entries_each_is_answered,
    a_page_size_in_a_variable_is_judged_by_the_variables_value,
    every_operation_of_the_typescript_example_is_admitted,
    five_hundred_logins_in_one_request_are_refused_before_any_hashing,
    two_sign_ups_in_one_request_are_refused_and_one_is_fine,
    metrics_are_served_on_their_own_address_and_not_on_the_apis,
    operation_names_of_any_length_keep_metrics_small,
    past_a_hundred_distinct_operation_names_the_rest_count_as_other,
    an_over_long_or_unprintable_request_id_is_replaced_by_a_fresh_one,
);
