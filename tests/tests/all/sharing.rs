//! Intelligence sharing in the embedded pipeline on the bundled data:
//! alphas that use what the others share write other plans than alphas
//! that ignore it, and each way repeats exactly under one seed.

use garden_host::config::PipelineConfig;
use garden_host::types::Body;
use garden_tests::{bundled_rows, replay_embedded_changed, without_timings};

/// Set the population's `intel` setting.
fn intel(mode: &'static str) -> impl FnOnce(&mut PipelineConfig) {
    move |config: &mut PipelineConfig| {
        let alpha = config
            .modules
            .iter_mut()
            .find(|m| m.population)
            .expect("a population");
        alpha
            .settings
            .insert("intel".into(), toml::Value::String(mode.into()));
    }
}

#[test]
fn alphas_using_intel_plan_differently_and_each_way_repeats() {
    let rows: Vec<_> = bundled_rows().into_iter().take(3_000).collect();
    let run = |mode| replay_embedded_changed(9, 6, 0, 0, &rows, &["plan", "intel"], intel(mode));
    let (shared, shared_msgs) = run("share");
    let (used, used_msgs) = run("use");
    let plans = |msgs: &[std::sync::Arc<garden_host::Envelope>]| -> Vec<String> {
        msgs.iter()
            .filter_map(|m| match &m.body {
                Body::Plan(p) => Some(p.id.clone()),
                _ => None,
            })
            .collect()
    };
    // Both share: the same intel goes out until behaviour differs.
    let intel = |msgs: &[std::sync::Arc<garden_host::Envelope>]| {
        msgs.iter()
            .filter(|m| matches!(m.body, Body::Intel(_)))
            .count()
    };
    assert!(intel(&shared_msgs) > 0 && intel(&used_msgs) > 0);
    let (a, b) = (plans(&shared_msgs), plans(&used_msgs));
    assert!(!a.is_empty());
    assert_ne!(a, b, "using intel changed which plans were written");
    // Until the first plan a user skips, both write the same ones.
    let same = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    assert!(same < a.len().min(b.len()), "they diverge within the run");
    // Fusion's experts' records are shared too.
    assert!(
        shared_msgs
            .iter()
            .any(|m| matches!(&m.body, Body::Intel(i) if i.subject.starts_with("expert:")))
    );
    let (again, _) = run("use");
    assert_eq!(without_timings(&used), without_timings(&again));
    let (again, _) = run("share");
    assert_eq!(without_timings(&shared), without_timings(&again));
}
