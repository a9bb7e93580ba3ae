//! Ablations: the same pipeline with some modules taken out and some
//! settings changed (`[ablation.NAME]`), so `garden run --ablate NAME`
//! can show what a layer earns on the user's data.
//!
//! The host reads nothing into an ablation: it drops the modules named in
//! `drop` and overrides the settings named in `settings`; what a curator or
//! a sharing loop is stays in the pipeline file.
//!
//! Invariants: an ablation names only modules the pipeline has; it never
//! drops the population; applying it changes nothing else of the pipeline.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::pipeline::{ConfigError, PipelineConfig};

/// One arm of an ablation: what to take out and what to change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AblationConfig {
    /// Modules (pipeline names) to leave out.
    #[serde(default)]
    pub drop: Vec<String>,
    /// Settings to override, by module: `{ fusion = { curators = "" } }`.
    #[serde(default)]
    pub settings: BTreeMap<String, BTreeMap<String, toml::Value>>,
}

impl PipelineConfig {
    /// The names of the ablations the pipeline defines.
    pub fn ablation_names(&self) -> Vec<&str> {
        self.ablations.keys().map(String::as_str).collect()
    }

    /// This pipeline with the ablation `name` applied.
    pub fn ablated(&self, name: &str) -> Result<PipelineConfig, ConfigError> {
        let Some(arm) = self.ablations.get(name) else {
            let known = self.ablation_names().join(", ");
            return Err(ConfigError::Invalid(format!(
                "no ablation `{name}` in the pipeline (it has: {}); add an [ablation.{name}] table",
                if known.is_empty() { "none" } else { &known }
            )));
        };
        arm.check(name, self)?;
        let mut out = self.clone();
        out.modules.retain(|m| !arm.drop.contains(&m.name));
        for m in out.modules.iter_mut() {
            if let Some(changes) = arm.settings.get(&m.name) {
                for (k, v) in changes {
                    m.settings.insert(k.clone(), v.clone());
                }
            }
        }
        Ok(out)
    }
}

impl AblationConfig {
    /// Refuse an ablation that names a module the pipeline lacks, or that
    /// drops the population.
    pub(crate) fn check(&self, name: &str, config: &PipelineConfig) -> Result<(), ConfigError> {
        let named = self.drop.iter().chain(self.settings.keys());
        for module in named {
            let Some(m) = config.modules.iter().find(|m| m.name == *module) else {
                return Err(ConfigError::Invalid(format!(
                    "[ablation.{name}] names module `{module}`, which the pipeline does not have"
                )));
            };
            if m.population && self.drop.contains(module) {
                return Err(ConfigError::Invalid(format!(
                    "[ablation.{name}] drops `{module}`, the population: an arm without it measures nothing"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::PipelineConfig;

    #[test]
    fn the_embedded_ablations_drop_the_curators_and_stop_the_sharing() {
        let c = PipelineConfig::embedded().expect("embedded");
        assert_eq!(c.ablation_names(), ["curators", "sharing"]);
        let without = c.ablated("curators").expect("applies");
        assert!(
            without
                .modules
                .iter()
                .all(|m| !m.name.starts_with("curator-"))
        );
        let fusion = without
            .modules
            .iter()
            .find(|m| m.name == "fusion")
            .expect("fusion");
        assert!(
            fusion
                .settings_strings()
                .contains(&("curators".into(), String::new()))
        );
        let alone = c.ablated("sharing").expect("applies");
        assert_eq!(alone.modules.len(), c.modules.len());
        let alpha = alone
            .modules
            .iter()
            .find(|m| m.population)
            .expect("population");
        assert!(
            alpha
                .settings_strings()
                .contains(&("intel".into(), "off".into()))
        );
        assert!(c.ablated("nothing").is_err());
    }

    #[test]
    fn an_ablation_of_an_unknown_module_or_of_the_population_is_refused() {
        let base = crate::config::DEFAULT_PIPELINE;
        let unknown = format!("{base}\n[ablation.x]\ndrop = [\"nope\"]\n");
        let err = PipelineConfig::parse(&unknown, "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("module `nope`"), "{err}");
        let population = format!("{base}\n[ablation.y]\ndrop = [\"alpha-ema\"]\n");
        let err = PipelineConfig::parse(&population, "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("the population"), "{err}");
    }
}
