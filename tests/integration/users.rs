//! Sign-up, profiles, roles, emails unique across tables, and soft deletion.

use serde_json::json;
use tests::{Backend, PASSWORD, TestApp, on_both_backends, spawn_app};

const CREATE_USER: &str =
    "mutation($input: CreateUserInput!) { createUser(input: $input) { username fullName email emails role } }";

async fn create(app: &TestApp, username: &str, email: &str) -> tests::Response {
    app.graphql(
        CREATE_USER,
        json!({ "input": { "username": username, "password": PASSWORD, "fullName": "Some One", "email": email } }),
        None,
    )
    .await
}

async fn sign_up_creates_a_depositor_with_a_normalised_primary_email(backend: Backend) {
    let app = spawn_app(backend).await;

    let response = create(&app, "alice", "  Alice@Example.COM ").await;

    response.assert_ok();
    assert_eq!(response.str("createUser/email"), "alice@example.com");
    assert_eq!(response.data("createUser/emails"), &json!(["alice@example.com"]));
    assert_eq!(response.str("createUser/role"), "DEPOSITOR");
}

async fn sign_up_refuses_bad_input_naming_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        (json!({ "username": "Al", "password": PASSWORD, "fullName": "A", "email": "a@example.com" }), "username"),
        (
            json!({ "username": "al'; DROP TABLE users;--", "password": PASSWORD, "fullName": "A", "email": "a@example.com" }),
            "username",
        ),
        (
            json!({ "username": "alice", "password": "too short", "fullName": "A", "email": "a@example.com" }),
            "password",
        ),
        (json!({ "username": "alice", "password": PASSWORD, "fullName": " ", "email": "a@example.com" }), "fullName"),
        (json!({ "username": "alice", "password": PASSWORD, "fullName": "A", "email": "not-an-email" }), "email"),
    ];
    for (input, field) in cases {
        let response = app.graphql(CREATE_USER, json!({ "input": input }), None).await;
        assert_eq!(response.error_code(), Some("BAD_USER_INPUT"), "{input}");
        assert_eq!(response.error_field(), Some(field), "{input}");
    }
}

async fn sign_up_with_a_taken_username_or_email_fails_with_its_code(backend: Backend) {
    let app = spawn_app(backend).await;
    create(&app, "alice", "alice@example.com").await.assert_ok();

    assert_eq!(create(&app, "alice", "other@example.com").await.error_code(), Some("USERNAME_TAKEN"));
    assert_eq!(create(&app, "bob", "ALICE@example.com").await.error_code(), Some("EMAIL_TAKEN"));
}

async fn twenty_simultaneous_sign_ups_with_one_email_produce_exactly_one_user(backend: Backend) {
    let app = spawn_app(backend).await;

    let attempts = (0..20).map(|i| {
        let app = &app;
        async move { create(app, &format!("racer_{i}"), "shared@example.com").await }
    });
    let responses = futures::future::join_all(attempts).await;

    let codes: Vec<_> = responses.iter().map(|r| r.error_code()).collect();
    assert_eq!(codes.iter().filter(|c| c.is_none()).count(), 1, "{codes:?}");
    assert!(codes.iter().flatten().all(|c| *c == "EMAIL_TAKEN"), "{codes:?}");
}

async fn a_depositor_sees_only_themself_and_a_banker_sees_everyone(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    app.sign_up("bob").await;
    let banker = app.banker("carol").await;
    let list = "{ users(first: 2) { edges { node { username } } pageInfo { hasNextPage endCursor } } }";
    let read_bob = "{ user(username: \"bob\") { username } }";

    assert_eq!(app.graphql(list, json!({}), Some(&alice)).await.error_code(), Some("FORBIDDEN"));
    assert_eq!(app.graphql(read_bob, json!({}), Some(&alice)).await.error_code(), Some("FORBIDDEN"));
    assert_eq!(
        app.graphql("{ user(username: \"alice\") { username } }", json!({}), Some(&alice)).await.str("user/username"),
        "alice"
    );

    assert_eq!(app.graphql(read_bob, json!({}), Some(&banker)).await.str("user/username"), "bob");
    let first_page = app.graphql(list, json!({}), Some(&banker)).await;
    assert_eq!(
        first_page.data("users/edges"),
        &json!([{ "node": { "username": "alice" } }, { "node": { "username": "bob" } }])
    );
    assert_eq!(first_page.data("users/pageInfo/hasNextPage"), &json!(true));
    let cursor = first_page.str("users/pageInfo/endCursor");
    let next = app
        .graphql(
            "query($after: String) { users(first: 2, after: $after) { edges { node { username } } pageInfo { hasNextPage } } }",
            json!({ "after": cursor }),
            Some(&banker),
        )
        .await;
    assert_eq!(next.data("users/edges"), &json!([{ "node": { "username": "carol" } }]));
    assert_eq!(next.data("users/pageInfo/hasNextPage"), &json!(false));
}

async fn pages_larger_than_one_hundred_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let banker = app.banker("carol").await;

    let response = app.graphql("{ users(first: 100000000) { edges { cursor } } }", json!({}), Some(&banker)).await;

    assert_eq!(response.error_code(), Some("BAD_USER_INPUT"));
    assert_eq!(response.error_field(), Some("first"));
}

