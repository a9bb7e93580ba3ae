//! The numbers behind each chart of a report, computed from a run's data.
//! The page draws them as they are: every figure a reader sees is computed
//! here, in Rust, where it is tested, and the page's script only lays it out.
//!
//! Invariants: every series has at most `max_points` points (long runs are
//! thinned by a stride that keeps the last point; drawdown is computed before
//! thinning, so a trough between kept points still counts in the maximum);
//! times are event times in ms since the epoch; a figure without data is
//! empty, never made up.

use std::collections::{BTreeMap, HashMap, HashSet};

use garden_host::replication::{LineageRecord, lineage};
use garden_host::types::{Bar, FillKind, Side};
use serde::Serialize;

use crate::data::RunData;

/// How a report is drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOptions {
    /// Best variants drawn besides the control and buy-and-hold. Default 5.
    pub top: usize,
    /// Most points per line. Default 2,000.
    pub max_points: usize,
    /// Most candles on the price chart (bars are merged beyond). Default 1,500.
    pub max_candles: usize,
    /// Bins of the calibration diagram. Default 10.
    pub calibration_bins: usize,
    /// Generations of ancestors drawn in the lineage tree. Default 6.
    pub lineage_depth: usize,
    /// The variant whose trades are shown first (default: the best).
    pub variant: Option<String>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            top: 5,
            max_points: 2_000,
            max_candles: 1_500,
            calibration_bins: 10,
            lineage_depth: 6,
            variant: None,
        }
    }
}

/// Everything the page draws, serialised into it as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// What run this is.
    pub meta: Meta,
    /// Account value of the chosen variants, the control and buy-and-hold.
    pub equity: Lines,
    /// Their drawdown from the running peak, in percent (≤ 0).
    pub drawdown: Lines,
    /// Prices and the chosen variants' fills.
    pub trades: Trades,
    /// The best variant's ancestry.
    pub lineage: Lineage,
    /// Fitness per generation.
    pub generations: Vec<Generation>,
    /// Fused (and the alphas' own) confidence against outcomes.
    pub calibration: Calibration,
    /// One row per expert.
    pub experts: Vec<ExpertRow>,
    /// One row per module.
    pub costs: Vec<CostRow>,
}

/// The run a report is about.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    /// Run id.
    pub run: String,
    /// Seed.
    pub seed: String,
    /// Data name.
    pub data: String,
    /// Start time.
    pub started_at: String,
    /// Bars recorded.
    pub bars: usize,
    /// Variants in the lineage.
    pub variants: usize,
    /// Plans that reached a realised result.
    pub closed_plans: usize,
    /// What could not be read, said plainly (empty when all was read).
    pub warnings: Vec<String>,
}

/// Lines over time, with an optional vertical cut.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Lines {
    /// Time of the first out-of-sample bar, if evolution split the run.
    pub cut: Option<i64>,
    /// The lines.
    pub series: Vec<Series>,
}

/// One line.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// Its label.
    pub name: String,
    /// `best`, `variant`, `control` or `buy-and-hold`.
    pub kind: &'static str,
    /// (time, value) points.
    pub points: Vec<(i64, f64)>,
}

/// A price chart with trades.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Trades {
    /// Symbol drawn.
    pub symbol: String,
    /// Bars merged per candle (1 when every bar is drawn).
    pub bars_per_candle: usize,
    /// Candles: (time, open, close, low, high), ECharts' order.
    pub candles: Vec<(i64, f64, f64, f64, f64)>,
    /// The variant shown first.
    pub chosen: Option<String>,
    /// Fills per variant, for the variants drawn on the equity chart.
    pub fills: BTreeMap<String, Vec<TradeMark>>,
}

/// One fill on the price chart.
#[derive(Debug, Clone, Serialize)]
pub struct TradeMark {
    /// Event time.
    pub time: i64,
    /// Fill price.
    pub price: f64,
    /// `entry`, `stop`, `target`, `horizon` or `close`.
    pub kind: &'static str,
    /// `long` or `short`.
    pub side: &'static str,
    /// Plan id.
    pub plan: String,
}

/// The best variant's family tree.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Lineage {
    /// Root: the best variant, its parents as children.
    pub tree: Option<TreeNode>,
    /// Details of every node in the tree, by id.
    pub nodes: BTreeMap<String, NodeInfo>,
}

