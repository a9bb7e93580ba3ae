//! New code taking over while a pipeline runs: the `replace` and `compete`
//! strategies of a deploy, applied between two bars of a replay.
//!
//! Invariants: a deploy whose code cannot be had (unreadable, untrusted,
//! not compiling) changes nothing and says why; `replace` keeps every
//! instance's id, parameters and inbox (what waits is handled by the new
//! code, in order) and starts the new code from the old one's snapshot,
//! or fresh if it refuses it; `compete` adds variants of the new code to
//! the population and leaves the old code's variants alone, so selection
//! decides. Each deploy yields one [`DeployReport`], for the summary, the
//! audit log and the lineage.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::bus::Bus;
use crate::config::Strategy;
use crate::engine::Module;
use crate::loader::deploy::Deploy;
use crate::replication::Evolver;
use crate::runtime::{Runtime, Upgraded};

/// What one deploy did.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    /// The bar it took effect before.
    pub bar: usize,
    /// The pipeline module it was for.
    pub module: String,
    /// The new code's `name@version`, if it has a manifest, else its file.
    pub code: String,
    /// sha256 of the new code (empty if it could not be loaded).
    pub digest: String,
    /// Who signed it (key id), if anyone.
    pub signer: Option<String>,
    /// `replace` or `compete`.
    pub strategy: &'static str,
    /// The instances it touched, each with what became of it
    /// (`from-snapshot`, `fresh: WHY`, `failed: WHY`, `born`).
    pub instances: Vec<(String, String)>,
    /// `done`, or `refused: WHY` when nothing changed.
    pub outcome: String,
}

/// The code each pipeline module runs now, by its pipeline name.
pub type Current = HashMap<String, Arc<Module>>;

/// Apply `deploy` at `bar`.
pub fn apply<B: Bus>(
    runtime: &mut Runtime<B>,
    evolver: Option<&mut Evolver>,
    current: &mut Current,
    deploy: &Deploy,
    bar: usize,
) -> DeployReport {
    let d = &deploy.config;
    let mut report = DeployReport {
        bar,
        module: d.module.clone(),
        code: d.path.display().to_string(),
        digest: String::new(),
        signer: None,
        strategy: d.strategy.as_str(),
        instances: Vec::new(),
        outcome: "done".into(),
    };
    let code = match deploy.code() {
        Ok(code) => code,
        Err(why) => {
            report.outcome = format!("refused: {why}");
            return report;
        }
    };
    report.digest = code.digest().to_string();
    report.signer = code.signer().map(|(key, _)| key.to_string());
    if let Some(m) = code.manifest() {
        report.code = m.reference();
    }
    let Some(old) = current.get(&d.module).cloned() else {
        report.outcome = format!("refused: the pipeline runs no module `{}`", d.module);
        return report;
    };
    match d.strategy {
        Strategy::Replace => {
            for id in runtime.instances_of(old.digest()) {
                let what = match runtime.upgrade(&id, code.clone()) {
                    Ok(Upgraded::FromSnapshot) => "from-snapshot".to_string(),
                    Ok(Upgraded::Fresh(why)) => format!("fresh: {why}"),
                    Ok(Upgraded::Failed(why)) => format!("failed: {why}"),
                    Err(e) => format!("failed: {e}"),
                };
                report.instances.push((id, what));
            }
            if let Some(ev) = evolver {
                ev.replace_code(old.digest(), &code, bar);
            }
            current.insert(d.module.clone(), code);
        }
        Strategy::Compete => {
            let Some(ev) = evolver else {
                report.outcome = "refused: `compete` needs evolution on".into();
                return report;
            };
            let count = d.variants.unwrap_or_else(|| {
                u32::try_from(runtime.instances_of(old.digest()).len()).unwrap_or(u32::MAX)
            });
            for id in ev.compete(runtime, old.digest(), &code, count, bar) {
                report.instances.push((id, "born".into()));
            }
        }
    }
    report
}
