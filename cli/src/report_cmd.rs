//! `garden report`: a recorded run as one self-contained HTML page; also
//! what `garden run --report` writes when a replay ends.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use garden_host::audit::{Audit, default_store_url};
use garden_host::keyring::Keyring;
use garden_report::ReportOptions;

/// Options of `garden report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// Run to report (default: the latest in the store).
    #[arg(long)]
    run: Option<String>,
    /// Store the run was recorded in (default: sqlite://~/.local/share/garden/garden.db;
    /// postgres://... also works; or $GARDEN_STORE_URL).
    #[arg(
        long,
        value_name = "URL",
        env = "GARDEN_STORE_URL",
        hide_env_values = true
    )]
    store: Option<String>,
    #[command(flatten)]
    passwords: crate::secrets::PasswordFiles,
    /// Where to write the page.
    #[arg(
        long,
        short,
        value_name = "FILE.html",
        default_value = "garden-report.html"
    )]
    out: PathBuf,
    /// The garden's body keyring, to open records it encrypted at rest (or
    /// $GARDEN_BODY_KEYS).
    #[arg(long, value_name = "FILE", env = "GARDEN_BODY_KEYS")]
    body_keys: Option<PathBuf>,
    /// The variant whose trades the price chart shows first (default: the best).
    #[arg(long, value_name = "ID")]
    variant: Option<String>,
    /// How many of the best variants the equity chart draws.
    #[arg(long, default_value_t = 5, value_name = "N")]
    top: usize,
}

/// Run `garden report`.
pub fn report(args: ReportArgs) -> Result<()> {
    let url = args
        .passwords
        .store(args.store.clone().unwrap_or_else(default_store_url))?;
    let audit = Audit::open(&url)?;
    let run = match args.run {
        Some(r) => r,
        None => match audit.store().run(async |s| s.latest_run().await)? {
            Some(r) => r,
            None => bail!("no run recorded in this store yet; run `garden run --records` first"),
        },
    };
    let options = ReportOptions {
        top: args.top,
        variant: args.variant,
        ..ReportOptions::default()
    };
    write(&audit, &run, args.body_keys.as_deref(), &options, &args.out)
}

/// Write the report of `run` from `audit`'s store to `out`.
pub(crate) fn write(
    audit: &Audit,
    run: &str,
    body_keys: Option<&Path>,
    options: &ReportOptions,
    out: &Path,
) -> Result<()> {
    let keys = body_keys
        .map(Keyring::read)
        .transpose()
        .context("reading the body keyring")?;
    let page = audit
        .store()
        .run(async |s| Ok(garden_report::report(s, run, keys.as_ref(), options).await))??;
    std::fs::write(out, &page).with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "report of run {run} written to {} ({:.1} MB; open it in a browser, no network needed)",
        out.display(),
        page.len() as f64 / 1e6
    );
    Ok(())
}
