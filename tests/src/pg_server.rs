//! A PostgreSQL server of a test's own, which the test may stop and start (the shared one must stay up), and hot
//! standbys of it, streaming its changes.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

use tempfile::TempDir;

pub struct PgServer {
    dir: TempDir,
    bindir: PathBuf,
    port: u16,
    /// Settings of its own, on `postgres`'s command line.
    settings: String,
}

impl PgServer {
    /// Initialises and starts a server in a temporary directory, on a free loopback port.
    pub fn start() -> Self {
        let server = Self::new(String::new());
        let data = server.data_dir();
        run(server.command("initdb").args(["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"]), "initdb");
        server.start_again();
        server
    }

    /// A hot standby of `primary`, made as operators make one: `pg_basebackup` of the running primary, then
    /// streaming from it. With `apply_delay`, it applies each commit only that long after the primary made it
    /// (`recovery_min_apply_delay`): a standby that lags on purpose.
    pub fn standby_of(primary: &PgServer, apply_delay: Option<std::time::Duration>) -> Self {
        let settings = apply_delay
            .map_or_else(String::new, |delay| format!(" -c recovery_min_apply_delay={}ms", delay.as_millis()));
        let standby = Self::new(settings);
        let port = primary.port.to_string();
        let data = standby.data_dir();
        run(
            standby.command("pg_basebackup").args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &data,
                "--write-recovery-conf",
                "--wal-method=stream",
                "--checkpoint=fast",
                "--no-sync",
            ]),
            "pg_basebackup",
        );
        standby.start_again();
        standby
    }

    fn new(settings: String) -> Self {
        let bindir = bindir();
        let dir = tempfile::tempdir().expect("a temporary directory");
        if is_root() {
            run(Command::new("chown").arg("postgres").arg(dir.path()), "chown the data directory to postgres");
        }
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        Self { dir, bindir, port, settings }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of its database `name`.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The URL of its `postgres` database, from which tests create their own.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server, as an operator or a crash would take it away (fast: connections are cut).
    pub fn stop(&self) {
        run(self.command("pg_ctl").args(["-D", &self.data_dir(), "-m", "fast", "-w", "stop"]), "pg_ctl stop");
    }

    /// Starts the stopped server again, on the same port and data, and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-h 127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=200{}",
            self.port,
            self.socket_dir(),
            self.settings
        );
        let log = format!("{}/server.log", self.socket_dir());
        run(
            self.command("pg_ctl").args([
                "-D",
                &self.data_dir(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ]),
            "pg_ctl start",
        );
    }

    fn data_dir(&self) -> String {
        format!("{}/data", self.socket_dir())
    }

    fn socket_dir(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// A server binary, run as `postgres` when we are root: PostgreSQL refuses to run as root.
    fn command(&self, program: &str) -> Command {
        let program = self.bindir.join(program);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.command("pg_ctl").args(["-D", &self.data_dir(), "-m", "immediate", "stop"]).output();
    }
}

fn bindir() -> PathBuf {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let installed =
        std::fs::read_dir("/usr/lib/postgresql").into_iter().flatten().flatten().map(|entry| entry.path().join("bin"));
    from_pg_config
        .into_iter()
        .chain(installed)
        .find(|dir| dir.join("initdb").exists())
        .expect("PostgreSQL server binaries (initdb, pg_ctl); Debian: apt-get install postgresql")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

fn run(command: &mut Command, what: &str) -> Output {
    let output = command.output().unwrap_or_else(|err| panic!("{what}: {err}"));
    assert!(output.status.success(), "{what} failed: {}", String::from_utf8_lossy(&output.stderr));
    output
}
