//! Persisted documents: automatic persisted queries as Apollo Client speaks them, and a server that runs only the
//! trusted documents of its manifest.

use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tests::{Backend, Received, Socket, TestApp, TestDatabase, on_both_backends, spawn_app, spawn_app_with};

const ME: &str = "query Me { me { username } }";

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

async fn post(app: &TestApp, body: Value, token: &str) -> Value {
    let response =
        app.client.post(format!("{}/graphql", app.address)).bearer_auth(token).json(&body).send().await.expect("sent");
    response.json().await.expect("a JSON body")
}

fn apollo(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

async fn an_unknown_hash_is_not_found_until_sent_with_its_document(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.user("alice").await;
    let hash = sha256(ME);

    let unknown = post(&app, json!({ "extensions": apollo(&hash) }), &token).await;
    let registered = post(&app, json!({ "query": ME, "extensions": apollo(&hash) }), &token).await;
    let by_hash = post(&app, json!({ "extensions": apollo(&hash) }), &token).await;

    assert_eq!(unknown["errors"][0]["message"], "PersistedQueryNotFound", "as Apollo Client expects: {unknown}");
    assert_eq!(unknown["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_FOUND");
    assert_eq!(registered["data"]["me"]["username"], "alice");
    assert_eq!(by_hash["data"]["me"]["username"], "alice", "the hash alone now runs the document");
}

async fn a_document_sent_under_another_documents_hash_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.user("alice").await;

    let wrong = post(&app, json!({ "query": ME, "extensions": apollo(&sha256("{ __typename }")) }), &token).await;
    let after = post(&app, json!({ "extensions": apollo(&sha256("{ __typename }")) }), &token).await;

    assert_eq!(wrong["errors"][0]["extensions"]["code"], "BAD_REQUEST", "{wrong}");
    assert_eq!(after["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_FOUND", "nothing was registered");
}

/// A server trusting only a manifest of two documents, one named by a hash of the client's choosing, and alice's
/// token (from a second server on the same database that runs any document, as the manifest has no login).
async fn trusting(backend: Backend) -> (TestApp, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a directory");
    let manifest = dir.path().join("persisted-documents.json");
    let documents = json!({ "sha1:me": ME, sha256("{ __typename }"): "{ __typename }" });
    std::fs::write(&manifest, documents.to_string()).expect("the manifest");
    let database = Arc::new(TestDatabase::migrated(backend).await);
    let open = spawn_app_with(Arc::clone(&database), &[]).await;
    let token = open.user("alice").await;
    let app = spawn_app_with(database, &["--trusted-documents", manifest.to_str().expect("a path")]).await;
    (app, token, dir)
}

async fn with_trusted_documents_only_the_manifests_documents_run(backend: Backend) {
    let (app, token, _dir) = trusting(backend).await;

    let by_id = post(&app, json!({ "documentId": "sha1:me" }), &token).await;
    let by_apollo_hash = post(&app, json!({ "extensions": apollo(&sha256("{ __typename }")) }), &token).await;
    let by_get = app
        .client
        .get(format!("{}/graphql?documentId=sha1:me", app.address))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent")
        .json::<Value>()
        .await
        .expect("JSON");
    let text = post(&app, json!({ "query": ME }), &token).await;
    let unknown = post(&app, json!({ "documentId": "sha1:other" }), &token).await;

    assert_eq!(by_id["data"]["me"]["username"], "alice", "{by_id}");
    assert_eq!(by_apollo_hash["data"]["__typename"], "Query", "{by_apollo_hash}");
    assert_eq!(by_get["data"]["me"]["username"], "alice", "{by_get}");
    assert_eq!(text["errors"][0]["extensions"]["code"], "DOCUMENT_NOT_TRUSTED", "a document's text: {text}");
    assert_eq!(unknown["errors"][0]["extensions"]["code"], "DOCUMENT_NOT_TRUSTED", "{unknown}");
}

async fn with_trusted_documents_a_socket_runs_no_document_sent_as_text(backend: Backend) {
    let (app, token, _dir) = trusting(backend).await;
    let mut socket = Socket::connect(&app.address, &token).await;

    socket.subscribe("1", "subscription { entryAdded(accountId: \"1\") { cursor } }", json!({})).await;

    let refused = match socket.receive().await {
        Received::Message(message) => message,
        closed => panic!("the socket closed: {closed:?}"),
    };
    let errors = if refused["type"] == "error" { &refused["payload"] } else { &refused["payload"]["errors"] };
    assert_eq!(errors[0]["extensions"]["code"], "DOCUMENT_NOT_TRUSTED", "{refused}");
}

on_both_backends!(
    with_trusted_documents_a_socket_runs_no_document_sent_as_text,
    an_unknown_hash_is_not_found_until_sent_with_its_document,
    a_document_sent_under_another_documents_hash_is_refused,
    with_trusted_documents_only_the_manifests_documents_run,
);
