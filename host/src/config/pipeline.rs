//! The pipeline configuration: which modules run, how many instances, with
//! which parameters and settings, under which limits. `garden run` uses the
//! embedded `host/pipeline.toml` unless given `--config`.
//!
//! Invariant: a [`PipelineConfig`] that parsed is valid (at least one
//! module, every topic in the topic grammar). Several modules may be the
//! population: their variants compete in one, crossover within one code;
//! loading its modules is [`crate::loader`]'s work.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::limits::Limits;

/// The embedded default pipeline (the trading application).
pub const DEFAULT_PIPELINE: &str = include_str!("../../pipeline.toml");

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
    pub evolution: super::EvolutionConfig,
    /// The bus (default: the in-process memory bus).
    #[serde(default)]
    pub bus: super::BusConfig,
    /// The store for the audit log and records (`sqlite://...` or
    /// `postgres://...`; default: the local SQLite file).
    #[serde(default)]
    pub store: Option<String>,
    /// The modules, in the order they are started.
    #[serde(rename = "module")]
    pub modules: Vec<ModuleConfig>,
    /// New code to load while a replay runs (`[[deploy]]`), in bar order.
    #[serde(default, rename = "deploy")]
    pub deploys: Vec<DeployConfig>,
    /// Arms of `garden run --ablate NAME` (`[ablation.NAME]`).
    #[serde(default, rename = "ablation")]
    pub ablations: BTreeMap<String, super::AblationConfig>,
}

/// New code for a module, loaded while a replay runs: "at bar 2,000 load
/// this component as alpha-ema".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployConfig {
    /// The bar (index from 0) before which the new code takes over.
    pub at_bar: usize,
    /// The pipeline module it is new code for (its `name` there).
    pub module: String,
    /// The signed component file; relative to the pipeline file's
    /// directory when read from a file.
    pub path: PathBuf,
    /// How it takes over.
    #[serde(default)]
    pub strategy: Strategy,
    /// With `compete`: how many variants of the new code join (default:
    /// as many as the module's instances).
    pub variants: Option<u32>,
    /// With `canary`: the percentage of the module's keys the new code
    /// takes (1 to 99; default [`DeployConfig::CANARY_SHARE`]).
    pub share: Option<u8>,
    /// When a `replace` or a `canary` is taken back, and when a canary is
    /// promoted (`[deploy.rollback]`).
    #[serde(default)]
    pub rollback: RollbackConfig,
}

impl DeployConfig {
    /// Default share of a canary, in percent of the keys.
    pub const CANARY_SHARE: u8 = 10;
}

/// When new code that replaced the old is taken back: the old code stays
/// compiled and each instance's snapshot at the switch stays kept for
/// `watch_bars` bars; if the new code's instances trap `traps` times
/// between them in that time, every instance goes back to the old code,
/// from its snapshot at the switch. With `fitness_margin`, a `replace` of
/// the population is also taken back at the end of the watch when its
/// variants' mean fitness over the watch fell below theirs over as many
/// bars before the switch by more than the margin.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RollbackConfig {
    /// Traps of the new code, summed over its instances, that take it
    /// back; 0 never does.
    pub traps: u64,
    /// Bars after the switch during which the deploy can be taken back;
    /// after them it is final and the old code is let go (a canary is
    /// then promoted: the new code replaces the old everywhere).
    pub watch_bars: usize,
    /// How far (in fitness units, `[evolution.fitness]`) the population's
    /// mean fitness may fall on the new code before it is taken back;
    /// none: fitness takes nothing back.
    pub fitness_margin: Option<f64>,
}

impl RollbackConfig {
    /// Default `traps`: one trap may be bad luck, three are the code.
    pub const TRAPS: u64 = 3;
    /// Default `watch_bars`.
    pub const WATCH_BARS: usize = 500;
}

impl Default for RollbackConfig {
    fn default() -> Self {
        RollbackConfig {
            traps: Self::TRAPS,
            watch_bars: Self::WATCH_BARS,
            fitness_margin: None,
        }
    }
}

/// How new code takes over from the old.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Every instance of the old code goes on, under its id, on the new
    /// code, from its snapshot.
    #[default]
    Replace,
    /// New variants of the new code join the population and compete with
    /// the old code's on fitness (a population module only, with
    /// evolution on).
    Compete,
    /// One instance of the new code takes `share` percent of the module's
    /// shared deliveries, by key, beside the old code, which keeps the
    /// rest; promoted after the watch, or taken back if it traps.
    Canary,
}

