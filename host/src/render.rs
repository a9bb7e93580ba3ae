//! The run summary as a text table for people (JSON is `serde_json` of
//! [`RunSummary`] itself), and one message as one line.

use std::fmt::Write as _;

use crate::Envelope;
use crate::replay::{EvolutionReport, RunSummary};
use crate::runtime::InstanceState;
use crate::types::Body;

/// Most variants listed in the table; the rest are counted.
const MAX_ROWS: usize = 20;

/// Most bytes of a binary `custom` body shown, in hex.
const MAX_HEX_BYTES: usize = 32;

/// One message for people: event time (UTC), topic, publisher, key, body.
/// A `custom` body is shown as text when it is UTF-8 (quoted, escaped) and
/// in hex otherwise; any other body as its JSON.
pub fn message_line(m: &Envelope) -> String {
    let time = chrono::DateTime::from_timestamp_millis(m.time).map_or_else(
        || m.time.to_string(),
        |t| t.format("%Y-%m-%d %H:%M").to_string(),
    );
    let body = match &m.body {
        Body::Custom(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => format!("{text:?}"),
            Err(_) => {
                let shown = &bytes[..bytes.len().min(MAX_HEX_BYTES)];
                let more = if bytes.len() > shown.len() { "…" } else { "" };
                format!("0x{}{more} ({} bytes)", hex::encode(shown), bytes.len())
            }
        },
        other => serde_json::to_string(other).unwrap_or_else(|e| format!("({e})")),
    };
    format!("{time}  {}  {}  {}  {body}", m.topic, m.source, m.key)
}

/// Render the summary: the variants, evolution, reports, cost per module
/// and totals, each a section of its own.
pub fn table(s: &RunSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "garden run: seed {}, data {}, {} bars",
        s.seed, s.data, s.bars
    );
    variants(&mut out, s);
    if let Some(e) = &s.evolution {
        evolution(&mut out, e, s.bars);
    }
    reports(&mut out, s);
    out_of_sample(&mut out, s);
    deploys(&mut out, s);
    cost_per_module(&mut out, s);
    totals(&mut out, s);
    out
}

