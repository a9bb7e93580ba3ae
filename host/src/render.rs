//! The run summary as a text table for people (JSON is `serde_json` of
//! [`RunSummary`] itself).

use std::fmt::Write as _;

use crate::run::RunSummary;
use crate::runtime::InstanceState;

/// Most variants listed in the table; the rest are counted.
const MAX_ROWS: usize = 20;

/// Render the summary.
pub fn table(s: &RunSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "garden run: seed {}, data {}, {} bars",
        s.seed, s.data, s.bars
    );
    // Metric columns: whatever the fitness reports carried, in their order.
    let mut metric_names: Vec<String> = Vec::new();
    for v in &s.variants {
        if let Some(score) = &v.score {
            for (name, _) in &score.metrics {
                if !metric_names.contains(name) {
                    metric_names.push(name.clone());
                }
            }
        }
    }
    let mut header = format!("{:<16}", "variant");
    for name in &metric_names {
        let _ = write!(header, " {:>10}", name);
    }
    let _ = write!(
        header,
        " {:>7} {:>8} {:>8} {:>12}  state",
        "trades", "sharpe", "max dd", "final value"
    );
    let _ = writeln!(out, "\n{header}");
    let _ = writeln!(out, "{}", "-".repeat(header.len()));
    for v in s.variants.iter().take(MAX_ROWS) {
        let mut line = format!("{:<16}", v.id);
        match &v.score {
            Some(score) => {
                for name in &metric_names {
                    let value = score
                        .metrics
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, x)| *x);
                    match value {
                        Some(x) if x.fract() == 0.0 && x.abs() < 1e9 => {
                            let _ = write!(line, " {:>10}", x as i64);
                        }
                        Some(x) => {
                            let _ = write!(line, " {:>10.2}", x);
                        }
                        None => {
                            let _ = write!(line, " {:>10}", "-");
                        }
                    }
                }
                let _ = write!(
                    line,
                    " {:>7} {:>8.3} {:>7.2}% {:>12.2}",
                    score.trades,
                    score.sharpe,
                    score.max_drawdown * 100.0,
                    score.final_value
                );
            }
            None => {
                for _ in &metric_names {
                    let _ = write!(line, " {:>10}", "-");
                }
                let _ = write!(
                    line,
                    " {:>7} {:>8} {:>8} {:>12}",
                    "-", "-", "-", "no report"
                );
            }
        }
        let state = match &v.state {
            InstanceState::Running => "ok",
            InstanceState::Restarting => "restarting",
            InstanceState::Quarantined { .. } => "QUARANTINED",
        };
        let _ = writeln!(out, "{line}  {state}");
    }
    if s.variants.len() > MAX_ROWS {
        let _ = writeln!(
            out,
            "... and {} more (use --json for all)",
            s.variants.len() - MAX_ROWS
        );
    }
    if let Some(best) = s.variants.first() {
        let params: Vec<String> = best
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "\nbest: {} ({})", best.id, params.join(", "));
    }
    let _ = writeln!(
        out,
        "\ntotals: {:.2} s, {:.0} bars/s, {} messages ({:.0}/s), {} calls, {} failures, {} traps, {} restarts, {} quarantines, {} dead letters",
        s.elapsed_secs,
        s.bars_per_sec,
        s.messages,
        s.messages_per_sec,
        s.runtime.calls,
        s.runtime.failures,
        s.runtime.traps,
        s.runtime.restarts,
        s.runtime.quarantines,
        s.bus.dead_letters,
    );
    for i in s.instances.iter().filter(|i| i.last_error.is_some()) {
        let _ = writeln!(
            out,
            "  {}: {} failures; last: {}",
            i.id,
            i.failures.values().sum::<u64>(),
            i.last_error.as_deref().unwrap_or("")
        );
    }
    out
}
