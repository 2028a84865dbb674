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

/// The query GraphiQL and code generators send first: the depth and complexity limits must leave room for it.
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

    let response = app.graphql(INTROSPECTION, serde_json::json!({}), None).await;

    response.assert_ok();
    assert!(response.data("__schema/types").as_array().is_some_and(|types| types.len() > 20));
}

on_both_backends!(
    queries_work_over_get_and_mutations_are_refused_with_405,
    the_full_introspection_query_fits_the_limits
);
