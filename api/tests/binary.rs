//! The `simple-bank` binary as a newcomer runs it: no configuration, a fresh working directory.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Stops the server however the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_server_starts_with_no_configuration_on_a_fresh_sqlite_file_and_answers() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // The one setting given: a free port instead of the default 8000, which another process may hold.
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_simple-bank"))
            .current_dir(dir.path())
            .env_clear()
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.get(format!("{base}/healthz")).send().await {
            Ok(response) if response.status().is_success() => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => panic!("the server did not answer /healthz within 30 s"),
        }
    }

    let ready = client.get(format!("{base}/readyz")).send().await.expect("/readyz answers");
    assert_eq!(ready.status(), 200);
    let graphiql = client.get(format!("{base}/")).send().await.expect("/ answers");
    assert!(graphiql.text().await.expect("a page").contains("graphiql"), "GraphiQL is served at /");
    let query = client
        .post(format!("{base}/graphql"))
        .json(&serde_json::json!({ "query": "{ __typename }" }))
        .send()
        .await
        .expect("/graphql answers");
    assert_eq!(query.json::<serde_json::Value>().await.expect("JSON")["data"]["__typename"], "Query");
    assert!(dir.path().join("simple-bank.db").exists(), "the SQLite file is created in the working directory");
}
