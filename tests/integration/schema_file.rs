//! `schema.graphql` is the contract clients generate code from: it must be what the server serves.

#[test]
fn schema_graphql_is_exactly_what_export_schema_prints() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.graphql");
    let checked_in = std::fs::read_to_string(path).expect("schema.graphql at the repository root");
    assert!(
        checked_in == simple_bank::graphql::sdl(),
        "schema.graphql is out of date: run `make schema` and commit the result"
    );
}

/// `docs/schema.md` pictures the schema the migrations build: redrawn by `make erd`, checked here.
#[tokio::test]
async fn docs_schema_md_is_what_make_erd_draws_from_the_migrated_schema() {
    let database = tests::TestDatabase::migrated(tests::Backend::Postgres).await;
    let drawn = migration::erd::markdown(&database.connection().await).await.expect("the diagram");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/schema.md");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(checked_in == drawn, "docs/schema.md is out of date: run `make erd` and commit the result");
}
