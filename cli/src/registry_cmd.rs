//! `garden registry serve`, `publish`, `pull`, `yank`, `audit`: thin
//! commands over `garden_registry`'s server, client and store.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use garden_host::audit::{Audit, default_data_dir, default_store_url};
use garden_host::integrity::{self, now_rfc3339};
use garden_registry::client::{Client, Reference};
use garden_registry::server::{DEFAULT_MAX_UPLOAD, ServerConfig};
use garden_registry::{AuditCheck, AuditFilter, SigningKey, TrustStore};

/// Default registry address (loopback).
pub(crate) const DEFAULT_REGISTRY: &str = "http://127.0.0.1:7878";

/// `garden registry ...`
#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Serve a registry over HTTP.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7878")]
        addr: SocketAddr,
        /// Metadata and audit store: sqlite://PATH (default) or postgres://...
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// Blob directory (default: ~/.local/share/garden/blobs).
        #[arg(long, value_name = "DIR")]
        blobs: Option<PathBuf>,
        /// Keys allowed to publish (a trust store file).
        #[arg(long, value_name = "FILE")]
        trust: Option<PathBuf>,
        /// Largest upload in bytes.
        #[arg(long, default_value_t = DEFAULT_MAX_UPLOAD)]
        max_upload: usize,
    },
}

/// `garden publish`
#[derive(Args)]
pub struct PublishArgs {
    /// The signed component.
    component: PathBuf,
    /// Registry URL.
    #[arg(long, env = "GARDEN_REGISTRY", default_value = DEFAULT_REGISTRY)]
    registry: String,
}

/// `garden pull`
#[derive(Args)]
pub struct PullArgs {
    /// `name@version` or `sha256:<hex>`.
    reference: String,
    /// Output file.
    #[arg(long, short)]
    out: PathBuf,
    /// Registry URL.
    #[arg(long, env = "GARDEN_REGISTRY", default_value = DEFAULT_REGISTRY)]
    registry: String,
    /// Trust store to verify against.
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
    /// Pull a yanked component anyway (only by `sha256:<hex>`: a pin).
    #[arg(long)]
    allow_yanked: bool,
}

/// `garden delegate`
#[derive(Args)]
pub struct DelegateArgs {
    /// The name (you must own it: its first publisher).
    name: String,
    /// Key id of the publisher who may publish under it.
    #[arg(long = "to", value_name = "KEY-ID")]
    delegate: String,
    /// The owner's private key.
    #[arg(long)]
    key: PathBuf,
    /// Registry URL.
    #[arg(long, env = "GARDEN_REGISTRY", default_value = DEFAULT_REGISTRY)]
    registry: String,
}

/// `garden yank`
#[derive(Args)]
pub struct YankArgs {
    /// name@version.
    reference: String,
    /// The publisher's private key.
    #[arg(long)]
    key: PathBuf,
    /// Registry URL.
    #[arg(long, env = "GARDEN_REGISTRY", default_value = DEFAULT_REGISTRY)]
    registry: String,
}

/// `garden audit`
#[derive(Args)]
pub struct AuditArgs {
    /// `verify`: check the hash chain instead of listing.
    action: Option<String>,
    /// Store URL (default: sqlite://~/.local/share/garden/garden.db).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Only this module.
    #[arg(long)]
    module: Option<String>,
    /// Only this kind (load, refusal, publish, pull, yank, trust, quarantine, publish-refused).
    #[arg(long)]
    kind: Option<String>,
    /// Only at or after this time (RFC 3339 or a date).
    #[arg(long)]
    since: Option<String>,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

/// Run `garden registry`.
pub fn registry(cmd: RegistryCommand) -> Result<()> {
    let RegistryCommand::Serve {
        addr,
        store,
        blobs,
        trust,
        max_upload,
    } = cmd;
    let trust_path = trust.unwrap_or_else(integrity::default_trust_path);
    let mut config = ServerConfig::new(
        addr,
        store.unwrap_or_else(default_store_url),
        blobs.unwrap_or_else(|| default_data_dir().join("blobs")),
        TrustStore::read(&trust_path)?,
    );
    config.max_upload = max_upload;
    config.data_dir = Some(default_data_dir());
    if config.trust.keys.is_empty() {
        eprintln!(
            "warning: {} trusts no key: every publish will be refused",
            trust_path.display()
        );
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let (bound, serve) = garden_registry::server::bind(config, shutdown).await?;
        eprintln!("registry listening on http://{bound}");
        serve.await.context("serving")?;
        anyhow::Ok(())
    })
}

/// Run `garden publish`.
pub fn publish(args: PublishArgs) -> Result<()> {
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("reading {}", args.component.display()))?;
    let receipt = Client::new(&args.registry).publish(bytes)?;
    println!(
        "{} {} sha256:{} by {}",
        if receipt.new {
            "published"
        } else {
            "already published"
        },
        receipt.reference,
        receipt.digest,
        receipt.publisher
    );
    Ok(())
}

/// Run `garden pull`: fetch, then verify again before writing anything.
pub fn pull(args: PullArgs) -> Result<()> {
    let reference: Reference = args.reference.parse().map_err(anyhow::Error::msg)?;
    if args.allow_yanked && !matches!(reference, Reference::Digest(_)) {
        bail!("--allow-yanked pins a digest: pull sha256:<hex>, not a name");
    }
    let trust = crate::integrity_cmd::named_trust(args.trust)?;
    let bytes = pull_verified(&args.registry, &reference, args.allow_yanked, &trust)?;
    let verified = trust.verify(&bytes)?;
    std::fs::write(&args.out, &bytes).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "pulled {} -> {} (verified, signed by {})",
        verified.manifest().reference(),
        args.out.display(),
        verified.signer_name
    );
    Ok(())
}

