//! README.md and the docs, run as written (`garden_tests::tour`): every
//! shell block a user is meant to run, in order, in a scratch copy of the
//! checkout, with the output checked where a document shows it. A document
//! change that breaks a command breaks this test.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use garden_tests::languages::root;
use garden_tests::servers::{Postgres, Redis, free_port};
use garden_tests::tour::{Action, Tour, blocks};

/// Documents whose commands the tests below run; any other document with
/// a runnable block fails `every_runnable_document_is_toured`.
const TOURED: [&str; 3] = ["README.md", "docs/redis.md", "docs/signing.md"];

/// One compile cache for every tour: the embedded modules compile once.
fn cache() -> &'static Path {
    static CACHE: OnceLock<tempfile::TempDir> = OnceLock::new();
    CACHE
        .get_or_init(|| tempfile::tempdir().expect("a cache directory"))
        .path()
}

/// Run `doc` in a fresh scratch checkout, with servers where it needs them;
/// returns how many blocks ran.
fn tour(doc: &str) -> usize {
    let checkout = root();
    let markdown = std::fs::read_to_string(checkout.join(doc)).expect("the document");
    let scratch = tempfile::tempdir().expect("a scratch checkout");
    let home = tempfile::tempdir().expect("a home for garden");
    Tour::copy_checkout(&checkout, scratch.path());
    let runnable: String = blocks(&markdown)
        .into_iter()
        .filter(|b| !matches!(b.action, Action::Skip(_)))
        .map(|b| b.text)
        .collect();
    let redis =
        (runnable.contains("127.0.0.1:6379") || runnable.contains("redis-cli")).then(Redis::start);
    let postgres = runnable
        .contains("postgres://garden@127.0.0.1/garden")
        .then(Postgres::start);
    // The registry's default address, moved to a free port: the commands
    // that name it are rewritten, those that default to it read
    // $GARDEN_REGISTRY.
    let registry = format!("127.0.0.1:{}", free_port());
    let mut replace = vec![("127.0.0.1:7878".to_string(), registry.clone())];
    // The TLS walk-through starts a redis-server of its own on 6380.
    let tls_port = free_port().to_string();
    replace.push(("127.0.0.1:6380".into(), format!("127.0.0.1:{tls_port}")));
    replace.push(("--tls-port 6380".into(), format!("--tls-port {tls_port}")));
    if let Some(r) = &redis {
        replace.push(("127.0.0.1:6379".into(), format!("127.0.0.1:{}", r.port())));
    }
    if let Some(p) = &postgres {
        replace.push(("postgres://garden@127.0.0.1/garden".into(), p.url()));
    }
    let bin_dir: PathBuf = garden_tests::garden_bin()
        .parent()
        .expect("the binary's directory")
        .to_path_buf();
    let tour = Tour {
        root: scratch.path().to_path_buf(),
        bin_dir,
        replace,
        redis_port: redis.as_ref().map(Redis::port),
        env: vec![
            ("GARDEN_DATA".into(), home.path().join("data").into()),
            ("GARDEN_TRUST".into(), home.path().join("trust.toml").into()),
            ("XDG_CACHE_HOME".into(), cache().into()),
            (
                "GARDEN_REGISTRY".into(),
                format!("http://{registry}").into(),
            ),
        ],
    };
    match tour.run(doc, &markdown) {
        Ok(ran) => ran,
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn readme_runs_as_written() {
    let ran = tour("README.md");
    assert!(ran >= 10, "only {ran} blocks of README.md ran");
}

#[test]
fn redis_walk_through_runs_as_written() {
    let ran = tour("docs/redis.md");
    assert!(ran >= 2, "only {ran} blocks of docs/redis.md ran");
}

#[test]
fn signature_checks_run_as_written() {
    let ran = tour("docs/signing.md");
    assert!(ran >= 2, "only {ran} blocks of docs/signing.md ran");
}

#[test]
fn every_runnable_document_is_toured() {
    let checkout = root();
    let mut docs: Vec<String> = vec!["README.md".into()];
    for entry in std::fs::read_dir(checkout.join("docs")).expect("docs/") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(format!(
                "docs/{}",
                path.file_name().expect("a name").to_string_lossy()
            ));
        }
    }
    for doc in docs {
        let markdown = std::fs::read_to_string(checkout.join(&doc)).expect("the document");
        let runnable = blocks(&markdown)
            .iter()
            .filter(|b| !matches!(b.action, Action::Skip(_)))
            .count();
        assert!(
            runnable == 0 || TOURED.contains(&doc.as_str()),
            "{doc} has {runnable} runnable blocks but no tour test: add it to TOURED"
        );
    }
}
