//! The panel of micro-experts (tape, four experts, fusion) in the embedded
//! pipeline on the bundled data: every expert speaks, nothing it says
//! depends on a bar it has not seen, and a fixed seed repeats it exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use garden_host::Envelope;
use garden_host::types::Body;
use garden_tests::{bundled_rows, replay_embedded, without_timings};

const EXPERTS: [&str; 4] = [
    "expert-anomaly",
    "expert-grammar",
    "expert-sequence",
    "expert-divergence",
];
const TOPICS: [&str; 3] = ["tape", "evidence", "scored"];

/// The messages published at an event time before `cut`, in order.
fn before(tapped: &[Arc<Envelope>], cut: i64) -> Vec<Arc<Envelope>> {
    tapped.iter().filter(|m| m.time < cut).cloned().collect()
}

#[test]
fn evidence_up_to_a_cut_does_not_change_when_the_future_does() {
    let rows: Vec<_> = bundled_rows().into_iter().take(2_000).collect();
    let cut_index = 1_400;
    let cut = rows[cut_index].time;
    // The same bars up to the cut; after it, another market altogether:
    // prices shifted and stretched, volumes tripled.
    let mut altered = rows.clone();
    for (i, r) in altered.iter_mut().enumerate().skip(cut_index) {
        let f = 1.05 + 0.002 * (i % 7) as f64;
        r.open *= f;
        r.close *= f * 1.001;
        r.high = r.high.max(r.open).max(r.close) * f;
        r.low *= 0.999;
        r.volume = r.volume * 3.0 + 7.0;
    }
    let (_, original) = replay_embedded(5, 3, 0, &rows, &TOPICS);
    let (_, changed) = replay_embedded(5, 3, 0, &altered, &TOPICS);
    let (a, b) = (before(&original, cut), before(&changed, cut));
    assert!(
        a.len() > 1_000,
        "plenty of messages before the cut: {}",
        a.len()
    );
    assert_eq!(a.len(), b.len(), "as many messages before the cut");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "a message before the cut changed");
    }
    // And the altered future did reach the panel.
    assert_ne!(original.len() - a.len(), 0, "messages after the cut exist");
    assert!(
        original
            .iter()
            .zip(&changed)
            .skip(a.len())
            .any(|(x, y)| x != y),
        "the alteration changed what came after the cut"
    );
}

#[test]
fn the_whole_panel_speaks_on_the_bundled_data_and_repeats_under_a_seed() {
    let rows = bundled_rows();
    let (summary, tapped) = replay_embedded(11, 4, 0, &rows, &TOPICS);
    // Every expert gives evidence on plans, and not always a shrug.
    let mut by_expert: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut plans = BTreeSet::new();
    for m in &tapped {
        if let Body::Evidence(e) = &m.body {
            assert!(e.llr.is_finite(), "{e:?}");
            assert!(!e.reason.is_empty(), "{e:?}");
            let entry = by_expert.entry(e.expert.clone()).or_default();
            entry.0 += 1;
            entry.1 += usize::from(e.llr != 0.0);
            plans.insert(e.plan_id.clone());
        }
    }
    for expert in EXPERTS {
        let (n, nonzero) = by_expert.get(expert).copied().unwrap_or_default();
        assert_eq!(n, plans.len(), "{expert} judged every plan");
        assert!(nonzero > 0, "{expert} said something on {n} plans");
    }
    // Every scored plan counts every expert, none missing.
    let scored: Vec<_> = tapped
        .iter()
        .filter_map(|m| match &m.body {
            Body::Scored(s) => Some(s),
            _ => None,
        })
        .collect();
    assert!(!scored.is_empty());
    for s in &scored {
        assert_eq!(s.experts.len(), EXPERTS.len(), "{s:?}");
        assert!(s.missing.is_empty(), "{s:?}");
        assert!((0.0..=1.0).contains(&s.confidence));
    }
    // The report names each expert, with its evaluations.
    for expert in EXPERTS {
        let subject = format!("expert:{expert}");
        let report = summary
            .reports
            .iter()
            .find(|r| r.subject == subject)
            .unwrap_or_else(|| panic!("a report on {subject}"));
        let evaluations = report
            .metrics
            .iter()
            .find(|(k, _)| k == "evaluations")
            .map(|(_, v)| *v);
        assert_eq!(evaluations, Some(plans.len() as f64), "{subject}");
    }
    // The host timed every expert's messages.
    for expert in EXPERTS {
        let i = summary
            .instances
            .iter()
            .find(|i| i.module == expert)
            .expect("instance");
        assert!(i.busy_micros > 0.0 && i.micros_per_message > 0.0, "{i:?}");
    }
    // The same seed: the same panel, message for message.
    let (again, tapped_again) = replay_embedded(11, 4, 0, &rows, &TOPICS);
    assert_eq!(without_timings(&summary), without_timings(&again));
    assert_eq!(tapped.len(), tapped_again.len());
    assert!(tapped.iter().zip(&tapped_again).all(|(x, y)| x == y));
}
