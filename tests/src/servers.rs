//! Real servers for tests (PostgreSQL, Redis), started on free loopback
//! ports in temporary directories and stopped when dropped, in the clear
//! or over TLS with certificates made for the test. Never a fake.

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

/// Certificates made for one test with openssl: a CA, a server
/// certificate it signed for `localhost` and 127.0.0.1, a client
/// certificate it signed, and a second CA that signed nothing here.
pub struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    /// Make them (P-256 keys, valid two days).
    pub fn make() -> Certificates {
        need_with(
            "openssl",
            "install OpenSSL (Debian: `apt-get install openssl`)",
        );
        let dir = tempfile::Builder::new()
            .prefix("garden-tls")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let (key, pem, subject) = (
                format!("{ca}.key"),
                format!("{ca}.pem"),
                format!("/CN=garden test {ca}"),
            );
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            args.extend([
                "-keyout",
                &key,
                "-out",
                &pem,
                "-days",
                "2",
                "-subj",
                &subject,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            openssl(&args);
        }
        for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
            let (key, csr, pem, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            std::fs::write(
                dir.path().join(&ext),
                format!(
                    "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
                ),
            )
            .expect("extensions file");
            let mut args = vec!["req"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"]);
            openssl(&args);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        Certificates { dir }
    }

    /// A file of theirs: `ca.pem`, `other-ca.pem`, `server.pem`,
    /// `server.key`, `client.pem`, `client.key`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A PostgreSQL server of its own.
pub struct Postgres {
    dir: PathBuf,
    port: u16,
    root: bool,
    /// The CA to check its certificate with, when it speaks TLS only.
    tls_ca: Option<PathBuf>,
    _tmp: tempfile::TempDir,
}

impl Postgres {
    /// initdb into a temp dir and start on a free port. As root, runs as
    /// the `postgres` user (initdb refuses root).
    pub fn start() -> Postgres {
        Self::start_with(None)
    }

    /// As [`Postgres::start`], but it takes TCP connections over TLS only
    /// (`ssl = on`, `hostnossl` rejected), with `certificates`' server
    /// certificate; [`Postgres::url`] asks for `sslmode=verify-full`.
    pub fn start_tls(certificates: &Certificates) -> Postgres {
        Self::start_with(Some(certificates))
    }

    fn start_with(tls: Option<&Certificates>) -> Postgres {
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
        if let Some(c) = tls {
            for f in ["server.pem", "server.key"] {
                std::fs::copy(c.path(f), dir.join(f)).expect("certificate copied");
            }
            set_mode(&dir.join("server.key"), 0o600);
            let conf = dir.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
            text.push_str("ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n");
            std::fs::write(&conf, text).expect("postgresql.conf");
            std::fs::write(
                dir.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
            )
            .expect("pg_hba.conf");
            if root {
                let ok = Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir)
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                assert!(ok, "chown to the postgres user failed");
            }
        }
        let pg = Postgres {
            dir,
            port,
            root,
            tls_ca: tls.map(|c| c.path("ca.pem")),
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

    /// Connection URL (for a TLS server, with `sslmode=verify-full` and
    /// the test's CA).
    pub fn url(&self) -> String {
        let plain = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        match &self.tls_ca {
            Some(ca) => format!("{plain}?sslmode=verify-full&sslrootcert={}", ca.display()),
            None => plain,
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
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
    /// The directory of its certificates, when it speaks TLS only.
    tls: Option<PathBuf>,
    /// Addresses it listens on besides 127.0.0.1 (test hosts' links).
    binds: Vec<String>,
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

    /// Start on a free port that speaks TLS only, with `certificates`'
    /// server certificate, and wants a client certificate its CA signed.
    pub fn start_tls(certificates: &Certificates) -> Redis {
        Self::start_on(None, Some(certificates.path("")))
    }

    fn start_with(auth: Option<(String, String)>) -> Redis {
        Self::start_on(auth, None)
    }

    /// Start on a free port, listening on `addresses` (the root side of
    /// test hosts' links, see [`crate::netns`]) as well as 127.0.0.1.
    pub fn start_binding(addresses: &[String]) -> Redis {
        Self::start_full(None, None, addresses.to_vec())
    }

    /// The URL to reach it at `address` instead of 127.0.0.1.
    pub fn url_at(&self, address: &str) -> String {
        format!("redis://{address}:{}", self.port)
    }

    fn start_on(auth: Option<(String, String)>, tls: Option<PathBuf>) -> Redis {
        Self::start_full(auth, tls, Vec::new())
    }

    fn start_full(
        auth: Option<(String, String)>,
        tls: Option<PathBuf>,
        binds: Vec<String>,
    ) -> Redis {
        need_with(
            "redis-server",
            "install Redis 7 (Debian: `apt-get install redis-server`)",
        );
        let mut redis = Redis {
            port: free_port(),
            child: None,
            auth,
            tls,
            binds,
            relaunches: 0,
        };
        redis.launch();
        redis
    }

    fn launch(&mut self) {
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            Some(dir) => {
                let file = |f: &str| dir.join(f).to_string_lossy().into_owned();
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .args(["--tls-cert-file", &file("server.pem")])
                    .args(["--tls-key-file", &file("server.key")])
                    .args(["--tls-ca-cert-file", &file("ca.pem")])
                    .args(["--tls-auth-clients", "yes"]);
            }
            None => {
                cmd.args(["--port", &self.port.to_string()]);
            }
        }
        cmd.arg("--bind")
            .arg("127.0.0.1")
            .args(&self.binds)
            .args(["--save", "", "--appendonly", "no"])
            // Test hosts reach it over their links, not loopback: without a
            // password, protected mode would turn them away. The links
            // exist only on this machine.
            .args([
                "--protected-mode",
                if self.binds.is_empty() { "yes" } else { "no" },
            ])
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
        let (_, mut con) = garden_host::bus::redis::connect(&self.url()).ok()?;
        let info: String = redis::cmd("INFO").arg("server").query(&mut con).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|p| p.trim().parse().ok())
    }

    /// The URL to reach it (with the credentials, if it needs them).
    pub fn url(&self) -> String {
        if let Some(dir) = &self.tls {
            let file = |f: &str| dir.join(f).display().to_string();
            return format!(
                "rediss://127.0.0.1:{}/?ca={}&cert={}&key={}",
                self.port,
                file("ca.pem"),
                file("client.pem"),
                file("client.key")
            );
        }
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
