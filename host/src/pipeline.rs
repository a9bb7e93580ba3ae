//! The pipeline configuration: which modules run, how many instances, with
//! which parameters and settings, under which limits. `garden run` uses the
//! embedded `host/pipeline.toml` unless given `--config`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::engine::{Engine, LoadError, Module};
use crate::limits::Limits;

/// The embedded default pipeline (the trading application).
pub const DEFAULT_PIPELINE: &str = include_str!("../pipeline.toml");

/// A pipeline description, as read from TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Topic the feed publishes on.
    #[serde(default = "default_feed_topic")]
    pub feed_topic: String,
    /// Topic of the fitness reports the host reads.
    #[serde(default = "default_fitness_topic")]
    pub fitness_topic: String,
    /// Topic of context changes (e.g. market regimes) the replication
    /// engine reads; none to ignore them.
    #[serde(default)]
    pub context_topic: Option<String>,
    /// Limits for every instance.
    #[serde(default)]
    pub limits: Limits,
    /// How the population evolves.
    #[serde(default)]
    pub evolution: crate::replication::EvolutionConfig,
    /// The bus (default: the in-process memory bus).
    #[serde(default)]
    pub bus: crate::bus::BusConfig,
    /// The store for the audit log and records (`sqlite://...` or
    /// `postgres://...`; default: the local SQLite file).
    #[serde(default)]
    pub store: Option<String>,
    /// The modules, in the order they are started.
    #[serde(rename = "module")]
    pub modules: Vec<ModuleConfig>,
}

fn default_feed_topic() -> String {
    "bar".into()
}

fn default_fitness_topic() -> String {
    "fitness".into()
}

fn one() -> u32 {
    1
}

/// One module in the pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleConfig {
    /// The module's name: one built into the binary, or a label when `path` is set.
    pub name: String,
    /// A component file to load instead of the built-in module.
    pub path: Option<PathBuf>,
    /// How many instances to start.
    #[serde(default = "one")]
    pub instances: u32,
    /// Whether these instances are the population (`--variants` sets their
    /// number; the first runs default genes, the others random ones).
    #[serde(default)]
    pub population: bool,
    /// Gene values overriding the defaults (for every instance).
    #[serde(default)]
    pub params: BTreeMap<String, f64>,
    /// Free-form settings handed to `init`.
    #[serde(default)]
    pub settings: BTreeMap<String, toml::Value>,
}

impl ModuleConfig {
    /// Settings as strings (numbers and booleans written as in TOML).
    pub fn settings_strings(&self) -> Vec<(String, String)> {
        self.settings
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), text)
            })
            .collect()
    }
}

/// Why a pipeline could not be read or loaded.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The configuration file cannot be read.
    #[error("cannot read pipeline configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The configuration is not valid TOML for a pipeline.
    #[error("invalid pipeline configuration {origin}: {message}")]
    Parse {
        /// Where it came from.
        origin: String,
        /// The parser's message (with line and column).
        message: String,
    },
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
    /// The configuration is inconsistent.
    #[error("invalid pipeline: {0}")]
    Invalid(String),
}

impl PipelineConfig {
    /// Parse a configuration; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PipelineError> {
        let config: PipelineConfig = toml::from_str(text).map_err(|e| PipelineError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Read a configuration file.
    pub fn read(path: &Path) -> Result<Self, PipelineError> {
        let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The embedded default.
    pub fn embedded() -> Result<Self, PipelineError> {
        Self::parse(DEFAULT_PIPELINE, "embedded pipeline.toml")
    }

    fn validate(&self) -> Result<(), PipelineError> {
        if self.modules.is_empty() {
            return Err(PipelineError::Invalid("no [[module]] entries".into()));
        }
        if self.modules.iter().filter(|m| m.population).count() > 1 {
            return Err(PipelineError::Invalid(
                "at most one module may be the population".into(),
            ));
        }
        let topics = [
            ("feed_topic", Some(&self.feed_topic)),
            ("fitness_topic", Some(&self.fitness_topic)),
            ("context_topic", self.context_topic.as_ref()),
        ];
        for (field, topic) in topics {
            if let Some(topic) = topic {
                garden_registry::topic::check(topic)
                    .map_err(|e| PipelineError::Invalid(format!("`{field}`: {e}")))?;
            }
        }
        Ok(())
    }

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
            let module = match engine.load(&bytes, trust.store_for(&bytes)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_pipeline_parses() {
        let c = PipelineConfig::embedded().expect("embedded pipeline");
        assert_eq!(c.modules.len(), 10);
        assert_eq!(c.modules[0].name, "tape", "the tape starts first");
        assert!(c.modules[1].population);
        let fusion = &c.modules[7];
        assert_eq!(fusion.name, "fusion");
        assert!(
            fusion
                .settings_strings()
                .contains(&("deadline-bars".to_string(), "1".to_string()))
        );
    }

    #[test]
    fn bad_configurations_are_refused_with_position() {
        let err = PipelineConfig::parse("[[module]]\nnmae = 'x'\n", "t.toml").unwrap_err();
        assert!(
            err.to_string().contains("t.toml") && err.to_string().contains("nmae"),
            "{err}"
        );
        let err = PipelineConfig::parse("feed_topic = 'bar'\n", "t.toml").unwrap_err();
        assert!(err.to_string().contains("module"), "{err}");
        let err = PipelineError::to_string(
            &PipelineConfig::parse("feed_topic = 'leader'\n[[module]]\nname = 'x'\n", "t")
                .expect_err("a reserved feed topic"),
        );
        assert!(
            err.contains("`feed_topic`") && err.contains("reserved"),
            "{err}"
        );
        let two = "[[module]]\nname='a'\npopulation=true\n[[module]]\nname='b'\npopulation=true\n";
        assert!(matches!(
            PipelineConfig::parse(two, "t"),
            Err(PipelineError::Invalid(_))
        ));
    }
}