/// A node of the tree, as ECharts' tree series takes it.
#[derive(Debug, Clone, Serialize)]
pub struct TreeNode {
    /// Variant id.
    pub name: String,
    /// Its in-sample fitness, if any.
    pub value: Option<f64>,
    /// Its parents.
    pub children: Vec<TreeNode>,
}

/// What clicking a node shows.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// Generation.
    pub generation: u32,
    /// Gene values.
    pub genes: Vec<(String, f64)>,
    /// (bar, fitness) at each evaluation.
    pub fitness: Vec<(usize, f64)>,
    /// In-sample fitness.
    pub in_sample: Option<f64>,
    /// Out-of-sample fitness.
    pub out_of_sample: Option<f64>,
    /// Why it was born.
    pub birth: String,
    /// Why it died, if it did.
    pub death: Option<String>,
    /// Whether it is the control.
    pub control: bool,
}

/// Fitness of one generation.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    /// Generation number.
    pub generation: u32,
    /// Every variant's fitness in it.
    pub values: Vec<f64>,
    /// Highest.
    pub best: f64,
    /// Median.
    pub median: f64,
}

/// A reliability diagram.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Calibration {
    /// Bins of the fused confidence.
    pub fused: Vec<Bin>,
    /// Bins of the alphas' own confidence, for comparison.
    pub alpha: Vec<Bin>,
    /// Brier score of the fused confidence (lower is better).
    pub fused_brier: Option<f64>,
    /// Brier score of the alphas' own confidence.
    pub alpha_brier: Option<f64>,
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Serialize)]
pub struct Bin {
    /// Mean predicted probability in the bin.
    pub predicted: f64,
    /// Fraction that won.
    pub observed: f64,
    /// Plans in the bin.
    pub count: usize,
}

/// How one expert did.
#[derive(Debug, Clone, Serialize)]
pub struct ExpertRow {
    /// Expert name.
    pub expert: String,
    /// Opinions given.
    pub opinions: usize,
    /// Opinions on plans with a realised result.
    pub judged: usize,
    /// Fraction of non-neutral judged opinions whose sign matched the result.
    pub hit_rate: Option<f64>,
    /// Brier score of logistic(llr) (the expert alone, from an even prior).
    pub brier: Option<f64>,
    /// Mean |llr|: how strongly it speaks.
    pub mean_abs_llr: f64,
}

/// What one module cost.
#[derive(Debug, Clone, Serialize)]
pub struct CostRow {
    /// Module name.
    pub module: String,
    /// Its instances.
    pub instances: usize,
    /// Calls into them.
    pub calls: u64,
    /// Mean µs per call.
    pub micros_per_message: f64,
    /// Mean fuel per call.
    pub fuel_per_message: f64,
}

/// Compute every figure of `data`.
pub fn figures(data: &RunData, options: &ReportOptions) -> Figures {
    let outcomes = outcomes(data);
    let chosen = chosen_variants(data, options);
    let cut = data
        .summary
        .evolution
        .as_ref()
        .and_then(|e| data.bars.get(e.cut_bar))
        .map(|b| b.time);
    let (equity, drawdown) = equity_lines(data, &chosen, cut, options.max_points);
    let mut warnings: Vec<String> = data
        .unreadable
        .iter()
        .map(|(topic, n)| format!("{n} `{topic}` records could not be read and are left out"))
        .collect();
    if data.bars.is_empty() {
        warnings.push("no bars were recorded: run with `--records`".into());
    }
    Figures {
        meta: Meta {
            run: data.run.clone(),
            seed: data.seed.clone(),
            data: data.data.clone(),
            started_at: data.started_at.clone(),
            bars: data.bars.len(),
            variants: data.lineage.len(),
            closed_plans: outcomes.len(),
            warnings,
        },
        equity,
        drawdown,
        trades: trades(data, &chosen, options),
        lineage: family(
            data,
            chosen.first().map(|c| c.0.as_str()),
            options.lineage_depth,
        ),
        generations: generations(&data.lineage),
        calibration: calibration(data, &outcomes, options.calibration_bins),
        experts: experts(data, &outcomes),
        costs: costs(data),
    }
}

