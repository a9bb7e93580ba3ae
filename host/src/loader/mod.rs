//! The loader: from a pipeline file to loaded modules and the instances to
//! start. Modules come from the binary (built in) or from the component
//! file a `path` names; each is verified against the trust store and
//! compiled (or taken from the artifact cache) by the [`Engine`];
//! [`plan()`] lays out every instance's id, settings and genes.
//!
//! Invariant: a module is loaded only after its signature verified against
//! the trust store for its bytes; with an audit log, every load and every
//! refusal is recorded before the caller sees the result.

pub mod deploy;
pub mod plan;

pub use plan::{Planned, plan};

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{ConfigError, ModuleConfig, PipelineConfig};
use crate::engine::{Engine, LoadError, Module};

/// Why a pipeline could not be read or loaded.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The pipeline file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A module named in the configuration is not built in.
    #[error(
        "module `{name}` is not built in (built-in: {known}); give its component with `path = \"...\"`"
    )]
    UnknownModule {
        /// The name.
        name: String,
        /// The built-in names.
        known: String,
    },
    /// A module file cannot be read.
    #[error("cannot read module `{name}` from {path}: {source}")]
    ModuleFile {
        /// The module.
        name: String,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A module failed to load.
    #[error("module `{name}` failed to load: {source}")]
    Load {
        /// The module.
        name: String,
        /// Why.
        source: LoadError,
    },
}

impl PipelineConfig {
    /// Load every module (verifying its signature against `trust`,
    /// compiling or reusing cached artifacts).
    pub fn load(
        &self,
        engine: &Engine,
        trust: &crate::integrity::Trust,
    ) -> Result<Vec<(ModuleConfig, Arc<Module>)>, PipelineError> {
        self.load_audited(engine, trust, None)
    }

    /// [`PipelineConfig::load`], recording every load and refusal in `audit`.
    pub fn load_audited(
        &self,
        engine: &Engine,
        trust: &crate::integrity::Trust,
        audit: Option<&crate::audit::Audit>,
    ) -> Result<Vec<(ModuleConfig, Arc<Module>)>, PipelineError> {
        let mut loaded = Vec::new();
        for m in &self.modules {
            let bytes: std::borrow::Cow<'static, [u8]> = match &m.path {
                Some(path) => std::fs::read(path)
                    .map_err(|source| PipelineError::ModuleFile {
                        name: m.name.clone(),
                        path: path.clone(),
                        source,
                    })?
                    .into(),
                None => garden_modules::module(&m.name)
                    .ok_or_else(|| PipelineError::UnknownModule {
                        name: m.name.clone(),
                        known: garden_modules::MODULES
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?
                    .into(),
            };
            let module = match engine
                .load(&bytes, trust.store_for(&bytes))
                .and_then(|module| match m.cohort {
                    0 | 1 => Ok(module),
                    size => module.in_cohorts_of(size).map_err(LoadError::Cohort),
                }) {
                Ok(module) => module,
                Err(source) => {
                    if let Some(a) = audit {
                        a.record("refusal", &m.name, "host", &source.to_string());
                    }
                    return Err(PipelineError::Load {
                        name: m.name.clone(),
                        source,
                    });
                }
            };
            if let Some(a) = audit {
                let reference = module
                    .manifest()
                    .map_or_else(|| m.name.clone(), |x| x.reference());
                let (key, signer) = module.signer().map_or_else(
                    || ("-".to_string(), String::new()),
                    |(k, n)| (k.to_string(), n.clone()),
                );
                a.record(
                    "load",
                    &reference,
                    &key,
                    &format!("sha256:{} signed by {signer}", module.digest()),
                );
            }
            loaded.push((m.clone(), module));
        }
        Ok(loaded)
    }
}
