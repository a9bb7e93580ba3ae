//! `garden key`, `trust`, `sign`, `verify`, `inspect`: thin commands over
//! `garden_registry` and the host's loader.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use garden_host::integrity::{self, now_rfc3339};
use garden_host::{Engine, Limits};
use garden_registry::{KeyId, Manifest, PublicKey, SigningKey, TrustStore, signature};

/// `garden key ...`
#[derive(Subcommand)]
pub enum KeyCommand {
    /// Generate an ed25519 key pair: NAME.key.pem (PKCS#8, mode 0600) and
    /// NAME.pub.pem (SubjectPublicKeyInfo).
    Generate {
        /// Base name of the files.
        #[arg(long)]
        name: String,
        /// Directory for the files.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Replace a daemon's key while it runs: the new key is trusted, the
    /// old one expires after --grace, and the daemon takes the new one up
    /// at its next heartbeat.
    Rotate(crate::rotate::RotateArgs),
    /// Print the key id of a public key (PEM): what `garden trust revoke`,
    /// `garden delegate` and the manifests' `publisher` name it by.
    Id {
        /// The public key (PEM).
        key: PathBuf,
    },
}

/// A key's role, as `garden trust add --role` takes it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    /// Signs components.
    Publisher,
    /// Signs a daemon's entries on the shared bus.
    Daemon,
}

impl From<RoleArg> for garden_registry::trust::Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Publisher => Self::Publisher,
            RoleArg::Daemon => Self::Daemon,
        }
    }
}

/// `garden trust ...`
#[derive(Subcommand)]
pub enum TrustCommand {
    /// Trust a public key: a publisher's (components it signs may run) or,
    /// with `--role daemon`, a daemon's (its entries on the shared bus are
    /// believed).
    Add {
        /// The public key (PEM).
        key: PathBuf,
        /// A name for people (default: the file name).
        #[arg(long)]
        name: Option<String>,
        /// What the key may sign: `publisher` (components) or `daemon`.
        #[arg(long, value_enum, default_value = "publisher")]
        role: RoleArg,
        /// Trust store file.
        #[arg(long, value_name = "FILE")]
        trust: Option<PathBuf>,
    },
    /// List trusted and revoked keys.
    List {
        /// Trust store file.
        #[arg(long, value_name = "FILE")]
        trust: Option<PathBuf>,
    },
    /// Revoke a key: everything it signed is refused from now on.
    Revoke {
        /// The key id (32 hex characters, or the older 16).
        key_id: String,
        /// Why (shown with every refusal).
        #[arg(long)]
        reason: String,
        /// Trust store file.
        #[arg(long, value_name = "FILE")]
        trust: Option<PathBuf>,
    },
}

/// `garden sign`
#[derive(Args)]
pub struct SignArgs {
    /// The unsigned component.
    component: PathBuf,
    /// The manifest (TOML).
    #[arg(long)]
    manifest: PathBuf,
    /// The private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// Output file (default: COMPONENT with `.signed.wasm`).
    #[arg(long, short)]
    out: Option<PathBuf>,
}

/// `garden verify`
#[derive(Args)]
pub struct VerifyArgs {
    /// The signed component.
    component: PathBuf,
    /// Trust store file.
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
}