/// Whether each closed plan won (realised pnl above zero), by plan id.
fn outcomes(data: &RunData) -> HashMap<&str, bool> {
    data.feedback
        .iter()
        .map(|f| (f.plan_id.as_str(), f.pnl > 0.0))
        .collect()
}

/// The variants to draw, best first, with their kind: the best in sample,
/// the next best, then the control.
fn chosen_variants(data: &RunData, options: &ReportOptions) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = Vec::new();
    let best = data
        .summary
        .evolution
        .as_ref()
        .and_then(|e| e.best.as_ref().map(|b| b.id.clone()))
        .or_else(|| lineage::best(&data.lineage).map(|r| r.id.clone()))
        .or_else(|| best_by_final_value(data));
    if let Some(best) = best {
        out.push((best, "best"));
    }
    let mut ranked: Vec<&LineageRecord> = data
        .lineage
        .iter()
        .filter(|r| !r.control && r.in_sample.is_some())
        .collect();
    ranked.sort_by(|a, b| {
        b.in_sample
            .unwrap_or(f64::MIN)
            .total_cmp(&a.in_sample.unwrap_or(f64::MIN))
            .then(a.id.cmp(&b.id))
    });
    for r in ranked {
        if out.len() >= options.top.max(1) {
            break;
        }
        if !out.iter().any(|(id, _)| *id == r.id) {
            out.push((r.id.clone(), "variant"));
        }
    }
    let control = data
        .summary
        .evolution
        .as_ref()
        .and_then(|e| e.control.as_ref().map(|c| c.id.clone()))
        .or_else(|| {
            data.lineage
                .iter()
                .find(|r| r.control)
                .map(|r| r.id.clone())
        });
    if let Some(control) = control
        && !out.iter().any(|(id, _)| *id == control)
    {
        out.push((control, "control"));
    }
    out
}

/// Without lineage (evolution off), the subject whose account ended highest.
fn best_by_final_value(data: &RunData) -> Option<String> {
    let mut last: BTreeMap<&str, f64> = BTreeMap::new();
    for (_, f) in &data.fitness {
        if let Some(v) = f.values.last() {
            last.insert(&f.subject, *v);
        }
    }
    last.into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(s, _)| s.to_string())
}

/// Account values of one subject over time: each report's values belong to
/// the bars ending at the one it was published on.
fn account(data: &RunData, subject: &str) -> Vec<(i64, f64)> {
    let mut points: Vec<(i64, f64)> = Vec::new();
    for (time, f) in data.fitness.iter().filter(|(_, f)| f.subject == subject) {
        let end = data.bars.partition_point(|b| b.time <= *time);
        let first = end.saturating_sub(f.values.len());
        for (k, v) in f.values.iter().enumerate() {
            let Some(bar) = data.bars.get(first + k).or(data.bars.last()) else {
                break;
            };
            if v.is_finite() && points.last().is_none_or(|p| p.0 < bar.time) {
                points.push((bar.time, *v));
            }
        }
    }
    points
}

/// The subject of the trader's report on every variant's book together.
const PORTFOLIO: &str = "portfolio";

