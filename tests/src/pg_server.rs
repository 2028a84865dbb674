//! A PostgreSQL server of a test's own, which the test may stop and start (the shared one must stay up).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

use tempfile::TempDir;

pub struct PgServer {
    dir: TempDir,
    bindir: PathBuf,
    port: u16,
}

impl PgServer {
    /// Initialises and starts a server in a temporary directory, on a free loopback port.
    pub fn start() -> Self {
        let bindir = bindir();
        let dir = tempfile::tempdir().expect("a temporary directory");
        if is_root() {
            run(Command::new("chown").arg("postgres").arg(dir.path()), "chown the data directory to postgres");
        }
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let server = Self { dir, bindir, port };
        let data = server.data_dir();
        run(server.command("initdb").args(["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"]), "initdb");
        server.start_again();
        server
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
        let options =
            format!("-h 127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=200", self.port, self.socket_dir());
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