/// Pull `reference` from `registry` and verify it against `trust`: a
/// yanked version, a copy that does not verify, or another version than
/// the one asked for is refused. The component's bytes.
pub(crate) fn pull_verified(
    registry: &str,
    reference: &Reference,
    allow_yanked: bool,
    trust: &TrustStore,
) -> Result<Vec<u8>> {
    let bytes = Client::new(registry).pull(reference, allow_yanked)?;
    let verified = trust
        .verify(&bytes)
        .with_context(|| format!("the registry's copy of {reference} is not accepted"))?;
    if let Reference::Version { name, version } = reference {
        let m = verified.manifest();
        if &m.name != name || &m.version != version {
            bail!(
                "asked for {name}@{version} but the registry sent {}",
                m.reference()
            );
        }
    }
    Ok(bytes)
}

/// Run `garden yank`.
pub fn yank(args: YankArgs) -> Result<()> {
    let Ok(Reference::Version { name, version }) = args.reference.parse::<Reference>() else {
        bail!("`{}` is not name@version", args.reference);
    };
    let key = SigningKey::read(&args.key)?;
    Client::new(&args.registry).yank(&name, &version, &key, &now_rfc3339())?;
    println!("yanked {name}@{version}");
    Ok(())
}

/// Run `garden delegate`.
pub fn delegate(args: DelegateArgs) -> Result<()> {
    let to: garden_registry::KeyId = args.delegate.parse()?;
    let key = SigningKey::read(&args.key)?;
    Client::new(&args.registry).delegate(&args.name, to, &key, &now_rfc3339())?;
    println!("{to} may publish `{}`", args.name);
    Ok(())
}

/// Run `garden audit`.
pub fn audit(args: AuditArgs) -> Result<()> {
    let audit = Audit::open(&args.store.unwrap_or_else(default_store_url))?;
    match args.action.as_deref() {
        Some("verify") => {
            let failed = failed_writes(audit.data_dir());
            match audit.store().run(async |s| s.audit_verify().await)? {
                AuditCheck::Intact { records } if failed == 0 => {
                    println!("audit log intact: {records} records");
                    Ok(())
                }
                AuditCheck::Intact { records } => bail!(
                    "audit log: the {records} records link up, but records are missing: this host failed to write {failed} (listed in {})",
                    garden_host::audit::failures_file(audit.data_dir()).display()
                ),
                AuditCheck::Truncated {
                    last,
                    signed,
                    signer,
                } => bail!(
                    "audit log truncated: it ends at record {last}, but key {signer} signed record {signed} as written; records {}..={signed} were deleted",
                    last + 1
                ),
                AuditCheck::Broken { seq, reason } => {
                    bail!("audit log broken at record {seq}: {reason}")
                }
            }
        }
        Some(other) => {
            bail!("unknown audit action `{other}`; use `garden audit` or `garden audit verify`")
        }
        None => {
            let filter = AuditFilter {
                module: args.module,
                kind: args.kind,
                since: args.since,
            };
            let records = audit
                .store()
                .run(async |s| s.audit_records(&filter).await)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                for r in records {
                    println!(
                        "{:>6}  {}  {:<15} {:<28} {:<16} {}",
                        r.seq, r.at, r.kind, r.module, r.actor, r.detail
                    );
                }
            }
            Ok(())
        }
    }
}

/// How many audit writes this host noted as failed.
fn failed_writes(data_dir: &std::path::Path) -> usize {
    std::fs::read_to_string(garden_host::audit::failures_file(data_dir))
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// `garden lineage`
#[derive(Args)]
pub struct LineageArgs {
    /// Store URL (default: sqlite://~/.local/share/garden/garden.db).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Run id (default: the latest run).
    #[arg(long)]
    run: Option<String>,
    /// Variant whose tree to print (default: the best in sample).
    #[arg(long)]
    variant: Option<String>,
    /// Print every record as JSON.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print every record as CSV.
    #[arg(long)]
    csv: bool,
}

/// Run `garden lineage`.
pub fn lineage(args: LineageArgs) -> Result<()> {
    use garden_host::replication::{LineageRecord, lineage};
    let audit = Audit::open(&args.store.unwrap_or_else(default_store_url))?;
    let run = match args.run {
        Some(r) => r,
        None => match audit.store().run(async |s| s.latest_run().await)? {
            Some(r) => r,
            None => bail!("no run recorded in this store yet; run `garden run` first"),
        },
    };
    let texts = audit.store().run(async |s| s.lineage(&run).await)?;
    let mut records: Vec<LineageRecord> = texts
        .iter()
        .map(|t| serde_json::from_str(t))
        .collect::<Result<_, _>>()
        .context("reading lineage records")?;
    records.sort_by_key(|r| {
        (
            r.birth_bar,
            r.id.split('.')
                .next_back()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0),
        )
    });
    if records.is_empty() {
        bail!("run {run} has no lineage (evolution was off)");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    } else if args.csv {
        print!("{}", lineage::csv(&records));
    } else {
        let id = args
            .variant
            .or_else(|| lineage::best(&records).map(|r| r.id.clone()));
        match id {
            Some(id) => {
                println!("run {run}: {} variants; family of {id}\n", records.len());
                print!("{}", lineage::tree(&records, &id));
            }
            None => println!(
                "run {run}: {} variants, none scored yet (a family tree follows the best; \
                 --variant ID names one, --json lists all)",
                records.len()
            ),
        }
    }
    Ok(())
}
