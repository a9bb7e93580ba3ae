//! The host's side of the audit log: loads, refusals, quarantines and
//! refused publishes, appended to the hash-chained audit table of the store
//! (SQLite by default, PostgreSQL by URL).
//!
//! Invariants: after every append the host signs the chain's head with its
//! own key (`host.key.pem` in the data directory, created 0600 on first
//! use) and keeps that head in the store and in a file of its own, so a log
//! cut short is detected ([`garden_store::anchor`]). A write that fails
//! is never silent: it is counted ([`Audit::failures`]), logged as an error
//! and appended to `audit-failures.log` in the data directory, which
//! `garden audit verify` reports.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use garden_store::{Blocking, StoreError, anchor};

use crate::runtime::{InstanceReport, InstanceState};

/// The file where this host notes audit records it failed to write.
pub fn failures_file(data_dir: &Path) -> PathBuf {
    data_dir.join("audit-failures.log")
}

/// The default data directory: `$GARDEN_DATA`, else
/// `$XDG_DATA_HOME/garden`, else `~/.local/share/garden` (see
/// [`crate::paths`]).
pub fn default_data_dir() -> PathBuf {
    crate::paths::data_dir()
}

/// The default store: a SQLite file in the data directory.
pub fn default_store_url() -> String {
    format!(
        "sqlite://{}",
        default_data_dir().join("garden.db").display()
    )
}

/// A blocking handle on the audit log, for the synchronous host.
pub struct Audit {
    store: Blocking,
    data_dir: PathBuf,
    failures: AtomicU64,
}

impl Audit {
    /// Open (and migrate) the store at `url`; creates a SQLite file's
    /// directory if needed. The host's key and notes live in the default
    /// data directory.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_in(url, default_data_dir())
    }

    /// [`Audit::open`] with the host's key and notes in `data_dir`.
    pub fn open_in(url: &str, data_dir: PathBuf) -> Result<Self, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite://")
            && let Some(dir) = std::path::Path::new(path.split('?').next().unwrap_or(path)).parent()
        {
            let _ = std::fs::create_dir_all(dir);
        }
        // The host's own key: `host.key.pem` in the data directory.
        let key = anchor::host_key(&data_dir).map_err(|e| {
            StoreError::Url(format!(
                "{} (cannot make the host's audit key: {e})",
                garden_store::redacted(url)
            ))
        })?;
        let store =
            Blocking::connect(url)?.with_audit_signer(key, Some(anchor::head_file(&data_dir, url)));
        Ok(Audit {
            store,
            data_dir,
            failures: AtomicU64::new(0),
        })
    }

    /// Append a record. A failure to write does not stop the run, but it is
    /// loud: counted, logged as an error, and noted in the data directory's
    /// `audit-failures.log`, which `garden audit verify` reports.
    pub fn record(&self, kind: &str, module: &str, actor: &str, detail: &str) {
        let at = crate::integrity::now_rfc3339();
        if let Err(e) = self
            .store
            .run(async |s| s.audit(&at, kind, module, actor, detail).await)
        {
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!("could not write to the audit log: {e}");
            let line = format!(
                "{at}\t{kind}\t{module}\t{actor}\t{}\t{e}\n",
                detail.replace(['\t', '\n'], " ")
            );
            let noted = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(failures_file(&self.data_dir))
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if let Err(e) = noted {
                tracing::error!("could not note the failed audit write either: {e}");
            }
        }
    }

    /// Records this handle failed to write.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The data directory whose key signs this log's heads.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The store, for queries.
    pub fn store(&self) -> &Blocking {
        &self.store
    }
}

/// Writes what happens to a host's instances to the audit log, once each:
/// a quarantine when it is first seen, refused publishes as they grow. The
/// one way `garden run` (at its end) and a daemon (at every heartbeat)
/// audit their instances.
pub struct Watch {
    audit: Audit,
    actor: String,
    quarantines: std::collections::HashSet<String>,
    refusals: std::collections::HashMap<String, u64>,
}

impl Watch {
    /// Watch for `actor` (a daemon's name, or `host`), writing to `audit`.
    pub fn new(audit: Audit, actor: &str) -> Self {
        Watch {
            audit,
            actor: actor.to_string(),
            quarantines: Default::default(),
            refusals: Default::default(),
        }
    }

    /// Record what is new in `reports` since the last look.
    pub fn note(&mut self, reports: &[InstanceReport]) {
        for i in reports {
            if let InstanceState::Quarantined { reason } = &i.state
                && self.quarantines.insert(i.id.clone())
            {
                self.audit.record("quarantine", &i.id, &self.actor, reason);
            }
            let before = self
                .refusals
                .insert(i.id.clone(), i.refused_publishes)
                .unwrap_or(0);
            if i.refused_publishes > before {
                self.audit.record(
                    "publish-refused",
                    &i.id,
                    &self.actor,
                    &format!(
                        "{} publishes refused (undeclared topic or too large)",
                        i.refused_publishes - before
                    ),
                );
            }
        }
    }

    /// The audit log written to.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_is_counted_and_noted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let audit = Audit::open_in(&url, dir.path().join("data")).expect("opens");
        audit.record("load", "m@1.0.0", "k", "fine");
        assert_eq!(audit.failures(), 0);
        audit
            .store()
            .run(async |s| s.execute_raw("DROP TABLE audit").await)
            .expect("drop");
        audit.record("load", "m@1.0.0", "k", "lost");
        assert_eq!(audit.failures(), 1);
        let noted = std::fs::read_to_string(failures_file(audit.data_dir())).expect("noted");
        assert!(
            noted.contains("m@1.0.0") && noted.contains("lost"),
            "{noted}"
        );
        assert!(audit.data_dir().join("host.key.pem").exists());
    }
}
