//! Credentials and throttles (issue 14): a password change needs the current password and is the user's own; a
//! login over a password changed meanwhile opens nothing; a wrong refresh secret ends nothing while a replayed
//! one ends its session; password guesses are counted atomically, in the database, per (username, address), per
//! address and per username; sign-ups per address are limited.

use std::net::IpAddr;
use std::sync::Arc;

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Set, Statement};
use serde_json::{Value, json};
use service::auth::{self, TokenConfig};
use service::db::{Database, Settings};
use service::domain::Username;
use service::entity::{login_throttle, session};
use service::throttle::{Limits, Throttle};
use tests::{
    Backend, JWT_SECRET, PASSWORD, Response, TestApp, TestDatabase, on_both_backends, spawn_app, spawn_app_with,
};

const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { accessToken refreshToken } }";
const CHANGE_PASSWORD: &str = "mutation($input: UpdateUserInput!) { updateUser(input: $input) { username } }";
const REFRESH: &str = "mutation($t: String!) { refreshAccessToken(refreshToken: $t) { accessToken refreshToken } }";
const ME: &str = "{ me { username } }";
const NEW_PASSWORD: &str = "a brand new passphrase";
/// Behind a trusted proxy at 127.0.0.1, requests say which client they come from with `X-Forwarded-For`.
const BEHIND_A_PROXY: &[&str] = &["--trusted-proxies", "127.0.0.1"];

async fn app_with(backend: Backend, flags: &[&str]) -> TestApp {
    spawn_app_with(Arc::new(TestDatabase::empty(backend).await), flags).await
}

/// Sends an operation as if from `client`, through the trusted proxy.
async fn from(app: &TestApp, client: &str, query: &str, variables: Value, token: Option<&str>) -> Response {
    let mut request = app
        .client
        .post(format!("{}/graphql", app.address))
        .header("x-forwarded-for", client)
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Response(request.send().await.expect("the server answers").json().await.expect("a JSON body"))
}

fn login_as(username: &str, password: &str) -> Value {
    json!({ "input": { "username": username, "password": password } })
}

async fn login_code(app: &TestApp, username: &str, password: &str) -> Option<String> {
    app.graphql(LOGIN, login_as(username, password), None).await.error_code().map(str::to_owned)
}

async fn login_code_from(app: &TestApp, client: &str, username: &str, password: &str) -> Option<String> {
    from(app, client, LOGIN, login_as(username, password), None).await.error_code().map(str::to_owned)
}

/// How many logins for `username` were let through to a password check, when the per-username ceiling was not
/// reached: that counter is only reached by attempts their address and (username, address) counts admitted.
async fn checked_passwords_of(app: &TestApp, username: &str) -> i32 {
    login_throttle::Entity::find_by_id(format!("login/username/{username}"))
        .one(&app.db)
        .await
        .expect("read the throttle")
        .map_or(0, |row| row.count)
}

fn count(codes: &[Option<String>], code: &str) -> usize {
    codes.iter().filter(|c| c.as_deref() == Some(code)).count()
}

// Credentials.

async fn changing_your_password_needs_your_current_password(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    let change = |current: Option<&str>| json!({ "input": { "password": NEW_PASSWORD, "currentPassword": current } });

    let without = app.graphql(CHANGE_PASSWORD, change(None), Some(&alice)).await;
    assert_eq!((without.error_code(), without.error_field()), (Some("BAD_USER_INPUT"), Some("currentPassword")));
    let wrong = app.graphql(CHANGE_PASSWORD, change(Some("not my password at all")), Some(&alice)).await;
    assert_eq!(wrong.error_code(), Some("INVALID_CREDENTIALS"));
    assert_eq!(login_code(&app, "alice", NEW_PASSWORD).await.as_deref(), Some("INVALID_CREDENTIALS"), "unchanged");

    app.graphql(CHANGE_PASSWORD, change(Some(PASSWORD)), Some(&alice)).await.assert_ok();

    assert_eq!(login_code(&app, "alice", NEW_PASSWORD).await, None);
    assert_eq!(login_code(&app, "alice", PASSWORD).await.as_deref(), Some("INVALID_CREDENTIALS"));
}

async fn a_wrong_current_password_is_throttled_like_a_login(backend: Backend) {
    let app = app_with(backend, &["--login-failures-per-username-and-address-per-minute", "2"]).await;
    let alice = app.user("alice").await;
    let guess =
        |n: usize| json!({ "input": { "password": NEW_PASSWORD, "currentPassword": format!("guess number {n}") } });

    let mut codes = Vec::new();
    for n in 0..3 {
        codes.push(app.graphql(CHANGE_PASSWORD, guess(n), Some(&alice)).await.error_code().map(str::to_owned));
    }

    assert_eq!(
        codes,
        [Some("INVALID_CREDENTIALS".into()), Some("INVALID_CREDENTIALS".into()), Some("RATE_LIMITED".into())]
    );
    // The same counter as a login's, for that username from that address.
    assert_eq!(login_code(&app, "alice", PASSWORD).await.as_deref(), Some("RATE_LIMITED"));
    let right = json!({ "input": { "password": NEW_PASSWORD, "currentPassword": PASSWORD } });
    assert_eq!(app.graphql(CHANGE_PASSWORD, right, Some(&alice)).await.error_code(), Some("RATE_LIMITED"));
}

