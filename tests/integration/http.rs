//! GraphQL over HTTP: what the transport accepts.

use tests::{Backend, on_both_backends, spawn_app};

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

on_both_backends!(queries_work_over_get_and_mutations_are_refused_with_405);
