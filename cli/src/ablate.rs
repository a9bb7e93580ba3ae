//! `garden run --ablate NAME`: the replay as the pipeline has it, then once
//! per ablation named (`[ablation.NAME]` in the pipeline file) on the same
//! bars and seed, with each arm's out-of-sample figures side by side, so a
//! user sees on their own data whether a layer earns its place.
//!
//! Invariants: every arm runs the same loaded code (loaded and verified
//! once), on the memory bus, with the same seed and bars; an arm differs
//! from the pipeline only by what its ablation drops and changes.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use garden_host::bus::MemoryBus;
use garden_host::config::{ModuleConfig, PipelineConfig};
use garden_host::feed::Timeline;
use garden_host::replay::{ReplayOptions, RunSummary, replay_timeline_with};
use garden_host::{Engine, Module, render};

/// Name of the arm that runs the pipeline as it is.
pub const BASELINE: &str = "pipeline";

/// Run the baseline and every named arm; print the comparison (or every
/// arm's summary as JSON).
pub fn run(
    names: &[String],
    config: &PipelineConfig,
    engine: &Arc<Engine>,
    modules: &[(ModuleConfig, Arc<Module>)],
    timeline: &Timeline,
    options: &ReplayOptions,
    json: bool,
) -> Result<()> {
    let mut arms: Vec<(String, RunSummary)> = Vec::with_capacity(names.len() + 1);
    for name in std::iter::once(BASELINE).chain(names.iter().map(String::as_str)) {
        let arm = if name == BASELINE {
            config.clone()
        } else {
            config.ablated(name)?
        };
        let loaded = arm_modules(&arm, modules)?;
        eprintln!("arm {name}: {} modules", loaded.len());
        let bus = MemoryBus::new(arm.limits.inbox_capacity);
        let summary = replay_timeline_with(
            bus,
            engine.clone(),
            &arm,
            &loaded,
            timeline,
            options.clone(),
            &[],
            |_| {},
            |_, _| {},
        )
        .with_context(|| format!("arm {name}"))?;
        arms.push((name.to_string(), summary));
    }
    if json {
        let all: Vec<serde_json::Value> = arms
            .iter()
            .map(|(arm, s)| serde_json::json!({ "arm": arm, "summary": s }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        print!("{}", render::ablation(&arms));
    }
    Ok(())
}

/// The arm's modules, each with the code loaded for the pipeline.
fn arm_modules(
    arm: &PipelineConfig,
    loaded: &[(ModuleConfig, Arc<Module>)],
) -> Result<Vec<(ModuleConfig, Arc<Module>)>> {
    arm.modules
        .iter()
        .map(|m| {
            loaded
                .iter()
                .find(|(l, _)| l.name == m.name)
                .map(|(_, code)| (m.clone(), code.clone()))
                .with_context(|| format!("module {} was not loaded", m.name))
        })
        .collect()
}