async fn nobody_sets_another_users_password_not_even_a_banker(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    app.sign_up("bob").await;
    let banker = app.banker("carol").await;
    let set_bobs =
        |current: &str| json!({ "input": { "username": "bob", "password": NEW_PASSWORD, "currentPassword": current } });

    let by_banker = app.graphql(CHANGE_PASSWORD, set_bobs(PASSWORD), Some(&banker)).await;
    let by_depositor = app.graphql(CHANGE_PASSWORD, set_bobs(PASSWORD), Some(&alice)).await;
    let banker_without_current = app
        .graphql(CHANGE_PASSWORD, json!({ "input": { "username": "bob", "password": NEW_PASSWORD } }), Some(&banker))
        .await;

    assert_eq!(by_banker.error_code(), Some("FORBIDDEN"));
    assert_eq!(by_depositor.error_code(), Some("FORBIDDEN"));
    assert_eq!(banker_without_current.error_code(), Some("FORBIDDEN"));
    assert_eq!(login_code(&app, "bob", PASSWORD).await, None, "bob's password is unchanged");
    let renamed = app
        .graphql(
            "mutation { updateUser(input: { username: \"bob\", fullName: \"Robert\" }) { fullName } }",
            json!({}),
            Some(&banker),
        )
        .await;
    assert_eq!(renamed.str("updateUser/fullName"), "Robert", "a banker still edits other fields");
}

async fn a_login_whose_password_changed_while_it_was_being_checked_opens_no_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    let throttle = Throttle::new(Limits {
        login_per_username_and_address: 5,
        login_per_address: 20,
        login_per_username: 100,
        login_window: chrono::Duration::minutes(1),
        signups_per_address: 10,
        signup_window: chrono::Duration::hours(1),
    });
    let tokens = TokenConfig::new(JWT_SECRET.as_bytes(), chrono::Duration::minutes(15), chrono::Duration::days(1));
    let client = IpAddr::from([192, 0, 2, 1]);
    let username = Username::parse("alice").expect("a username");
    let sessions = || session::Entity::find().filter(session::Column::Username.eq("alice"));
    let before = sessions().count(&app.db).await.expect("count sessions");
    // The login's steps as a server would run them, on a database of their own (on SQLite, a second writer).
    let db = Database::connect(&Settings::new(&app.database.url), |_| {}).await.expect("connect");

    // The login's check passes with the old password; the owner changes it before the session is opened.
    let checked = auth::check_password(&db, &throttle, client, &username, PASSWORD).await.expect("right password");
    let change = json!({ "input": { "password": NEW_PASSWORD, "currentPassword": PASSWORD } });
    app.graphql(CHANGE_PASSWORD, change, Some(&alice)).await.assert_ok();
    let opened = auth::open_session(&db, &tokens, checked).await;

    assert!(matches!(opened, Err(service::Error::InvalidCredentials)), "{opened:?}");
    assert_eq!(sessions().count(&app.db).await.expect("count sessions"), before, "no session was opened");
    let unchanged =
        auth::check_password(&db, &throttle, client, &Username::parse("alice").expect("a username"), NEW_PASSWORD)
            .await
            .expect("the new password");
    assert!(auth::open_session(&db, &tokens, unchanged).await.is_ok(), "a check of the current password opens one");
}

async fn a_refresh_token_with_a_wrong_secret_ends_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up("alice").await;
    let (access, refresh) = app.login("alice").await;
    let (session_id, _) = refresh.split_once('.').expect("<session>.<secret>");
    let guessed = format!("{session_id}.not-the-secret");

    let refreshed = app.graphql(REFRESH, json!({ "t": guessed }), None).await;
    let logout = app.graphql("mutation($t: String!) { logout(refreshToken: $t) }", json!({ "t": guessed }), None).await;

    assert_eq!(refreshed.error_code(), Some("UNAUTHENTICATED"));
    assert_eq!(logout.data("logout"), &json!(false));
    assert_eq!(app.graphql(ME, json!({}), Some(&access)).await.str("me/username"), "alice", "the session lives on");
    app.graphql(REFRESH, json!({ "t": refresh }), None).await.assert_ok();
}

