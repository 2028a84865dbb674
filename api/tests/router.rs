//! The router in-process, without a socket: requests go through `tower::ServiceExt::oneshot`, middleware and all.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use clap::Parser;
use serde_json::{Value, json};
use simple_bank::{AppState, cli::Cli};
use tests::{Backend, JWT_SECRET, TestDatabase, on_both_backends};
use tower::ServiceExt;

/// The app's router on a fresh migrated database, as `Application` builds it but bound to nothing.
async fn router(backend: Backend) -> (axum::Router, TestDatabase) {
    let database = TestDatabase::migrated(backend).await;
    let cli = Cli::try_parse_from(["simple-bank", "--database-url", &database.url, "--jwt-secret", JWT_SECRET])
        .expect("test configuration parses");
    let config = cli.config;
    let state = AppState::new(&config, simple_bank::Hardening::On).await.expect("the app's state");
    (simple_bank::router(state, &config), database)
}

/// Sends one request to a fresh copy of `router`; the peer address is what a bound server would attach.
async fn send(router: &axum::Router, mut request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let response = router.clone().oneshot(request).await.expect("the router answers");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("a body");
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("a JSON body") };
    (parts.status, parts.headers, body)
}

fn post(body: &Value) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri("/graphql")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("a request")
}

async fn the_router_answers_graphql_in_process_with_a_request_id(backend: Backend) {
    let (router, _database) = router(backend).await;
    let (status, headers, body) = send(&router, post(&json!({ "query": "{ __typename }" }))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "data": { "__typename": "Query" } }));
    assert!(headers.contains_key("x-request-id"), "every answer carries a request id");
}

async fn requests_refused_before_execution_carry_their_codes(backend: Backend) {
    let (router, _database) = router(backend).await;

    let (status, _, body) = send(&router, post(&json!({ "query": "{ unclosed" }))).await;
    assert_eq!(status, StatusCode::OK, "application/json answers every GraphQL error with 200");
    assert_eq!(body["errors"][0]["extensions"]["code"], "GRAPHQL_PARSE_FAILED", "{body}");
    assert!(body["errors"][0]["locations"].is_array(), "a parse error says where: {body}");

    let (_, _, body) = send(&router, post(&json!({ "query": "{ noSuchField }" }))).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED", "{body}");

    let (status, _, body) = send(&router, post(&json!([{ "query": "{ __typename }" }]))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["extensions"]["code"], "BATCH_NOT_SUPPORTED", "{body}");

    let garbage = Request::post("/graphql").header(header::CONTENT_TYPE, "application/json").body(Body::from("{"));
    let (status, _, body) = send(&router, garbage.expect("a request")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST", "{body}");

    let mutation = Request::get("/graphql?query=mutation%20%7B%20logout(refreshToken%3A%20%22x%22)%20%7D");
    let (status, headers, body) = send(&router, mutation.body(Body::empty()).expect("a request")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers.get(header::ALLOW).map(|v| v.as_bytes()), Some(&b"POST"[..]));
    assert_eq!(body["errors"][0]["extensions"]["code"], "METHOD_NOT_ALLOWED", "{body}");
}

on_both_backends!(
    the_router_answers_graphql_in_process_with_a_request_id,
    requests_refused_before_execution_carry_their_codes
);
