//! Real servers for tests (PostgreSQL, Redis), started on free loopback
//! ports in temporary directories and stopped when dropped. Never a fake.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    need_with(
        tool,
        "install PostgreSQL 15 (Debian: `apt-get install postgresql`) and put its bin directory on PATH",
    );
}

fn need_with(tool: &str, how: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(found, "`{tool}` is not on PATH: {how}");
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
        let pg = Postgres {
            dir,
            port,
            root,
            _tmp: tmp,
        };
        pg.start_again();
        pg
    }

    /// Start the server (again, after [`Postgres::stop`]) on the same port
    /// and data.
    pub fn start_again(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        run_pg(
            self.root,
            &[
                "pg_ctl",
                "-D",
                &self.dir.to_string_lossy(),
                "-o",
                &opts,
                "-l",
                &self.dir.join("log").to_string_lossy(),
                "-w",
                "start",
            ],
            "pg_ctl start",
        );
    }

    /// Stop the server now (connections are cut), keeping its data.
    pub fn stop(&self) {
        run_pg(
            self.root,
            &[
                "pg_ctl",
                "-D",
                &self.dir.to_string_lossy(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
            "pg_ctl stop",
        );
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

/// A redis-server of its own: no persistence, loopback only.
pub struct Redis {
    port: u16,
    child: Option<Child>,
    /// (user, password) of an ACL user the server requires, if any.
    auth: Option<(String, String)>,
    relaunches: u32,
}

impl Redis {
    /// Start on a free port.
    pub fn start() -> Redis {
        Self::start_with(None)
    }

    /// Start on a free port with AUTH required: the default user is
    /// disabled and `user` with `password` may do everything.
    pub fn start_with_user(user: &str, password: &str) -> Redis {
        Self::start_with(Some((user.to_string(), password.to_string())))
    }

    fn start_with(auth: Option<(String, String)>) -> Redis {
        need_with(
            "redis-server",
            "install Redis 7 (Debian: `apt-get install redis-server`)",
        );
        let mut redis = Redis {
            port: free_port(),
            child: None,
            auth,
            relaunches: 0,
        };
        redis.launch();
        redis
    }

    fn launch(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((user, password)) = &self.auth {
            cmd.args(["--user", "default", "off"]).args([
                "--user",
                user,
                "on",
                &format!(">{password}"),
                "~*",
                "&*",
                "+@all",
            ]);
        }
        let child = cmd.spawn().expect("redis-server starts");
        let pid = child.id();
        self.child = Some(child);
        // Ready when it answers, as itself: a server another test started
        // on the same port meanwhile does not count.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.server_pid() {
                Some(p) if p == pid => return,
                _ => {}
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            assert!(
                Instant::now() < deadline && !(exited && self.relaunches > 4),
                "redis-server did not start on port {}",
                self.port
            );
            if exited {
                // The port was taken after we chose it: another one.
                self.relaunches += 1;
                self.port = free_port();
                return self.launch();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id of the server answering on the port, if one does.
    fn server_pid(&self) -> Option<u32> {
        let mut con = redis::Client::open(self.url())
            .ok()?
            .get_connection()
            .ok()?;
        let info: String = redis::cmd("INFO").arg("server").query(&mut con).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|p| p.trim().parse().ok())
    }

    /// The URL to reach it (with the credentials, if it needs them).
    pub fn url(&self) -> String {
        match &self.auth {
            Some((user, password)) => format!("redis://{user}:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL it: everything in memory is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port (empty: it keeps nothing).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
