//! The registry server and client against real stores (SQLite, and a
//! PostgreSQL server the test starts): publish verified on upload, pull by
//! name@version and by hash, list, versions, yank, the audit chain, and the
//! bad cases of issue #4 (untrusted publisher, oversized upload,
//! name@version collision, a registry serving altered bytes).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use garden_registry::client::{Client, ClientError, Reference};
use garden_registry::server::{ServerConfig, bind};
use garden_registry::{AuditCheck, AuditFilter, Digest, SigningKey, Store, TrustError, signature};
use garden_tests::servers::Postgres;
use garden_tests::{fixture_bytes, fixture_manifest, signed, test_key, trust};

/// A running registry; stops when dropped.
struct Registry {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Registry {
    fn start(store_url: &str, blobs: &Path, max_upload: usize) -> Registry {
        let mut config = ServerConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            store_url.to_string(),
            blobs.to_path_buf(),
            trust(),
        );
        config.max_upload = max_upload;
        config.data_dir = blobs.parent().map(|d| d.join("registry-data"));
        Self::with(config)
    }

    fn with(config: ServerConfig) -> Registry {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async move {
                let (addr, serve) = bind(config, async {
                    let _ = stopped.await;
                })
                .await
                .expect("registry binds");
                ready_tx.send(addr).expect("report address");
                serve.await.expect("serves");
            });
        });
        let addr = ready_rx.recv().expect("registry started");
        Registry {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn client(&self) -> Client {
        Client::new(&format!("http://{}", self.addr))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The development key, a second key the test registry trusts.
fn dev_signing_key() -> SigningKey {
    SigningKey::read(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../keys/dev.key.pem"
    )))
    .expect("the development key")
}

fn now() -> String {
    garden_host::integrity::now_rfc3339()
}

fn refused(e: ClientError, status: u16, needle: &str) {
    match e {
        ClientError::Refused { status: s, message } => {
            assert_eq!(s, status, "{message}");
            assert!(message.contains(needle), "`{message}` lacks `{needle}`");
        }
        other => panic!("expected a refusal with {status}, got {other}"),
    }
}

fn exercise(store_url: &str, dir: &Path) {
    let registry = Registry::start(store_url, &dir.join("blobs"), 120_000);
    let client = registry.client();
    let loop_v1 = signed(&fixture_bytes("loop"), &fixture_manifest("loop"));

    // Publish, verified on upload; again is a no-op.
    let receipt = client.publish(loop_v1.clone()).expect("publishes");
    assert!(receipt.new);
    assert_eq!(receipt.reference, "fixture-loop@0.1.0");
    assert_eq!(receipt.publisher, test_key().public().id().to_string());
    assert!(!client.publish(loop_v1.clone()).expect("idempotent").new);

    // Pull by name@version and by hash; verify again before use.
    let by_name = client
        .pull(
            &Reference::Version {
                name: "fixture-loop".into(),
                version: "0.1.0".into(),
            },
            false,
        )
        .expect("pulls");
    assert_eq!(by_name, loop_v1);
    trust().verify(&by_name).expect("pulled bytes verify");
    let by_hash = client
        .pull(&Reference::Digest(Digest::of(&loop_v1)), false)
        .expect("pulls by hash");
    assert_eq!(by_hash, loop_v1);

    // List and versions.
    assert_eq!(client.list(None).expect("lists").len(), 1);
    assert_eq!(
        client.list(Some("fixture-loop")).expect("versions")[0].version,
        "0.1.0"
    );

    // Same name@version, other bytes: refused.
    let impostor = signed(&fixture_bytes("panic-message"), &{
        let mut m = fixture_manifest("panic-message");
        m.name = "fixture-loop".into();
        m
    });
    refused(
        client.publish(impostor).expect_err("collision"),
        409,
        "already published",
    );

    // A publisher the registry does not trust.
    let stranger = SigningKey::generate();
    let foreign = signature::sign(
        &fixture_bytes("loop"),
        &fixture_manifest("recursion"),
        &stranger,
        "2026-01-01T00:00:00Z",
    )
    .expect("signs");
    refused(
        client.publish(foreign).expect_err("untrusted"),
        422,
        "does not trust",
    );

    // Unsigned and oversized uploads.
    refused(
        client.publish(fixture_bytes("loop")).expect_err("unsigned"),
        422,
        "unsigned",
    );
    refused(
        client.publish(vec![0u8; 200_000]).expect_err("oversized"),
        413,
        "",
    );

    // Names are owned: another trusted key (the development key) may not
    // publish under the name, until its owner delegates.
    let dev = dev_signing_key();
    let squatter = signature::sign(
        &fixture_bytes("loop"),
        &{
            let mut m = fixture_manifest("loop");
            m.version = "9.9.9".into();
            m
        },
        &dev,
        "2026-01-01T00:00:00Z",
    )
    .expect("signs");
    refused(
        client.publish(squatter.clone()).expect_err("not the owner"),
        403,
        "belongs to key",
    );
    refused(
        client
            .delegate("fixture-loop", dev.public().id(), &dev, &now())
            .expect_err("only the owner delegates"),
        403,
        "owner",
    );
    client
        .delegate("fixture-loop", dev.public().id(), test_key(), &now())
        .expect("the owner delegates");
    assert!(client.publish(squatter).expect("delegated").new);

    // Yank: only the publisher may; a stale one is refused; a yanked
    // version is not pulled by name, nor by digest without a pin.
    refused(
        client
            .yank("fixture-loop", "0.1.0", &stranger, &now())
            .expect_err("not the publisher"),
        403,
        "publisher",
    );
    refused(
        client
            .yank("fixture-loop", "0.1.0", test_key(), "2026-01-02T00:00:00Z")
            .expect_err("stale"),
        403,
        "stale",
    );
    client
        .yank("fixture-loop", "0.1.0", test_key(), &now())
        .expect("publisher yanks");
    refused(
        client
            .yank("fixture-loop", "0.1.0", test_key(), &now())
            .expect_err("replayed"),
        409,
        "yanked already",
    );
    refused(
        client
            .pull(
                &Reference::Version {
                    name: "fixture-loop".into(),
                    version: "0.1.0".into(),
                },
                false,
            )
            .expect_err("yanked"),
        410,
        "yanked",
    );
    match client.pull(&Reference::Digest(Digest::of(&loop_v1)), false) {
        Err(ClientError::Yanked(_)) => {}
        other => panic!("a yanked digest needs a pin: {other:?}"),
    }
    assert_eq!(
        client
            .pull(&Reference::Digest(Digest::of(&loop_v1)), true)
            .expect("pinned"),
        loop_v1
    );
    assert_eq!(
        client.list(None).expect("lists").len(),
        1,
        "yanked versions are not listed (9.9.9 is)"
    );

    // A failure inside the registry says so without its paths.
    std::fs::remove_dir_all(dir.join("blobs")).expect("lose the blobs");
    match client.pull(
        &Reference::Version {
            name: "fixture-loop".into(),
            version: "9.9.9".into(),
        },
        false,
    ) {
        Err(ClientError::Refused {
            status: 500,
            message,
        }) => {
            assert!(message.contains("its log has the details"), "{message}");
            let root = dir.to_string_lossy();
            assert!(
                !message.contains(root.as_ref()),
                "a server path leaked: {message}"
            );
        }
        other => panic!("expected a 500 without paths, got {other:?}"),
    }
    drop(registry);

    // Every publish, pull, yank and refusal is in the audit log, and the
    // chain is intact.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = Store::connect(store_url).await.expect("store");
        let all = store
            .audit_records(&AuditFilter::default())
            .await
            .expect("records");
        for kind in ["publish", "yank", "refusal", "delegate"] {
            assert!(
                all.iter().any(|r| r.kind == kind),
                "no {kind} record in {all:?}"
            );
        }
        let publishes = store
            .audit_records(&AuditFilter {
                kind: Some("publish".into()),
                ..AuditFilter::default()
            })
            .await
            .expect("filtered");
        assert!(
            publishes
                .iter()
                .all(|r| r.module.starts_with("fixture-loop@"))
        );
        // Anonymous work is counted, not audited one record each.
        assert!(!all.iter().any(|r| r.kind == "pull"));
        assert!(store.counter("pulls").await.expect("counter") >= 3);
        assert!(store.counter("refused-uploads").await.expect("counter") >= 2);
        assert!(matches!(
            store.audit_verify().await.expect("verify"),
            AuditCheck::Intact { .. }
        ));
        // The registry signed its audit log's head.
        assert_eq!(store.audit_heads().await.expect("heads").len(), 1);
        // Tampering with one record is detected.
        store
            .execute_raw("UPDATE audit SET detail = 'nothing happened' WHERE seq = 2")
            .await
            .expect("tamper");
        assert!(matches!(
            store.audit_verify().await.expect("verify"),
            AuditCheck::Broken { seq: 2, .. }
        ));
    });
}

