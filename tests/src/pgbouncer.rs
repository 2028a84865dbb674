//! A pgbouncer of a test's own, in transaction-pooling mode, as production runs it in front of PostgreSQL.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct Pgbouncer {
    _dir: TempDir,
    port: u16,
    process: Child,
}

impl Pgbouncer {
    /// Starts pgbouncer on a free loopback port with these databases, each `(name, "host=… port=… dbname=…")`, and
    /// few server connections per database (`pool_size`), so that clients' transactions take turns on them.
    pub async fn start(databases: &[(&str, String)], pool_size: u32) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let databases: String = databases.iter().map(|(name, target)| format!("{name} = {target}\n")).collect();
        // The settings simple-bank needs in transaction mode (README, Scaling): prepared statements are dropped
        // whenever a server connection goes back to the pool.
        let ini = format!(
            "[databases]\n{databases}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             unix_socket_dir =\nauth_type = trust\nauth_file = {users}\npool_mode = transaction\n\
             default_pool_size = {pool_size}\nmax_client_conn = 500\nserver_reset_query = DEALLOCATE ALL\n\
             server_reset_query_always = 1\nlogfile = {log}\n",
            users = dir.path().join("users.txt").display(),
            log = dir.path().join("pgbouncer.log").display(),
        );
        std::fs::write(dir.path().join("users.txt"), "\"postgres\" \"\"\n").expect("write users.txt");
        std::fs::write(dir.path().join("pgbouncer.ini"), ini).expect("write pgbouncer.ini");
        let mut command = Command::new("pgbouncer");
        // pgbouncer refuses to run as root; `-u` drops to another user once the files are read.
        if Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.starts_with(b"0\n")) {
            let _ = Command::new("chown").arg("-R").arg("postgres").arg(dir.path()).status();
            command.args(["-u", "postgres"]);
        }
        let process = command
            .arg(dir.path().join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("pgbouncer (Debian: apt-get install pgbouncer)");
        let pgbouncer = Self { _dir: dir, port, process };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "pgbouncer did not listen within 10 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pgbouncer
    }

    /// The URL of its database `name`.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