/// One line per deploy: when, what, how, and what became of it.
fn deploys(out: &mut String, s: &RunSummary) {
    if s.deploys.is_empty() {
        return;
    }
    let _ = writeln!(out, "\ndeploys:");
    // `id what, id what`: each instance a deploy touched.
    let listed = |instances: &[(String, String)]| {
        instances
            .iter()
            .map(|(id, what)| format!("{id} {what}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for d in &s.deploys {
        let touched = listed(&d.instances);
        let _ = writeln!(
            out,
            "  bar {}: {} -> {} ({}): {}{}",
            d.bar,
            d.module,
            d.code,
            d.strategy,
            d.outcome,
            if touched.is_empty() {
                String::new()
            } else {
                format!("; {touched}")
            }
        );
        if let Some(r) = &d.settled {
            let _ = writeln!(
                out,
                "  bar {}: {} {}: {}; {}",
                r.bar,
                d.module,
                r.outcome,
                r.why,
                listed(&r.instances)
            );
        }
    }
}

/// One row per variant (the best first), its metrics, scores and state.
fn variants(out: &mut String, s: &RunSummary) {
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
        " {:>7} {:>8} {:>8} {:>12} {:>7} {:>7} {:>3}  state",
        "trades", "sharpe", "max dd", "final value", "IS", "OOS", "gen"
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
        let f = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
        let _ = write!(
            line,
            " {:>7} {:>7} {:>3}",
            f(v.in_sample),
            f(v.out_of_sample),
            v.generation
        );
        // Quarantine is shouted: it is the row a reader must not miss.
        let state = match &v.state {
            InstanceState::Quarantined { .. } => "QUARANTINED",
            other => other.label(),
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
}

/// What evolution did, and the best evolved variant against the control
/// and buy-and-hold out of sample.
fn evolution(out: &mut String, e: &EvolutionReport, bars: usize) {
    let fit = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
    let pct = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |v| format!("{:+.2}%", v * 100.0));
    let births: Vec<String> = e
        .counts
        .births
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(
        out,
        "\nevolution: {} generations; births: {}; {} failed births, {} retired, {} quarantined; {} variants tried",
        e.counts.generations,
        births.join(", "),
        e.counts.failed_births,
        e.counts.retired,
        e.counts.quarantined,
        e.variants_tried
    );
    let _ = writeln!(
        out,
        "out of sample: bars {}..{} (nothing bred there; selection never saw them)",
        e.cut_bar, bars
    );
    let _ = writeln!(
        out,
        "  {:<26} {:>10} {:>10} {:>10}",
        "", "IS fitness", "OOS fitn.", "OOS return"
    );
    for (label, v) in [
        ("best evolved", &e.best),
        ("generation 0 (defaults)", &e.control),
    ] {
        if let Some(v) = v {
            let name = format!("{label} {}", v.id);
            let _ = writeln!(
                out,
                "  {name:<26} {:>10} {:>10} {:>10}",
                fit(v.in_sample),
                fit(v.out_of_sample),
                pct(v.out_of_sample_return)
            );
        }
    }
    let _ = writeln!(
        out,
        "  {:<26} {:>10} {:>10} {:>10}   (sharpe {:.3})",
        "buy and hold",
        "-",
        "-",
        pct(Some(e.buy_and_hold.out_of_sample_return)),
        e.buy_and_hold.out_of_sample_sharpe
    );
    for (symbol, r) in &e.buy_and_hold.per_symbol {
        let _ = writeln!(
            out,
            "  {:<26} {:>10} {:>10} {:>10}",
            format!("  holding {symbol}"),
            "-",
            "-",
            pct(Some(*r))
        );
    }
}

/// The subjects reported with values (e.g. the trader's `portfolio`),
/// over the out-of-sample bars.
fn out_of_sample(out: &mut String, s: &RunSummary) {
    let Some(from) = s.out_of_sample.first().map(|w| w.from_bar) else {
        return;
    };
    let _ = writeln!(
        out,
        "
out of sample, bars {from}..{}:",
        s.bars
    );
    window_rows(out, "", &s.out_of_sample);
}

/// One row per window score, each prefixed by `arm`.
fn window_rows(out: &mut String, arm: &str, scores: &[crate::replay::WindowScore]) {
    for w in scores {
        let _ = writeln!(
            out,
            "  {arm:<12}{:<20} return {:>+8.3}%  sharpe {:>7.3}  drawdown {:>6.2}%  trades {}",
            w.subject,
            w.total_return * 100.0,
            w.sharpe,
            w.max_drawdown * 100.0,
            w.trades
        );
    }
}

/// `garden run --ablate`: each arm's out-of-sample figures, side by side.
pub fn ablation(arms: &[(String, RunSummary)]) -> String {
    let mut out = String::new();
    let Some((_, first)) = arms.first() else {
        return out;
    };
    let from = first.out_of_sample.first().map_or(0, |w| w.from_bar);
    let _ = writeln!(
        out,
        "garden run --ablate: seed {}, data {}, out of sample bars {from}..{}",
        first.seed, first.data, first.bars
    );
    for (arm, s) in arms {
        if s.out_of_sample.is_empty() {
            let _ = writeln!(out, "  {arm:<12}(no subject reported values)");
        }
        window_rows(&mut out, arm, &s.out_of_sample);
    }
    out
}

/// The reports modules published, one line each.
fn reports(out: &mut String, s: &RunSummary) {
    if !s.reports.is_empty() {
        let _ = writeln!(out, "\nreports:");
        for r in &s.reports {
            let metrics: Vec<String> = r
                .metrics
                .iter()
                .map(|(k, v)| {
                    if v.fract() == 0.0 {
                        format!("{k} {v:.0}")
                    } else {
                        format!("{k} {v:.3}")
                    }
                })
                .collect();
            if metrics.is_empty() && r.steps > 0 {
                let _ = writeln!(
                    out,
                    "  {}: return {:+.3}%, sharpe {:.3}, drawdown {:.2}%, trades {}",
                    r.subject,
                    (r.final_value / r.start_value - 1.0) * 100.0,
                    r.sharpe,
                    r.max_drawdown * 100.0,
                    r.trades
                );
            } else {
                let _ = writeln!(out, "  {}: {}", r.subject, metrics.join(", "));
            }
        }
    }
}

/// Time and fuel per message by module, over all its instances: what one
/// evaluation costs inside the sandbox, host overhead excluded.
fn cost_per_module(out: &mut String, s: &RunSummary) {
    let mut by_module: Vec<(&str, u64, f64, u64)> = Vec::new();
    for i in &s.instances {
        match by_module.iter_mut().find(|(m, ..)| *m == i.module) {
            Some(entry) => {
                entry.1 += i.received;
                entry.2 += i.busy_micros;
                entry.3 += i.fuel;
            }
            None => by_module.push((&i.module, i.received, i.busy_micros, i.fuel)),
        }
    }
    if by_module.iter().any(|(_, n, ..)| *n > 0) {
        let _ = writeln!(
            out,
            "\n{:<18} {:>10} {:>12} {:>14}",
            "module", "messages", "µs/message", "fuel/message"
        );
        for (m, n, us, fuel) in by_module.iter().filter(|(_, n, ..)| *n > 0) {
            let _ = writeln!(
                out,
                "{m:<18} {n:>10} {:>12.2} {:>14.0}",
                us / *n as f64,
                *fuel as f64 / *n as f64
            );
        }
    }
}

/// The best variant's genes, the run's totals and every last error.
fn totals(out: &mut String, s: &RunSummary) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: Body) -> Envelope {
        Envelope {
            topic: "alert".into(),
            key: "EURUSD".into(),
            seq: 1,
            time: 1_700_000_000_000,
            source: "rsi-watch.0".into(),
            body,
            trace: crate::message::Trace::default(),
        }
    }

    #[test]
    fn a_message_line_shows_text_as_text_and_bytes_in_hex() {
        let text = message_line(&message(Body::Custom(b"RSI 28.1 \"low\"".to_vec())));
        assert_eq!(
            text,
            r#"2023-11-14 22:13  alert  rsi-watch.0  EURUSD  "RSI 28.1 \"low\"""#
        );
        let bytes = message_line(&message(Body::Custom(vec![0xff; 40])));
        assert!(
            bytes.ends_with(&format!("0x{}… (40 bytes)", "ff".repeat(32))),
            "{bytes}"
        );
        let end = message_line(&message(Body::EndOfStream));
        assert!(end.ends_with("\"EndOfStream\""), "{end}");
    }
}