#[test]
fn registry_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("registry.db").display());
    exercise(&url, dir.path());
}

#[test]
fn registry_on_postgres() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    exercise(&pg.url(), dir.path());
    assert!(pg.dir().exists());
}

/// A registry that answers every request with `body`.
fn malicious_registry(body: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/wasm\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    addr
}

#[test]
fn bytes_altered_by_a_registry_are_refused_after_pull() {
    let genuine = garden_modules::module("alpha-ema")
        .expect("built in")
        .to_vec();
    let mut altered = genuine.clone();
    altered[1000] ^= 0x20;
    let addr = malicious_registry(altered);
    let client = Client::new(&format!("http://{addr}"));
    // By name: the bytes arrive, and verification refuses them.
    let pulled = client
        .pull(
            &Reference::Version {
                name: "alpha-ema".into(),
                version: "0.1.0".into(),
            },
            false,
        )
        .expect("transfer works");
    let err = trust()
        .verify(&pulled)
        .expect_err("altered bytes are refused");
    assert!(matches!(err, TrustError::CodeMismatch { .. }), "{err}");
    // By hash: the client itself notices.
    let err = client
        .pull(&Reference::Digest(Digest::of(&genuine)), false)
        .expect_err("hash mismatch");
    assert!(err.to_string().contains("asked for sha256:"), "{err}");
}

#[test]
fn one_client_cannot_exhaust_the_registry() {
    // A client that sends requests as fast as it can is slowed to its
    // share (429), and the registry goes on answering.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        format!("sqlite://{}", dir.path().join("r.db").display()),
        dir.path().join("blobs"),
        trust(),
    );
    config.per_client_per_second = 5;
    config.per_client_burst = 10;
    let registry = Registry::with(config);
    let client = registry.client();
    let mut limited = 0;
    for _ in 0..40 {
        match client.list(None) {
            Ok(_) => {}
            Err(ClientError::Refused { status: 429, .. }) => limited += 1,
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    assert!(limited >= 20, "only {limited} of 40 were limited");
    std::thread::sleep(std::time::Duration::from_millis(400));
    client.list(None).expect("answers again after a pause");
}