impl Strategy {
    /// The strategy as written in a pipeline file.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Replace => "replace",
            Strategy::Compete => "compete",
            Strategy::Canary => "canary",
        }
    }
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
    /// A component file to load instead of the built-in module; relative
    /// to the pipeline file's directory when read from a file.
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
    /// Most of these instances (a population's variants) one sandbox may
    /// carry, if the module allows cohorts (`info.cohort`). Default 1:
    /// every instance alone. See docs/cohorts.md for what is shared.
    #[serde(default = "one")]
    pub cohort: u32,
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

/// Why a pipeline file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
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
    /// The configuration is inconsistent.
    #[error("invalid pipeline: {0}")]
    Invalid(String),
}

impl PipelineConfig {
    /// Parse a configuration; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: PipelineConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Read a configuration file. A module's relative `path` is taken from
    /// the file's own directory (as Cargo and Compose do), so a pipeline
    /// runs the same from any working directory.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new(""));
        for module in &mut config.modules {
            if let Some(file) = module.path.as_mut().filter(|p| p.is_relative()) {
                *file = base.join(&*file);
            }
        }
        for deploy in &mut config.deploys {
            if deploy.path.is_relative() {
                deploy.path = base.join(&deploy.path);
            }
        }
        Ok(config)
    }

    /// The embedded default.
    pub fn embedded() -> Result<Self, ConfigError> {
        Self::parse(DEFAULT_PIPELINE, "embedded pipeline.toml")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.modules.is_empty() {
            return Err(ConfigError::Invalid("no [[module]] entries".into()));
        }
        let topics = [
            ("feed_topic", Some(&self.feed_topic)),
            ("fitness_topic", Some(&self.fitness_topic)),
            ("context_topic", self.context_topic.as_ref()),
        ];
        for (field, topic) in topics {
            if let Some(topic) = topic {
                garden_trust::topic::check(topic)
                    .map_err(|e| ConfigError::Invalid(format!("`{field}`: {e}")))?;
            }
        }
        for d in &self.deploys {
            let Some(target) = self.modules.iter().find(|m| m.name == d.module) else {
                return Err(ConfigError::Invalid(format!(
                    "[[deploy]] at bar {} is for module `{}`, which the pipeline does not have",
                    d.at_bar, d.module
                )));
            };
            if d.strategy == Strategy::Compete && !(target.population && self.evolution.enabled) {
                return Err(ConfigError::Invalid(format!(
                    "[[deploy]] at bar {}: `compete` needs `{}` to be the population and [evolution] enabled; use `replace`",
                    d.at_bar, d.module
                )));
            }
            let by_fitness = d.rollback.fitness_margin.is_some();
            if by_fitness
                && !(d.strategy == Strategy::Replace && target.population && self.evolution.enabled)
            {
                return Err(ConfigError::Invalid(format!(
                    "[[deploy]] at bar {}: `rollback.fitness_margin` judges a `replace` of the population (`{}` is not, or evolution is off): drop it, or deploy the population",
                    d.at_bar, d.module
                )));
            }
        }
        for (name, arm) in &self.ablations {
            arm.check(name, self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_pipeline_parses() {
        let c = PipelineConfig::embedded().expect("embedded pipeline");
        assert_eq!(c.modules.len(), 16);
        assert_eq!(c.modules[0].name, "tape", "the tape starts first");
        assert!(c.modules[1].population);
        let fusion = &c.modules[13];
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
        let err = ConfigError::to_string(
            &PipelineConfig::parse("feed_topic = 'leader'\n[[module]]\nname = 'x'\n", "t")
                .expect_err("a reserved feed topic"),
        );
        assert!(
            err.contains("`feed_topic`") && err.contains("reserved"),
            "{err}"
        );
        // Several codes may share one population (e.g. in three languages).
        let two = "[[module]]\nname='a'\npopulation=true\n[[module]]\nname='b'\npopulation=true\n";
        let parsed = PipelineConfig::parse(two, "t").expect("two population modules");
        assert_eq!(parsed.modules.iter().filter(|m| m.population).count(), 2);
    }
}