/// Equity and drawdown lines of the chosen variants, the whole book and
/// buy-and-hold.
fn equity_lines(
    data: &RunData,
    chosen: &[(String, &'static str)],
    cut: Option<i64>,
    max_points: usize,
) -> (Lines, Lines) {
    let mut equity = Lines {
        cut,
        series: Vec::new(),
    };
    let mut drawdown = Lines {
        cut,
        series: Vec::new(),
    };
    let mut start_value = None;
    for (id, kind) in chosen {
        let points = account(data, id);
        if points.is_empty() {
            continue;
        }
        start_value = start_value.or(points.first().map(|p| p.1));
        let name = match *kind {
            "best" => format!("{id} (best)"),
            "control" => format!("{id} (control)"),
            _ => id.clone(),
        };
        drawdown.series.push(Series {
            name: name.clone(),
            kind,
            points: thin(&drawdown_of(&points), max_points),
        });
        equity.series.push(Series {
            name,
            kind,
            points: thin(&points, max_points),
        });
    }
    // The book of every variant together, as the trader reports it.
    let book = account(data, PORTFOLIO);
    if !book.is_empty() {
        drawdown.series.push(Series {
            name: "every variant (portfolio)".into(),
            kind: "portfolio",
            points: thin(&drawdown_of(&book), max_points),
        });
        equity.series.push(Series {
            name: "every variant (portfolio)".into(),
            kind: "portfolio",
            points: thin(&book, max_points),
        });
    }
    let hold = buy_and_hold(&data.bars, start_value.unwrap_or(1.0));
    if !hold.is_empty() {
        drawdown.series.push(Series {
            name: "buy and hold".into(),
            kind: "buy-and-hold",
            points: thin(&drawdown_of(&hold), max_points),
        });
        equity.series.push(Series {
            name: "buy and hold".into(),
            kind: "buy-and-hold",
            points: thin(&hold, max_points),
        });
    }
    (equity, drawdown)
}

/// `start` invested at the first close of the first symbol and held.
fn buy_and_hold(bars: &[Bar], start: f64) -> Vec<(i64, f64)> {
    let Some(first) = bars.first() else {
        return Vec::new();
    };
    if first.close <= 0.0 {
        return Vec::new();
    }
    bars.iter()
        .filter(|b| b.symbol == first.symbol)
        .map(|b| (b.time, start * b.close / first.close))
        .collect()
}

/// Percent below the running peak at each point.
fn drawdown_of(points: &[(i64, f64)]) -> Vec<(i64, f64)> {
    let mut peak = f64::MIN;
    points
        .iter()
        .map(|&(t, v)| {
            peak = peak.max(v);
            let dd = if peak > 0.0 {
                (v / peak - 1.0) * 100.0
            } else {
                0.0
            };
            (t, dd)
        })
        .collect()
}

/// At most `max` points: every k-th, and the last. For drawdown lines the
/// deepest point of each stride is kept instead, so the trough shows.
fn thin(points: &[(i64, f64)], max: usize) -> Vec<(i64, f64)> {
    let max = max.max(2);
    if points.len() <= max {
        return points.to_vec();
    }
    let stride = points.len().div_ceil(max - 1);
    let mut out: Vec<(i64, f64)> = points
        .chunks(stride)
        .map(|c| {
            let deepest = c.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1));
            match deepest {
                Some(d) if d.1 < 0.0 => d,
                _ => c[0],
            }
        })
        .collect();
    if let Some(last) = points.last()
        && out.last() != Some(last)
    {
        out.push(*last);
    }
    out
}

