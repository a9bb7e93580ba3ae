//! Benchmarks live in `benches/`; figures and how to reproduce them in
//! `README.md` beside this crate. What more than one bench uses is here.

use garden_host::config::PipelineConfig;

/// Modules of the full panel that the lean pipeline leaves out.
pub const PANEL_ONLY: [&str; 4] = [
    "tape",
    "expert-grammar",
    "expert-sequence",
    "expert-divergence",
];

/// The embedded pipeline with a fixed population (evolution off: it would
/// grow 1 variant into 16).
pub fn full() -> PipelineConfig {
    let mut full = PipelineConfig::embedded().expect("embedded pipeline");
    full.evolution.enabled = false;
    full
}

/// [`full`] without the curators, sharing, the MicroTape and the token and
/// divergence experts: alpha, regime, anomaly expert, fusion, decision,
/// trader.
pub fn lean() -> PipelineConfig {
    // Issue #3's pipeline had neither curators nor sharing: the embedded
    // pipeline's own ablations take them out.
    let mut lean = full()
        .ablated("sharing")
        .and_then(|c| c.ablated("curators"))
        .expect("the embedded pipeline's ablations apply");
    lean.modules
        .retain(|m| !PANEL_ONLY.contains(&m.name.as_str()));
    for m in lean.modules.iter_mut().filter(|m| m.name == "fusion") {
        m.settings.insert(
            "experts".into(),
            toml::Value::String("expert-anomaly".into()),
        );
    }
    lean
}

/// `config` with its population module packed in cohorts of `size`.
pub fn in_cohorts(mut config: PipelineConfig, size: u32) -> PipelineConfig {
    for m in config.modules.iter_mut().filter(|m| m.population) {
        m.cohort = size;
    }
    config
}