async fn replaying_a_rotated_refresh_token_ends_its_session_for_thief_and_owner(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up("alice").await;
    let (owners_access, stolen) = app.login("alice").await;

    // The thief uses the copy first; the owner's later use of the same, once valid, token gives it away.
    let thiefs = app.graphql(REFRESH, json!({ "t": stolen }), None).await;
    thiefs.assert_ok();
    let owners = app.graphql(REFRESH, json!({ "t": stolen }), None).await;

    assert_eq!(owners.error_code(), Some("UNAUTHENTICATED"));
    let thiefs_next = thiefs.str("refreshAccessToken/refreshToken");
    assert_eq!(app.graphql(REFRESH, json!({ "t": thiefs_next }), None).await.error_code(), Some("UNAUTHENTICATED"));
    let thiefs_access = thiefs.str("refreshAccessToken/accessToken");
    for access in [owners_access, thiefs_access] {
        assert_eq!(app.graphql(ME, json!({}), Some(&access)).await.error_code(), Some("UNAUTHENTICATED"));
    }
}

// Throttles.

async fn thirty_concurrent_wrong_logins_for_one_user_check_at_most_the_limit(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up("alice").await;

    let guesses = (0..30).map(|n| {
        let app = &app;
        async move { login_code(app, "alice", &format!("wrong password {n}")).await }
    });
    let codes = futures::future::join_all(guesses).await;

    assert_eq!(count(&codes, "INVALID_CREDENTIALS"), 5, "{codes:?}");
    assert_eq!(count(&codes, "RATE_LIMITED"), 25, "{codes:?}");
    assert_eq!(checked_passwords_of(&app, "alice").await, 5);
}

async fn two_servers_on_one_database_allow_no_more_guesses_than_one(backend: Backend) {
    let first = spawn_app(backend).await;
    let second = spawn_app_with(first.database.clone(), &[]).await;
    first.sign_up("alice").await;

    let guesses = (0..30).map(|n| {
        let app = if n % 2 == 0 { &first } else { &second };
        async move { login_code(app, "alice", &format!("wrong password {n}")).await }
    });
    let codes = futures::future::join_all(guesses).await;

    assert_eq!(count(&codes, "INVALID_CREDENTIALS"), 5, "{codes:?}");
    assert_eq!(checked_passwords_of(&first, "alice").await, 5);
    assert_eq!(login_code(&second, "alice", PASSWORD).await.as_deref(), Some("RATE_LIMITED"));
}

async fn failures_from_one_address_do_not_lock_the_owner_out_at_another(backend: Backend) {
    let app = app_with(backend, BEHIND_A_PROXY).await;
    app.sign_up("alice").await;
    let attacker = "203.0.113.66";

    let mut codes = Vec::new();
    for n in 0..10 {
        codes.push(login_code_from(&app, attacker, "alice", &format!("wrong password {n}")).await);
    }

    assert_eq!(count(&codes, "INVALID_CREDENTIALS"), 5, "{codes:?}");
    assert_eq!(count(&codes, "RATE_LIMITED"), 5, "{codes:?}");
    assert_eq!(login_code_from(&app, attacker, "alice", PASSWORD).await.as_deref(), Some("RATE_LIMITED"));
    assert_eq!(login_code_from(&app, "198.51.100.7", "alice", PASSWORD).await, None, "the owner, elsewhere");
}

async fn one_address_cannot_spread_its_guesses_over_many_usernames(backend: Backend) {
    let app =
        app_with(backend, &["--trusted-proxies", "127.0.0.1", "--login-failures-per-address-per-minute", "4"]).await;
    app.sign_up("alice").await;
    let sprayer = "203.0.113.66";

    let mut codes = Vec::new();
    for n in 0..6 {
        codes.push(login_code_from(&app, sprayer, &format!("victim_{n}"), PASSWORD).await);
    }

    assert_eq!(count(&codes, "INVALID_CREDENTIALS"), 4, "{codes:?}");
    assert_eq!(count(&codes, "RATE_LIMITED"), 2, "{codes:?}");
    assert_eq!(login_code_from(&app, sprayer, "alice", PASSWORD).await.as_deref(), Some("RATE_LIMITED"));
    assert_eq!(login_code_from(&app, "198.51.100.7", "alice", PASSWORD).await, None);
}

async fn guesses_spread_over_many_addresses_stop_at_the_username_ceiling(backend: Backend) {
    let app =
        app_with(backend, &["--trusted-proxies", "127.0.0.1", "--login-failures-per-username-per-minute", "8"]).await;
    app.sign_up("alice").await;

    let mut codes = Vec::new();
    for attacker in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        for n in 0..5 {
            codes.push(login_code_from(&app, attacker, "alice", &format!("wrong password {n}")).await);
        }
    }

    assert_eq!(count(&codes, "INVALID_CREDENTIALS"), 8, "{codes:?}");
    assert_eq!(count(&codes, "RATE_LIMITED"), 7, "{codes:?}");
    let elsewhere = login_code_from(&app, "198.51.100.7", "alice", PASSWORD).await;
    assert_eq!(elsewhere.as_deref(), Some("RATE_LIMITED"), "the ceiling holds for the owner too, until it expires");
}