/// `garden inspect`
#[derive(Args)]
pub struct InspectArgs {
    /// The signed component.
    component: PathBuf,
    /// Trust store file.
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

fn trust_path(p: Option<PathBuf>) -> PathBuf {
    p.unwrap_or_else(integrity::default_trust_path)
}

/// The trust store to check components against: a path the user named must
/// exist; the default one may be absent (then nothing is trusted).
pub(crate) fn named_trust(p: Option<PathBuf>) -> Result<TrustStore> {
    Ok(match p {
        Some(path) => TrustStore::read_named(&path)?,
        None => TrustStore::read(&integrity::default_trust_path())?,
    })
}

/// Record a trust change in the default audit store (a failure to open it
/// is reported, not fatal: the trust file already changed).
pub(crate) fn audit_trust(kind: &str, key: &str, detail: &str) {
    match garden_host::audit::Audit::open(&garden_host::audit::default_store_url()) {
        Ok(a) => a.record(kind, "-", key, detail),
        Err(e) => eprintln!("warning: trust change not audited: {e}"),
    }
}

/// Run `garden key`.
pub fn key(cmd: KeyCommand) -> Result<()> {
    match cmd {
        KeyCommand::Generate { name, dir } => {
            let key = SigningKey::generate();
            let (private, public) = key.write_pair(&dir, &name)?;
            println!("key id {}", key.public().id());
            println!("private key {} (keep it secret)", private.display());
            println!("public key  {}", public.display());
            Ok(())
        }
        KeyCommand::Rotate(args) => crate::rotate::rotate(args),
        KeyCommand::Id { key } => {
            println!("{}", PublicKey::read(&key)?.id());
            Ok(())
        }
    }
}

/// Run `garden trust`.
pub fn trust(cmd: TrustCommand) -> Result<()> {
    match cmd {
        TrustCommand::Add {
            key,
            name,
            role,
            trust,
        } => {
            let path = trust_path(trust);
            let public = PublicKey::read(&key)?;
            // `alice.pub.pem`, as `garden key generate` names it, is alice.
            let name = name.unwrap_or_else(|| {
                let stem = key.file_stem().and_then(|s| s.to_str()).unwrap_or("key");
                stem.strip_suffix(".pub").unwrap_or(stem).to_string()
            });
            let role = garden_registry::trust::Role::from(role);
            let id = TrustStore::update(&path, |store| {
                store.add_as(&public, &name, role, &now_rfc3339())
            })?;
            audit_trust(
                "trust-add",
                &id.to_string(),
                &format!("trusted as `{name}` ({role}) in {}", path.display()),
            );
            println!("trusted {id} ({name}, {role}) in {}", path.display());
            Ok(())
        }
        TrustCommand::List { trust } => {
            let path = trust_path(trust);
            let store = TrustStore::read(&path)?;
            println!("trust store {}", path.display());
            for k in &store.keys {
                println!(
                    "trusted  {}  {}  {}  (added {})",
                    k.id, k.role, k.name, k.added_at
                );
            }
            for r in &store.revoked {
                println!("revoked  {}  at {}: {}", r.id, r.revoked_at, r.reason);
            }
            if store.keys.is_empty() && store.revoked.is_empty() {
                println!("(empty)");
            }
            Ok(())
        }
        TrustCommand::Revoke {
            key_id,
            reason,
            trust,
        } => {
            let path = trust_path(trust);
            let id: KeyId = key_id.parse()?;
            TrustStore::update(&path, |store| {
                store.revoke(id, &reason, &now_rfc3339());
                Ok(())
            })?;
            audit_trust(
                "trust-revoke",
                &id.to_string(),
                &format!("revoked in {}: {reason}", path.display()),
            );
            println!("revoked {id} in {}: {reason}", path.display());
            Ok(())
        }
    }
}

/// Run `garden sign`.
pub fn sign(args: SignArgs) -> Result<()> {
    let code = std::fs::read(&args.component)
        .with_context(|| format!("reading {}", args.component.display()))?;
    let text = std::fs::read_to_string(&args.manifest)
        .with_context(|| format!("reading {}", args.manifest.display()))?;
    let manifest = Manifest::parse(&text, &args.manifest.display().to_string())?;
    let key = SigningKey::read(&args.key)?;
    let signed = signature::sign(&code, &manifest, &key, &now_rfc3339())?;
    let out = args
        .out
        .unwrap_or_else(|| args.component.with_extension("signed.wasm"));
    std::fs::write(&out, signed).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "signed {} by {} -> {}",
        manifest.reference(),
        key.public().id(),
        out.display()
    );
    Ok(())
}

fn engine() -> Result<Engine> {
    Engine::new(Limits::default(), crate::run::default_cache_dir())
        .context("starting the wasm engine")
}