async fn only_a_banker_may_change_roles_or_other_users(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    app.sign_up("bob").await;
    let banker = app.banker("carol").await;
    let update = "mutation($input: UpdateUserInput!) { updateUser(input: $input) { username fullName role } }";

    let promote_self = app.graphql(update, json!({ "input": { "role": "BANKER" } }), Some(&alice)).await;
    let rename_bob =
        app.graphql(update, json!({ "input": { "username": "bob", "fullName": "B" } }), Some(&alice)).await;
    let rename_self = app.graphql(update, json!({ "input": { "fullName": "Alice Liddell" } }), Some(&alice)).await;
    let promote_bob =
        app.graphql(update, json!({ "input": { "username": "bob", "role": "BANKER" } }), Some(&banker)).await;

    assert_eq!(promote_self.error_code(), Some("FORBIDDEN"));
    assert_eq!(rename_bob.error_code(), Some("FORBIDDEN"));
    assert_eq!(rename_self.str("updateUser/fullName"), "Alice Liddell");
    assert_eq!(promote_bob.str("updateUser/role"), "BANKER");
}

async fn a_secondary_email_is_unique_across_every_users_addresses(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let add = "mutation($email: String!) { addEmail(email: $email) { emails } }";

    let added = app.graphql(add, json!({ "email": "alice.work@example.com" }), Some(&alice)).await;
    assert_eq!(added.data("addEmail/emails"), &json!(["alice@example.com", "alice.work@example.com"]));

    let by_bob = app.graphql(add, json!({ "email": "Alice.Work@example.com" }), Some(&bob)).await;
    assert_eq!(by_bob.error_code(), Some("EMAIL_TAKEN"));
    assert_eq!(create(&app, "mallory", "alice.work@example.com").await.error_code(), Some("EMAIL_TAKEN"));
    let primary_of_bob = app.graphql(add, json!({ "email": "bob@example.com" }), Some(&alice)).await;
    assert_eq!(primary_of_bob.error_code(), Some("EMAIL_TAKEN"));
    let own_again = app.graphql(add, json!({ "email": "alice.work@example.com" }), Some(&alice)).await;
    assert_eq!(own_again.error_code(), Some("EMAIL_TAKEN"));
}

async fn the_primary_email_cannot_be_removed_and_must_be_ones_own(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    app.sign_up("bob").await;
    let email_op = |op: &str| format!("mutation($email: String!) {{ {op}(email: $email) {{ email emails }} }}");
    app.graphql(&email_op("addEmail"), json!({ "email": "alice.work@example.com" }), Some(&alice)).await.assert_ok();

    let remove_primary =
        app.graphql(&email_op("removeEmail"), json!({ "email": "alice@example.com" }), Some(&alice)).await;
    assert_eq!(remove_primary.error_code(), Some("BAD_USER_INPUT"));

    let someone_elses =
        app.graphql(&email_op("setPrimaryEmail"), json!({ "email": "bob@example.com" }), Some(&alice)).await;
    assert_eq!(someone_elses.error_code(), Some("NOT_FOUND"));

    let switched =
        app.graphql(&email_op("setPrimaryEmail"), json!({ "email": "alice.work@example.com" }), Some(&alice)).await;
    assert_eq!(switched.str("setPrimaryEmail/email"), "alice.work@example.com");
    let removed = app.graphql(&email_op("removeEmail"), json!({ "email": "alice@example.com" }), Some(&alice)).await;
    assert_eq!(removed.data("removeEmail/emails"), &json!(["alice.work@example.com"]));
    // A removed address is free again.
    create(&app, "newcomer", "alice@example.com").await.assert_ok();
}

async fn a_deleted_user_cannot_log_in_their_token_fails_their_emails_are_free_their_username_is_not(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    app.graphql("mutation { addEmail(email: \"alice2@example.com\") { username } }", json!({}), Some(&alice))
        .await
        .assert_ok();

    let deleted = app.graphql("mutation { deleteUser(username: \"alice\") }", json!({}), Some(&alice)).await;
    assert_eq!(deleted.data("deleteUser"), &json!(true));

    let login = app
        .graphql(
            "mutation($input: LoginInput!) { login(input: $input) { accessToken } }",
            json!({ "input": { "username": "alice", "password": PASSWORD } }),
            None,
        )
        .await;
    assert_eq!(login.error_code(), Some("INVALID_CREDENTIALS"));
    assert_eq!(app.graphql("{ me { username } }", json!({}), Some(&alice)).await.error_code(), Some("UNAUTHENTICATED"));
    create(&app, "alice_again", "alice@example.com").await.assert_ok();
    create(&app, "alice_three", "alice2@example.com").await.assert_ok();
    assert_eq!(create(&app, "alice", "fresh@example.com").await.error_code(), Some("USERNAME_TAKEN"));
}

async fn a_depositor_cannot_delete_someone_else(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    app.sign_up("bob").await;
    let banker = app.banker("carol").await;
    let delete_bob = "mutation { deleteUser(username: \"bob\") }";

    assert_eq!(app.graphql(delete_bob, json!({}), Some(&alice)).await.error_code(), Some("FORBIDDEN"));
    assert_eq!(app.graphql(delete_bob, json!({}), Some(&banker)).await.data("deleteUser"), &json!(true));
}

on_both_backends!(
    sign_up_creates_a_depositor_with_a_normalised_primary_email,
    sign_up_refuses_bad_input_naming_the_field,
    sign_up_with_a_taken_username_or_email_fails_with_its_code,
    twenty_simultaneous_sign_ups_with_one_email_produce_exactly_one_user,
    a_depositor_sees_only_themself_and_a_banker_sees_everyone,
    pages_larger_than_one_hundred_are_refused,
    only_a_banker_may_change_roles_or_other_users,
    a_secondary_email_is_unique_across_every_users_addresses,
    the_primary_email_cannot_be_removed_and_must_be_ones_own,
    a_deleted_user_cannot_log_in_their_token_fails_their_emails_are_free_their_username_is_not,
    a_depositor_cannot_delete_someone_else,
);
