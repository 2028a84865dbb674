//! GraphQL over HTTP: what the transport accepts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::ConnectionTrait;
use serde_json::json;
use tests::{Backend, TestDatabase, on_both_backends, spawn_app, spawn_app_with};

async fn queries_work_over_get_and_mutations_are_refused_with_405(backend: Backend) {
    let app = spawn_app(backend).await;
    let get =
        |query: &'static str| app.client.get(format!("{}/graphql", app.address)).query(&[("query", query)]).send();

    let query = get("{ __typename }").await.expect("an answer");
    assert_eq!(query.status(), 200);
    let mutation = get("mutation { logout(refreshToken: \"x.y\") }").await.expect("an answer");
    assert_eq!(mutation.status(), 405);
    let body: serde_json::Value = mutation.json().await.expect("a JSON body");
    assert_eq!(body["errors"][0]["extensions"]["code"], "METHOD_NOT_ALLOWED");
}

/// The query GraphiQL and code generators send first: the depth and cost limits must leave room for it.
const INTROSPECTION: &str = "query IntrospectionQuery { __schema { queryType { name } mutationType { name }
    subscriptionType { name } types { ...FullType } directives { name description locations args { ...InputValue } } } }
  fragment FullType on __Type { kind name description fields(includeDeprecated: true) { name description
    args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason } inputFields { ...InputValue }
    interfaces { ...TypeRef } enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
    possibleTypes { ...TypeRef } }
  fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
  fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name } } } } } } } }";

async fn the_full_introspection_query_fits_the_limits(backend: Backend) {
    let app = spawn_app(backend).await;

    let response = app.graphql(INTROSPECTION, json!({}), None).await;

    response.assert_ok();
    assert!(response.data("__schema/types").as_array().is_some_and(|types| types.len() > 20));
}

async fn metrics_count_requests_by_operation_errors_by_code_transfers_and_pool_use(backend: Backend) {
    let app = spawn_app(backend).await;
    let banker = app.banker("banker").await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let (from, to) = (app.open_account(&alice, "USD").await, app.open_account(&bob, "USD").await);
    app.deposit(&banker, &from, 100).await;
    app.graphql("query Me { me { username } }", json!({}), Some(&alice)).await.assert_ok();
    app.graphql("query Me { me { username } }", json!({}), None).await;
    app.graphql(
        "mutation Pay($input: CreateTransferInput!) { createTransfer(input: $input) { transfer { id } } }",
        json!({ "input": { "fromAccountId": from, "toAccountId": to, "amount": 10, "currency": "USD" } }),
        Some(&alice),
    )
    .await
    .assert_ok();

    let text = app.metrics().await;

    for line in [
        r#"graphql_requests_total{operation="Me",kind="query"} 2"#,
        r#"graphql_requests_total{operation="Pay",kind="mutation"} 1"#,
        r#"graphql_request_duration_seconds_count{operation="Me",kind="query"} 2"#,
        r#"graphql_errors_total{code="UNAUTHENTICATED"} 1"#,
        "bank_transfers_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    assert!(text.contains(r#"db_pool_connections{state="idle"}"#), "{text}");
}

async fn every_answer_carries_a_request_id_and_keeps_the_callers(backend: Backend) {
    let app = spawn_app(backend).await;

    let fresh = app.client.get(format!("{}/healthz", app.address)).send().await.expect("an answer");
    let given = app.client.get(format!("{}/healthz", app.address)).header("x-request-id", "trace-me-42").send().await;

    assert!(fresh.headers().get("x-request-id").is_some_and(|id| id.len() >= 32), "a generated id");
    assert_eq!(given.expect("an answer").headers()["x-request-id"], "trace-me-42");
}

async fn a_document_that_is_not_graphql_is_refused_with_graphql_parse_failed(backend: Backend) {
    let app = spawn_app(backend).await;

    let response = app.graphql("{ me { username ", json!({}), None).await;

    assert_eq!(response.error_code(), Some("GRAPHQL_PARSE_FAILED"), "{:#}", response.0);
}

async fn with_introspection_off_the_schema_is_not_answered(backend: Backend) {
    let database = Arc::new(TestDatabase::empty(backend).await);
    let app = spawn_app_with(database, &["--introspection", "false"]).await;

    let response = app.graphql("{ __schema { types { name } } }", json!({}), None).await;

    // async-graphql answers the hidden schema as null.
    assert!(response.0.pointer("/data/__schema/types").is_none_or(|v| v.is_null()), "{:#}", response.0);
    app.graphql("{ __typename }", json!({}), None).await.assert_ok();
}

async fn cors_allows_the_configured_origins_and_no_other(backend: Backend) {
    let database = Arc::new(TestDatabase::empty(backend).await);
    let app = spawn_app_with(database, &["--cors-allowed-origins", "https://app.example.com"]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, format!("{}/graphql", app.address))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };

    let allowed = preflight("https://app.example.com").await.expect("an answer");
    let other = preflight("https://evil.example.com").await.expect("an answer");

    assert_eq!(
        allowed.headers().get("access-control-allow-origin").map(|v| v.as_bytes()),
        Some(&b"https://app.example.com"[..])
    );
    assert!(other.headers().get("access-control-allow-origin").is_none(), "{:?}", other.headers());
}