/// Run `garden verify`.
pub fn verify(args: VerifyArgs) -> Result<()> {
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("reading {}", args.component.display()))?;
    let store = named_trust(args.trust)?;
    let module = engine()?
        .load(&bytes, &store)
        .with_context(|| format!("{} is not accepted", args.component.display()))?;
    let (id, name) = module
        .signer()
        .cloned()
        .unwrap_or_else(|| (KeyId::of(&[0; 32]), String::new()));
    let reference = module
        .manifest()
        .map(Manifest::reference)
        .unwrap_or_default();
    println!(
        "valid: {reference} sha256:{} signed by {id} ({name})",
        module.digest()
    );
    Ok(())
}

/// Run `garden inspect`.
pub fn inspect(args: InspectArgs) -> Result<()> {
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("reading {}", args.component.display()))?;
    let parsed = signature::parse(&bytes)?;
    let store = named_trust(args.trust)?;
    let status = match store.verify(&bytes) {
        Ok(v) => format!("trusted (signed by {})", v.signer_name),
        Err(e) => format!("NOT trusted: {e}"),
    };
    // Read, never compiled: the signer may not be trusted.
    let interface = garden_host::shape::of(parsed.code)?;
    if args.json {
        let v = serde_json::json!({
            "sha256": parsed.digest.to_hex(),
            "signer": parsed.key_id.to_string(),
            "signed_at": parsed.signed_at,
            "trust": status,
            "manifest": parsed.manifest,
            "imports": interface.imports,
            "exports": interface.exports,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("component  {}", parsed.manifest.reference());
    println!("sha256     {}", parsed.digest);
    println!("signer     {} at {}", parsed.key_id, parsed.signed_at);
    println!("trust      {status}");
    println!("imports    {}", interface.imports.join("\n           "));
    println!("exports    {}", interface.exports.join("\n           "));
    println!("\nmanifest:\n{}", parsed.manifest_text);
    Ok(())
}

/// Options of `garden manifest`.
#[derive(Args)]
pub struct ManifestArgs {
    /// The component as built (unsigned, e.g. target/wasm32-wasip2/release/x.wasm).
    component: PathBuf,
    /// Linear memory the module asks for, bytes (a Python module needs about
    /// 32 MiB); written as `[limits] memory_bytes`.
    #[arg(long, value_name = "BYTES")]
    memory: Option<u64>,
    /// Compare with this manifest instead of printing one: exit 1, saying
    /// what differs, if loading would refuse the pair.
    #[arg(long, value_name = "garden.toml")]
    check: Option<PathBuf>,
}

/// `garden manifest`: the manifest a component's own `describe()` calls
/// for, so genes and topics are never written twice by hand.
pub fn manifest(args: ManifestArgs) -> Result<()> {
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("reading {}", args.component.display()))?;
    // The author's own build, unsigned: run in the sandbox, never cached.
    let limits = Limits {
        max_core_instances: LANGUAGE_CORE_INSTANCES,
        ..Limits::default()
    };
    let engine = Engine::new(limits, None)?;
    let info = engine
        .describe_unsigned(&bytes)
        .with_context(|| format!("describing {}", args.component.display()))?;
    match args.check {
        None => {
            print!(
                "{}",
                garden_host::engine::manifest_for(&info, args.memory).to_canonical()
            );
            Ok(())
        }
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let manifest = Manifest::parse(&text, &path.display().to_string())?;
            match garden_host::engine::manifest_mismatch(&info, &manifest) {
                None => {
                    println!("{} matches the component's describe()", path.display());
                    Ok(())
                }
                Some(why) => anyhow::bail!(
                    "{} does not match the component: {why}; write it again with `garden manifest {}`",
                    path.display(),
                    args.component.display()
                ),
            }
        }
    }
}

/// Core instances `garden manifest` allows a component to declare: enough
/// for a CPython one (38), whatever the host's default.
const LANGUAGE_CORE_INSTANCES: u32 = 40;
