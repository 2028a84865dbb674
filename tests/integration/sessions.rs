//! Sessions a server keeps in memory once found live: whatever ends one, or changes what its user may do, takes
//! effect at once on the server that did it, and on every other server of the database as soon as its change feed
//! hears the notification (which PostgreSQL sends when the change commits).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tests::{Backend, PASSWORD, Response, TestApp, on_both_backends, spawn_app, spawn_app_with};

const ME: &str = "{ me { username role } }";

/// What `me` answers the token with: its role, or the error code.
async fn me(app: &TestApp, token: &str) -> Result<String, String> {
    let response = app.graphql(ME, json!({}), Some(token)).await;
    match response.error_code() {
        Some(code) => Err(code.to_owned()),
        None => Ok(response.str("me/role")),
    }
}

const LIVE: Result<&str, &str> = Ok("DEPOSITOR");
const ENDED: Result<&str, &str> = Err("UNAUTHENTICATED");

fn is(answer: Result<String, String>, expected: Result<&str, &str>) -> bool {
    answer.as_deref().map_err(String::as_str) == expected
}

/// The servers `alice`'s requests go to: one server, or the one that did not change her session.
struct Servers {
    changing: TestApp,
    asking: TestApp,
    /// How long the asking server may take to hear of a change: none when it made it itself; on another server,
    /// the time a notification takes to reach its listener (milliseconds, but a loaded test machine may stall).
    hears_within: Duration,
}

impl Servers {
    async fn one(backend: Backend) -> Self {
        let changing = spawn_app(backend).await;
        let asking = TestApp::at(changing.address.clone(), Arc::clone(&changing.database)).await;
        Self { changing, asking, hears_within: Duration::ZERO }
    }

    async fn two() -> Self {
        let changing = spawn_app(Backend::Postgres).await;
        let asking = spawn_app_with(Arc::clone(&changing.database), &[]).await;
        Self { changing, asking, hears_within: Duration::from_secs(2) }
    }

    /// Whether `me` answers `token` as `expected` on the asking server, at once or within [`Servers::hears_within`].
    async fn answers(&self, token: &str, expected: Result<&str, &str>) -> bool {
        let started = Instant::now();
        loop {
            if is(me(&self.asking, token).await, expected) {
                return true;
            }
            if started.elapsed() >= self.hears_within {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Alice's access and refresh tokens, her session found live by the asking server (so kept by it).
    async fn alice(&self) -> (String, String) {
        self.changing.sign_up("alice").await;
        let (access, refresh) = self.changing.login("alice").await;
        assert!(is(me(&self.asking, &access).await, LIVE));
        assert!(is(me(&self.asking, &access).await, LIVE), "still live when kept");
        (access, refresh)
    }

    async fn logout_is_heard(self) {
        let (access, refresh) = self.alice().await;

        let logout = "mutation($t: String!) { logout(refreshToken: $t) }";
        self.changing.graphql(logout, json!({ "t": refresh }), None).await.assert_ok();

        assert!(self.answers(&access, ENDED).await);
    }

    async fn password_change_is_heard(self) {
        let (access, _) = self.alice().await;
        let (other, _) = self.changing.login("alice").await;
        assert!(is(me(&self.asking, &other).await, LIVE));

        let change = "mutation($current: String!) { updateUser(input: { password: \"a brand new passphrase\", currentPassword: $current }) { username } }";
        self.changing.graphql(change, json!({ "current": PASSWORD }), Some(&access)).await.assert_ok();

        assert!(self.answers(&other, ENDED).await, "the other session ended");
    }

    async fn deletion_is_heard(self) {
        let (access, _) = self.alice().await;
        let banker = self.changing.banker("bea").await;
        // `me` reads the user and would find them deleted anyway; the list of users asks the session alone.
        let users = "{ users(first: 1) { edges { node { username } } } }";
        let refused = |answer: Response| answer.error_code().map(str::to_owned);
        assert_eq!(refused(self.asking.graphql(users, json!({}), Some(&access)).await).as_deref(), Some("FORBIDDEN"));

        let delete = "mutation { deleteUser(username: \"alice\") }";
        self.changing.graphql(delete, json!({}), Some(&banker)).await.assert_ok();

        let started = Instant::now();
        while refused(self.asking.graphql(users, json!({}), Some(&access)).await).as_deref() != Some("UNAUTHENTICATED")
        {
            assert!(started.elapsed() < self.hears_within, "the deleted user's session still acts");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn role_change_is_heard(self) {
        let (access, _) = self.alice().await;
        let banker = self.changing.banker("bea").await;

        let promote = "mutation { updateUser(input: { username: \"alice\", role: BANKER }) { role } }";
        self.changing.graphql(promote, json!({}), Some(&banker)).await.assert_ok();

        assert!(self.answers(&access, Ok("BANKER")).await);
        let users =
            self.asking.graphql("{ users(first: 5) { edges { node { username } } } }", json!({}), Some(&access));
        users.await.assert_ok();
    }
}

async fn a_kept_session_ends_at_once_on_logout(backend: Backend) {
    Servers::one(backend).await.logout_is_heard().await;
}

async fn a_kept_session_ends_at_once_when_another_session_changes_the_password(backend: Backend) {
    Servers::one(backend).await.password_change_is_heard().await;
}

async fn a_kept_session_ends_at_once_when_its_user_is_deleted(backend: Backend) {
    Servers::one(backend).await.deletion_is_heard().await;
}

async fn a_kept_session_acts_with_a_new_role_at_once(backend: Backend) {
    Servers::one(backend).await.role_change_is_heard().await;
}

on_both_backends!(
    a_kept_session_ends_at_once_on_logout,
    a_kept_session_ends_at_once_when_another_session_changes_the_password,
    a_kept_session_ends_at_once_when_its_user_is_deleted,
    a_kept_session_acts_with_a_new_role_at_once,
);

/// Two servers on one database, as two processes would be: only PostgreSQL has a change feed between processes.
mod two_servers_on_postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_logout_through_one_server_ends_the_session_the_other_kept() {
        Servers::two().await.logout_is_heard().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_password_change_through_one_server_ends_the_sessions_the_other_kept() {
        Servers::two().await.password_change_is_heard().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deletion_through_one_server_ends_the_sessions_the_other_kept() {
        Servers::two().await.deletion_is_heard().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_role_change_through_one_server_reaches_the_session_the_other_kept() {
        Servers::two().await.role_change_is_heard().await;
    }
}
