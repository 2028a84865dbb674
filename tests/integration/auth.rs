//! Logins, tokens and sessions, including tokens an attacker forges.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tests::{Backend, JWT_SECRET, PASSWORD, TestApp, claims_of, on_both_backends, sign, spawn_app};

const ME: &str = "{ me { username } }";
const REFRESH: &str = "mutation($t: String!) { refreshAccessToken(refreshToken: $t) { accessToken refreshToken } }";

async fn me_code(app: &TestApp, token: &str) -> Option<String> {
    app.graphql(ME, json!({}), Some(token)).await.error_code().map(str::to_owned)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn login_with_a_wrong_password_or_an_unknown_user_gives_the_same_error(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up("alice").await;
    let login = "mutation($input: LoginInput!) { login(input: $input) { accessToken } }";

    let wrong_password =
        app.graphql(login, json!({ "input": { "username": "alice", "password": "wrong password!" } }), None).await;
    let unknown_user =
        app.graphql(login, json!({ "input": { "username": "nobody", "password": PASSWORD } }), None).await;

    assert_eq!(wrong_password.error_code(), Some("INVALID_CREDENTIALS"));
    assert_eq!(wrong_password.0["errors"][0]["message"], unknown_user.0["errors"][0]["message"]);
    assert_eq!(unknown_user.error_code(), Some("INVALID_CREDENTIALS"));
}

async fn a_login_token_authenticates_and_no_token_does_not(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;

    assert_eq!(app.graphql(ME, json!({}), Some(&alice)).await.str("me/username"), "alice");
    assert_eq!(app.graphql(ME, json!({}), None).await.error_code(), Some("UNAUTHENTICATED"));
    assert_eq!(me_code(&app, "not.a.token").await.as_deref(), Some("UNAUTHENTICATED"));
}

async fn forged_tokens_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    // Bob exists, so a token naming him on alice's session is refused by the session-to-user check, not because
    // no such user exists.
    let bob = app.user("bob").await;
    assert_eq!(me_code(&app, &bob).await, None, "bob's own token works");
    let claims = claims_of(&alice);
    let body = |c: &Value| URL_SAFE_NO_PAD.encode(c.to_string());

    let alg_none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#), body(&claims));
    let wrong_key = sign(&claims, "another-secret-that-is-32-bytes-long!!");
    let mut as_bob = claims.clone();
    as_bob["sub"] = json!("bob");
    let edited = {
        let mut parts: Vec<&str> = alice.split('.').collect();
        let forged_body = body(&as_bob);
        parts[1] = &forged_body;
        parts.join(".")
    };
    let mut expired = claims.clone();
    expired["iat"] = json!(now() - 3600);
    expired["exp"] = json!(now() - 600);
    let mut wrong_audience = claims.clone();
    wrong_audience["aud"] = json!("someone-else");
    let mut wrong_issuer = claims.clone();
    wrong_issuer["iss"] = json!("someone-else");

    for (what, token) in [
        ("alg none", alg_none),
        ("wrong key", wrong_key),
        ("edited claims", edited),
        ("expired", sign(&expired, JWT_SECRET)),
        ("wrong audience", sign(&wrong_audience, JWT_SECRET)),
        ("wrong issuer", sign(&wrong_issuer, JWT_SECRET)),
        ("another user's name on a real session", sign(&as_bob, JWT_SECRET)),
    ] {
        assert_eq!(me_code(&app, &token).await.as_deref(), Some("UNAUTHENTICATED"), "{what}");
    }
}

async fn a_token_issued_before_a_password_change_is_refused_and_other_sessions_end(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    let (other_session, other_refresh) = app.login("alice").await;
    let mut older = claims_of(&alice);
    older["iat"] = json!(now() - 10);
    let issued_earlier = sign(&older, JWT_SECRET);
    assert_eq!(me_code(&app, &issued_earlier).await, None, "valid before the change");

    app.graphql(
        "mutation($current: String!) { updateUser(input: { password: \"a brand new passphrase\", currentPassword: $current }) { username } }",
        json!({ "current": PASSWORD }),
        Some(&alice),
    )
    .await
    .assert_ok();

    assert_eq!(me_code(&app, &issued_earlier).await.as_deref(), Some("UNAUTHENTICATED"));
    assert_eq!(me_code(&app, &other_session).await.as_deref(), Some("UNAUTHENTICATED"));
    let refreshed = app.graphql(REFRESH, json!({ "t": other_refresh }), None).await;
    assert_eq!(refreshed.error_code(), Some("UNAUTHENTICATED"));
}

async fn refreshing_rotates_the_refresh_token_and_reusing_an_old_one_ends_the_session(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up("alice").await;
    let (_, first) = app.login("alice").await;

    let rotated = app.graphql(REFRESH, json!({ "t": first }), None).await;
    rotated.assert_ok();
    let second = rotated.str("refreshAccessToken/refreshToken");
    let access = rotated.str("refreshAccessToken/accessToken");
    assert_eq!(app.graphql(ME, json!({}), Some(&access)).await.str("me/username"), "alice");

    let replayed = app.graphql(REFRESH, json!({ "t": first }), None).await;
    assert_eq!(replayed.error_code(), Some("UNAUTHENTICATED"));
    // The replay shows the token was copied: the whole session ends, for the thief and the owner alike.
    assert_eq!(app.graphql(REFRESH, json!({ "t": second }), None).await.error_code(), Some("UNAUTHENTICATED"));
    assert_eq!(me_code(&app, &access).await.as_deref(), Some("UNAUTHENTICATED"));
}

async fn logout_ends_the_session(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up("alice").await;
    let (access, refresh) = app.login("alice").await;
    let (other_access, _) = app.login("alice").await;

    let logout = app.graphql("mutation($t: String!) { logout(refreshToken: $t) }", json!({ "t": refresh }), None).await;

    assert_eq!(logout.data("logout"), &json!(true));
    assert_eq!(me_code(&app, &access).await.as_deref(), Some("UNAUTHENTICATED"));
    assert_eq!(app.graphql(REFRESH, json!({ "t": refresh }), None).await.error_code(), Some("UNAUTHENTICATED"));
    assert_eq!(me_code(&app, &other_access).await, None, "other sessions live on");
}

on_both_backends!(
    login_with_a_wrong_password_or_an_unknown_user_gives_the_same_error,
    a_login_token_authenticates_and_no_token_does_not,
    forged_tokens_are_refused,
    a_token_issued_before_a_password_change_is_refused_and_other_sessions_end,
    refreshing_rotates_the_refresh_token_and_reusing_an_old_one_ends_the_session,
    logout_ends_the_session,
);
