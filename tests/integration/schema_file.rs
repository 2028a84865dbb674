//! `schema.graphql` is the contract clients generate code from: it must be what the server serves.

#[test]
fn schema_graphql_is_exactly_what_export_schema_prints() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.graphql");
    let checked_in = std::fs::read_to_string(path).expect("schema.graphql at the repository root");
    assert!(
        checked_in == api::graphql::sdl(),
        "schema.graphql is out of date: run `make schema` and commit the result"
    );
}