async fn successful_logins_forgive_typos_and_do_not_count_against_the_address(backend: Backend) {
    let app = app_with(backend, &["--login-failures-per-address-per-minute", "3"]).await;
    for name in ["alice", "bob", "carol", "dave", "erin"] {
        app.sign_up(name).await;
    }

    for name in ["alice", "bob", "carol", "dave", "erin"] {
        assert_eq!(login_code(&app, name, PASSWORD).await, None, "{name} from a shared address");
    }
    for _ in 0..2 {
        assert_eq!(login_code(&app, "alice", "a typo in it!").await.as_deref(), Some("INVALID_CREDENTIALS"));
        assert_eq!(login_code(&app, "alice", PASSWORD).await, None);
    }
}

async fn usernames_that_cannot_be_valid_reach_no_counter(backend: Backend) {
    let app = spawn_app(backend).await;
    let long = "a".repeat(10_000);

    for username in ["Not A Username", "'; DROP TABLE users; --", long.as_str(), ""] {
        assert_eq!(login_code(&app, username, PASSWORD).await.as_deref(), Some("INVALID_CREDENTIALS"));
    }

    let counters = login_throttle::Entity::find().count(&app.db).await.expect("count the counters");
    assert_eq!(counters, 0);
}

async fn expired_counters_are_swept(backend: Backend) {
    let app = spawn_app(backend).await;
    let expired = chrono::Utc::now() - chrono::Duration::hours(2);
    login_throttle::Entity::insert(login_throttle::ActiveModel {
        key: Set("login/address/192.0.2.99".into()),
        count: Set(1000),
        window_ends_at: Set(expired),
    })
    .exec(&app.db)
    .await
    .expect("an old counter");

    assert_eq!(login_code(&app, "alice", PASSWORD).await.as_deref(), Some("INVALID_CREDENTIALS"));

    let left = app
        .db
        .query_one_raw(Statement::from_string(
            app.db.get_database_backend(),
            "SELECT count(*) FROM login_throttle WHERE key = 'login/address/192.0.2.99'",
        ))
        .await
        .expect("a query")
        .and_then(|row| row.try_get_by_index::<i64>(0).ok());
    assert_eq!(left, Some(0));
}

async fn sign_ups_per_address_are_limited(backend: Backend) {
    let app = app_with(backend, &["--trusted-proxies", "127.0.0.1", "--signups-per-address-per-hour", "2"]).await;
    let sign_up = |n: usize| {
        json!({ "input": { "username": format!("user_{n}"), "password": PASSWORD, "fullName": "Some One",
                           "email": format!("user_{n}@example.com") } })
    };
    let create = "mutation($input: CreateUserInput!) { createUser(input: $input) { username } }";

    from(&app, "203.0.113.5", create, sign_up(1), None).await.assert_ok();
    from(&app, "203.0.113.5", create, sign_up(2), None).await.assert_ok();
    let third = from(&app, "203.0.113.5", create, sign_up(3), None).await;

    assert_eq!(third.error_code(), Some("RATE_LIMITED"));
    let retry_after = third.0.pointer("/errors/0/extensions/retryAfter").and_then(Value::as_u64);
    assert!(retry_after.is_some_and(|secs| (1..=3600).contains(&secs)), "{:#}", third.0);
    from(&app, "198.51.100.7", create, sign_up(3), None).await.assert_ok();
}

on_both_backends!(
    changing_your_password_needs_your_current_password,
    a_wrong_current_password_is_throttled_like_a_login,
    nobody_sets_another_users_password_not_even_a_banker,
    a_login_whose_password_changed_while_it_was_being_checked_opens_no_session,
    a_refresh_token_with_a_wrong_secret_ends_nothing,
    replaying_a_rotated_refresh_token_ends_its_session_for_thief_and_owner,
    thirty_concurrent_wrong_logins_for_one_user_check_at_most_the_limit,
    two_servers_on_one_database_allow_no_more_guesses_than_one,
    failures_from_one_address_do_not_lock_the_owner_out_at_another,
    one_address_cannot_spread_its_guesses_over_many_usernames,
    guesses_spread_over_many_addresses_stop_at_the_username_ceiling,
    successful_logins_forgive_typos_and_do_not_count_against_the_address,
    usernames_that_cannot_be_valid_reach_no_counter,
    expired_counters_are_swept,
    sign_ups_per_address_are_limited,
);
