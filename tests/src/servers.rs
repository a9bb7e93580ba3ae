//! Real database servers for tests, started on free loopback ports in
//! temporary directories and stopped when dropped. Never a fake.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A free loopback port (the OS picks; a race with another process is
/// possible but rare, and the start then fails loudly).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn need(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not on PATH: install PostgreSQL 15 (Debian: `apt-get install postgresql`) and put its bin directory on PATH"
    );
}

/// A PostgreSQL server of its own.
pub struct Postgres {
    dir: PathBuf,
    port: u16,
    root: bool,
    _tmp: tempfile::TempDir,
}

impl Postgres {
    /// initdb into a temp dir and start on a free port. As root, runs as
    /// the `postgres` user (initdb refuses root).
    pub fn start() -> Postgres {
        need("initdb");
        need("pg_ctl");
        let tmp = tempfile::Builder::new()
            .prefix("garden-pg")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let dir = tmp.path().join("data");
        let root = is_root();
        std::fs::create_dir_all(&dir).expect("data dir");
        if root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(tmp.path())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "chown to the postgres user failed");
        }
        let port = free_port();
        run_pg(
            root,
            &[
                "initdb",
                "-D",
                &dir.to_string_lossy(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
            ],
            "initdb",
        );
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.display()
        );
        run_pg(
            root,
            &[
                "pg_ctl",
                "-D",
                &dir.to_string_lossy(),
                "-o",
                &opts,
                "-l",
                &dir.join("log").to_string_lossy(),
                "-w",
                "start",
            ],
            "pg_ctl start",
        );
        Postgres {
            dir,
            port,
            root,
            _tmp: tmp,
        }
    }

    /// Connection URL.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn run_pg(root: bool, args: &[&str], what: &str) {
    let out = if root {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(args)
            .output()
    } else {
        Command::new(args[0]).args(&args[1..]).output()
    }
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let dir = self.dir.to_string_lossy().into_owned();
        let args = ["pg_ctl", "-D", &dir, "-m", "immediate", "stop"];
        let _ = if self.root {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .output()
        } else {
            Command::new(args[0]).args(&args[1..]).output()
        };
    }
}