/// `REQUEST_TIMEOUT_SECS` bounds a request from its head to its answer, reading the body included: a client that
/// announces a body and then sends it slower than that is answered 408 instead of holding a task forever.
async fn a_body_that_trickles_in_slower_than_the_request_timeout_is_answered_408(backend: Backend) {
    let database = Arc::new(TestDatabase::empty(backend).await);
    let app = spawn_app_with(database, &["--request-timeout-secs", "1"]).await;
    let started = Instant::now();

    // 100 bytes announced, the first 10 sent, the rest never.
    let answer = app.post_raw_http(&["Content-Length: 100"], br#"{"query": "#).await;

    assert_eq!(answer.status, 408, "{answer:?}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(5), "answered after {waited:?}");
    app.graphql("{ __typename }", json!({}), None).await.assert_ok();
}

/// Over `BODY_LIMIT_BYTES`, whether the length is announced or the body just keeps coming: 413, and a GraphQL
/// error with the code `PAYLOAD_TOO_LARGE` in the body, as the README's table of codes promises.
async fn a_body_over_the_limit_is_answered_413_with_payload_too_large(backend: Backend) {
    let database = Arc::new(TestDatabase::empty(backend).await);
    let app = spawn_app_with(database, &["--body-limit-bytes", "1024"]).await;
    let query = format!(r#"{{"query": "{{ __typename }}", "padding": "{}"}}"#, " ".repeat(2048));
    let chunked = format!("{:x}\r\n{query}\r\n0\r\n\r\n", query.len());

    let announced = app.post_raw_http(&[&format!("Content-Length: {}", query.len())], query.as_bytes()).await;
    let streamed = app.post_raw_http(&["Transfer-Encoding: chunked"], chunked.as_bytes()).await;

    for (what, answer) in [("announced", announced), ("streamed", streamed)] {
        assert_eq!(answer.status, 413, "{what}: {answer:?}");
        assert_eq!(answer.error_code().as_deref(), Some("PAYLOAD_TOO_LARGE"), "{what}: {answer:?}");
    }
}

/// A failure the server did not expect (here a table renamed under it) reaches the client as
/// `INTERNAL_SERVER_ERROR` with an opaque message: nothing of the SQL, the table or the database's words.
async fn an_unexpected_database_failure_is_answered_internal_server_error_and_nothing_of_its_cause(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    app.open_account(&alice, "USD").await;
    let accounts = "{ me { accounts { id balance } } }";
    app.graphql(accounts, json!({}), Some(&alice)).await.assert_ok();
    app.db.execute_unprepared("ALTER TABLE accounts RENAME TO accounts_elsewhere").await.expect("rename");

    let response = app.graphql(accounts, json!({}), Some(&alice)).await;

    let error = &response.0["errors"][0];
    assert_eq!(error["message"], "internal server error", "{:#}", response.0);
    assert_eq!(error["extensions"], json!({ "code": "INTERNAL_SERVER_ERROR" }), "{:#}", response.0);
    let text = response.0.to_string().to_lowercase();
    for leak in ["elsewhere", "sql", "select", "relation", "table", "exist"] {
        assert!(!text.contains(leak), "{leak:?} leaked: {text}");
    }
    app.db.execute_unprepared("ALTER TABLE accounts_elsewhere RENAME TO accounts").await.expect("rename back");
    app.graphql(accounts, json!({}), Some(&alice)).await.assert_ok();
}

on_both_backends!(
    a_body_over_the_limit_is_answered_413_with_payload_too_large,
    a_body_that_trickles_in_slower_than_the_request_timeout_is_answered_408,
    an_unexpected_database_failure_is_answered_internal_server_error_and_nothing_of_its_cause,
    a_document_that_is_not_graphql_is_refused_with_graphql_parse_failed,
    with_introspection_off_the_schema_is_not_answered,
    cors_allows_the_configured_origins_and_no_other,
    queries_work_over_get_and_mutations_are_refused_with_405,
    the_full_introspection_query_fits_the_limits,
    metrics_count_requests_by_operation_errors_by_code_transfers_and_pool_use,
    every_answer_carries_a_request_id_and_keeps_the_callers,
);
