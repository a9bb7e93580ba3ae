//! `garden key rotate`: replace a daemon's key, or the garden's body key,
//! while the daemons run.
//!
//! The order is what makes it safe: the new key is trusted first, the old
//! one given an expiry (`--grace`), and only then is the key file
//! replaced (atomically). The daemon watching the file reads with the new
//! key at its next heartbeat and writes with it a heartbeat lifetime
//! later, when every daemon sharing the trust store trusts it; entries
//! written with the old key are read until it expires.
//!
//! Where each host keeps its own trust store, `--stage` makes the new key
//! beside the old one (`NAME.next.key.pem`) and trusts it here; trust its
//! public half on the other hosts, then run `garden key rotate` again to
//! put it in use.
//!
//! `--body-keys FILE` adds a key to the garden's body keyring (making the
//! file, 0600, if there is none) and makes it current; the key it replaces
//! opens what comes from the wire until `--grace` is over, and records in
//! the store for good. Daemons sharing the file seal with the new key a
//! heartbeat lifetime after they read it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use garden_host::cluster::{key_name, public_key_path};
use garden_host::integrity::{self, now_rfc3339, rfc3339_after};
use garden_registry::trust::Role;
use garden_registry::{SigningKey, TrustStore};

/// Options of `garden key rotate`.
#[derive(clap::Args)]
pub struct RotateArgs {
    /// The daemon's private key file (default: the one `garden daemon
    /// --name NAME` made).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["name", "body_keys"])]
    key: Option<PathBuf>,
    /// The daemon whose key to rotate, when `--key` is not given.
    #[arg(long)]
    name: Option<String>,
    /// How long the old key stays trusted, so entries written with it and
    /// not read yet are still taken: e.g. 90s, 10m, 1h, 2d. Make it longer
    /// than the longest backlog a daemon may fall behind by.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    grace: Duration,
    /// Only make and trust the next key (NAME.next.key.pem), for hosts
    /// with trust stores of their own: trust its public half on each, then
    /// rotate again without --stage.
    #[arg(long)]
    stage: bool,
    /// Rotate the garden's body key in this keyring file instead (made if
    /// missing).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["key", "name", "stage"])]
    body_keys: Option<PathBuf>,
    /// Trust store file (default: $GARDEN_TRUST or ~/.config/garden/trust.toml).
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
}

/// `90s`, `10m`, `1h`, `2d` (or plain seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: write e.g. 90s, 10m, 1h or 2d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{text}`: use s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(seconds)))
}

/// Run `garden key rotate`.
pub fn rotate(args: RotateArgs) -> Result<()> {
    if let Some(path) = &args.body_keys {
        let (new, old) = garden_host::keyring::Keyring::rotate(path, args.grace)?;
        let detail = match old {
            Some(old) => format!(
                "body key {new} is current in {}; {old} opens what comes from the wire until {}",
                path.display(),
                rfc3339_after(args.grace)
            ),
            None => format!("body keyring {} made with key {new}", path.display()),
        };
        crate::integrity_cmd::audit_trust("body-key-rotate", &new, &detail);
        println!("{detail}");
        return Ok(());
    }
    let key_path = match (&args.key, &args.name) {
        (Some(k), _) => k.clone(),
        (None, Some(name)) => crate::daemon::default_key_path(name),
        (None, None) => bail!("give --key FILE or --name NAME"),
    };
    let trust = args
        .trust
        .clone()
        .unwrap_or_else(integrity::default_trust_path);
    let old = SigningKey::read(&key_path).context("reading the daemon key to rotate")?;
    let name = trusted_name(&trust, &old)?;
    let staged = staged_path(&key_path);
    if args.stage {
        return stage(&staged, &trust, &name);
    }
    let new = if staged.exists() {
        SigningKey::read(&staged).context("reading the staged key")?
    } else {
        SigningKey::generate()
    };
    let until = rfc3339_after(args.grace);
    // Trusted before it is written: a daemon never finds an untrusted key
    // in its file.
    TrustStore::update(&trust, |store| {
        store.add_as(&new.public(), &name, Role::Daemon, &now_rfc3339())?;
        store.expire(&old.public().id(), &until)
    })?;
    new.replace_pair(&key_path, &public_key_path(&key_path))?;
    for f in [staged.clone(), public_key_path(&staged)] {
        if f.exists() {
            std::fs::remove_file(&f).with_context(|| format!("removing {}", f.display()))?;
        }
    }
    let detail = format!(
        "daemon key {} of {name} rotated to {}; the old key is trusted until {until}",
        old.public().id(),
        new.public().id()
    );
    crate::integrity_cmd::audit_trust("daemon-key-rotate", &new.public().id().to_string(), &detail);
    println!("{detail}");
    println!(
        "the daemon reads with the new key at its next heartbeat and writes with it one heartbeat lifetime later; \
         hosts with trust stores of their own must trust {} before then (see --stage)",
        public_key_path(&key_path).display()
    );
    Ok(())
}

/// Make and trust the next key without using it.
fn stage(staged: &Path, trust: &Path, name: &str) -> Result<()> {
    if staged.exists() {
        bail!(
            "a key is staged already at {}: rotate without --stage to use it, or remove it",
            staged.display()
        );
    }
    let dir = staged.parent().unwrap_or(Path::new("."));
    let next = SigningKey::generate();
    let (_, public) = next.write_pair(dir, key_name(staged))?;
    TrustStore::update(trust, |store| {
        store.add_as(&next.public(), name, Role::Daemon, &now_rfc3339())
    })?;
    println!(
        "staged key {} at {}; trust it on every other host (`garden trust add --role daemon --name {name} {}`), then run `garden key rotate` again without --stage",
        next.public().id(),
        staged.display(),
        public.display()
    );
    Ok(())
}

/// The name the trust store gives `key`, which must be a trusted daemon key.
fn trusted_name(trust: &Path, key: &SigningKey) -> Result<String> {
    let store = TrustStore::read(trust)?;
    let id = key.public().id();
    match store.keys.iter().find(|k| k.id.matches(&id)) {
        Some(k) if k.role == Role::Daemon => Ok(k.name.clone()),
        Some(k) => bail!("key {id} is trusted as a {} key, not a daemon's", k.role),
        None => bail!(
            "key {id} is not trusted in {}: only a trusted daemon key is rotated (`garden trust add --role daemon` trusts one)",
            trust.display()
        ),
    }
}

/// `NAME.next.key.pem` beside `NAME.key.pem`.
fn staged_path(key: &Path) -> PathBuf {
    key.with_file_name(format!("{}.next.key.pem", key_name(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