/// Candles of the first symbol (merged to at most `max_candles`) and the
/// chosen variants' fills.
fn trades(data: &RunData, chosen: &[(String, &'static str)], options: &ReportOptions) -> Trades {
    let Some(symbol) = data.bars.first().map(|b| b.symbol.clone()) else {
        return Trades::default();
    };
    let bars: Vec<&Bar> = data.bars.iter().filter(|b| b.symbol == symbol).collect();
    let per = bars.len().div_ceil(options.max_candles.max(1)).max(1);
    let candles = bars
        .chunks(per)
        .filter_map(|c| {
            let (first, last) = (c.first()?, c.last()?);
            let low = c.iter().map(|b| b.low).fold(f64::INFINITY, f64::min);
            let high = c.iter().map(|b| b.high).fold(f64::NEG_INFINITY, f64::max);
            Some((first.time, first.open, last.close, low, high))
        })
        .collect();
    let wanted: HashSet<&str> = chosen.iter().map(|(id, _)| id.as_str()).collect();
    let mut fills: BTreeMap<String, Vec<TradeMark>> = BTreeMap::new();
    // A cancel fill marks a plan that was never opened: nothing to draw.
    for f in data.fills.iter().filter(|f| {
        f.symbol == symbol && wanted.contains(f.origin.as_str()) && f.kind != FillKind::Cancel
    }) {
        fills.entry(f.origin.clone()).or_default().push(TradeMark {
            time: f.time,
            price: f.price,
            kind: match f.kind {
                FillKind::Entry => "entry",
                FillKind::Stop => "stop",
                FillKind::Target => "target",
                FillKind::Horizon => "horizon",
                FillKind::Close => "close",
                FillKind::Cancel => "cancel",
            },
            side: match f.side {
                Side::Long => "long",
                Side::Short => "short",
            },
            plan: f.plan_id.clone(),
        });
    }
    let chosen_id = options.variant.clone().or_else(|| {
        chosen
            .iter()
            .find(|(id, _)| fills.contains_key(id))
            .map(|c| c.0.clone())
    });
    Trades {
        symbol,
        bars_per_candle: per,
        candles,
        chosen: chosen_id,
        fills,
    }
}

/// The ancestry of `root` down to `depth` generations back.
fn family(data: &RunData, root: Option<&str>, depth: usize) -> Lineage {
    let by_id: HashMap<&str, &LineageRecord> =
        data.lineage.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut nodes = BTreeMap::new();
    let tree = root.and_then(|r| node(&by_id, r, depth, &mut nodes));
    Lineage { tree, nodes }
}

fn node(
    by_id: &HashMap<&str, &LineageRecord>,
    id: &str,
    depth: usize,
    nodes: &mut BTreeMap<String, NodeInfo>,
) -> Option<TreeNode> {
    let r = by_id.get(id)?;
    nodes.entry(r.id.clone()).or_insert_with(|| NodeInfo {
        generation: r.generation,
        genes: r.genes.clone(),
        fitness: r.fitness.clone(),
        in_sample: r.in_sample,
        out_of_sample: r.out_of_sample,
        birth: serde_json::to_value(r.birth_cause)
            .map(|v| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .unwrap_or_default(),
        death: r.death_cause.clone(),
        control: r.control,
    });
    let children = if depth == 0 {
        Vec::new()
    } else {
        r.parents
            .iter()
            .filter_map(|p| node(by_id, p, depth - 1, nodes))
            .collect()
    };
    Some(TreeNode {
        name: r.id.clone(),
        value: r.in_sample,
        children,
    })
}

/// Each generation's fitness (in sample, else the latest).
fn generations(records: &[LineageRecord]) -> Vec<Generation> {
    let mut by: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    for r in records {
        if let Some(f) = r.in_sample.or(r.fitness.last().map(|f| f.1))
            && f.is_finite()
        {
            by.entry(r.generation).or_default().push(f);
        }
    }
    by.into_iter()
        .map(|(generation, mut values)| {
            values.sort_by(f64::total_cmp);
            let best = values.last().copied().unwrap_or(0.0);
            let median = values[values.len() / 2];
            Generation {
                generation,
                values,
                best,
                median,
            }
        })
        .collect()
}

/// The reliability of the fused and the alphas' own confidence.
fn calibration(data: &RunData, outcomes: &HashMap<&str, bool>, bins: usize) -> Calibration {
    let mut fused = Vec::new();
    let mut alpha = Vec::new();
    let mut seen = HashSet::new();
    // The last scoring of a plan is the one the decision used.
    for s in data.scored.iter().rev() {
        let id = s.plan.id.as_str();
        let Some(&won) = outcomes.get(id) else {
            continue;
        };
        if !seen.insert(id) {
            continue;
        }
        fused.push((s.confidence, won));
        alpha.push((s.plan.confidence, won));
    }
    Calibration {
        fused_brier: brier(&fused),
        alpha_brier: brier(&alpha),
        fused: binned(&fused, bins),
        alpha: binned(&alpha, bins),
    }
}

/// Mean squared error of probabilities against outcomes.
fn brier(pairs: &[(f64, bool)]) -> Option<f64> {
    let scored: Vec<f64> = pairs
        .iter()
        .filter(|(p, _)| p.is_finite())
        .map(|(p, won)| (p - f64::from(u8::from(*won))).powi(2))
        .collect();
    (!scored.is_empty()).then(|| scored.iter().sum::<f64>() / scored.len() as f64)
}

/// Pairs grouped into `bins` equal-width bins of probability; empty bins
/// are left out.
fn binned(pairs: &[(f64, bool)], bins: usize) -> Vec<Bin> {
    let bins = bins.max(1);
    let mut acc = vec![(0.0, 0usize, 0usize); bins];
    for &(p, won) in pairs.iter().filter(|(p, _)| p.is_finite()) {
        let i = ((p.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        acc[i].0 += p;
        acc[i].1 += usize::from(won);
        acc[i].2 += 1;
    }
    acc.into_iter()
        .filter(|a| a.2 > 0)
        .map(|(sum, wins, n)| Bin {
            predicted: sum / n as f64,
            observed: wins as f64 / n as f64,
            count: n,
        })
        .collect()
}

/// Each expert's hit rate and Brier score on plans with a result.
fn experts(data: &RunData, outcomes: &HashMap<&str, bool>) -> Vec<ExpertRow> {
    #[derive(Default)]
    struct Acc {
        opinions: usize,
        abs_llr: f64,
        pairs: Vec<(f64, bool)>,
        hits: usize,
        calls: usize,
    }
    let mut by: BTreeMap<&str, Acc> = BTreeMap::new();
    for e in &data.evidence {
        let acc = by.entry(e.expert.as_str()).or_default();
        acc.opinions += 1;
        if e.llr.is_finite() {
            acc.abs_llr += e.llr.abs();
        }
        let Some(&won) = outcomes.get(e.plan_id.as_str()) else {
            continue;
        };
        acc.pairs.push((1.0 / (1.0 + (-e.llr).exp()), won));
        if e.llr != 0.0 && e.llr.is_finite() {
            acc.calls += 1;
            acc.hits += usize::from((e.llr > 0.0) == won);
        }
    }
    by.into_iter()
        .map(|(expert, a)| ExpertRow {
            expert: expert.to_string(),
            opinions: a.opinions,
            judged: a.pairs.len(),
            hit_rate: (a.calls > 0).then(|| a.hits as f64 / a.calls as f64),
            brier: brier(&a.pairs),
            mean_abs_llr: if a.opinions > 0 {
                a.abs_llr / a.opinions as f64
            } else {
                0.0
            },
        })
        .collect()
}

/// Cost per module, summed over its instances.
fn costs(data: &RunData) -> Vec<CostRow> {
    let mut by: BTreeMap<&str, (usize, u64, f64, u64)> = BTreeMap::new();
    for i in &data.summary.instances {
        let acc = by.entry(i.module.as_str()).or_default();
        acc.0 += 1;
        acc.1 += i.calls;
        acc.2 += i.busy_micros;
        acc.3 += i.fuel;
    }
    by.into_iter()
        .map(|(module, (instances, calls, micros, fuel))| {
            let per = |x: f64| if calls > 0 { x / calls as f64 } else { 0.0 };
            CostRow {
                module: module.to_string(),
                instances,
                calls,
                micros_per_message: per(micros),
                fuel_per_message: per(fuel as f64),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_the_last_point_and_the_deepest_trough() {
        let points: Vec<(i64, f64)> = (0..10_000).map(|i| (i, 100.0 + i as f64)).collect();
        let thinned = thin(&points, 100);
        assert!(thinned.len() <= 101, "{}", thinned.len());
        assert_eq!(thinned.last(), points.last());
        let mut dd: Vec<(i64, f64)> = (0..10_000).map(|i| (i, 0.0)).collect();
        dd[4_321].1 = -37.5;
        assert!(thin(&dd, 100).iter().any(|p| p.1 == -37.5));
    }

    #[test]
    fn drawdown_is_measured_from_the_running_peak() {
        let dd = drawdown_of(&[(0, 100.0), (1, 120.0), (2, 90.0), (3, 130.0)]);
        assert_eq!(dd[1].1, 0.0);
        assert!((dd[2].1 - -25.0).abs() < 1e-9);
        assert_eq!(dd[3].1, 0.0);
    }

    #[test]
    fn calibration_bins_and_brier_match_a_hand_count() {
        let pairs = [(0.15, false), (0.15, true), (0.85, true), (0.85, true)];
        let bins = binned(&pairs, 10);
        assert_eq!(bins.len(), 2);
        assert_eq!((bins[0].count, bins[0].observed), (2, 0.5));
        assert_eq!((bins[1].count, bins[1].observed), (2, 1.0));
        let expected = (0.15f64.powi(2) + 0.85f64.powi(2) + 2.0 * 0.15f64.powi(2)) / 4.0;
        assert!((brier(&pairs).unwrap() - expected).abs() < 1e-12);
        assert_eq!(brier(&[]), None);
    }
}
