//! Fitness: one number per variant, from the values it reported.
//!
//! ```text
//! fitness = sharpe − drawdown_weight · DD% − trade_weight · shortfall − correlation_weight · ρ
//! ```
//!
//! * `sharpe`: annualised Sharpe-like ratio of the variant's per-bar returns
//!   over the window (see [`crate::scoring::sharpe`]);
//! * `DD%`: its maximum drawdown over the window, in percent;
//! * `shortfall`: `max(0, min_trades − trades) / min_trades`, so a variant
//!   that barely traded cannot win on luck;
//! * `ρ`: the mean absolute correlation of its returns with the other
//!   survivors' (a population of near-copies is one bet, not many).
//!
//! Defaults: drawdown_weight 0.2 (a 5 % drawdown costs one Sharpe point),
//! min_trades 5, trade_weight 1, correlation_weight 0.5.

use crate::config::FitnessConfig;
use crate::scoring::{max_drawdown, sharpe};

/// Pearson correlation of two equally long series; 0 when either is flat.
pub fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n < 3 {
        return 0.0;
    }
    let (a, b) = (&a[a.len() - n..], &b[b.len() - n..]);
    let ma = a.iter().sum::<f64>() / n as f64;
    let mb = b.iter().sum::<f64>() / n as f64;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma).powi(2);
        sbb += (y - mb).powi(2);
    }
    if saa <= 1e-30 || sbb <= 1e-30 {
        return 0.0;
    }
    sab / (saa * sbb).sqrt()
}

/// The fitness of a window of values with `trades` trades in it, given the
/// mean absolute correlation `rho` with the other survivors.
pub fn fitness(
    values: &[f64],
    trades: u32,
    steps_per_year: f64,
    rho: f64,
    cfg: &FitnessConfig,
) -> f64 {
    let s = sharpe(values, steps_per_year);
    let dd = max_drawdown(values) * 100.0;
    let shortfall = if cfg.min_trades == 0 {
        0.0
    } else {
        f64::from(cfg.min_trades.saturating_sub(trades)) / f64::from(cfg.min_trades)
    };
    let f = s
        - cfg.drawdown_weight * dd
        - cfg.trade_weight * shortfall
        - cfg.correlation_weight * rho.abs();
    if f.is_finite() { f } else { f64::NEG_INFINITY }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: FitnessConfig = FitnessConfig {
        drawdown_weight: 0.2,
        min_trades: 5,
        trade_weight: 1.0,
        correlation_weight: 0.5,
    };

    #[test]
    fn steady_gains_beat_the_same_gains_with_a_drawdown() {
        let steady: Vec<f64> = (0..100)
            .map(|i| 100.0 * (1.0005f64).powi(i) + (i % 2) as f64 * 0.01)
            .collect();
        let mut bumpy = steady.clone();
        for v in &mut bumpy[40..60] {
            *v *= 0.9;
        }
        let a = fitness(&steady, 10, 252.0, 0.0, &CFG);
        let b = fitness(&bumpy, 10, 252.0, 0.0, &CFG);
        assert!(a > b, "{a} vs {b}");
    }

    #[test]
    fn too_few_trades_and_correlation_cost_exactly_their_weights() {
        let v: Vec<f64> = (0..50).map(|i| 100.0 + (i % 3) as f64).collect();
        let base = fitness(&v, 5, 252.0, 0.0, &CFG);
        assert!((fitness(&v, 0, 252.0, 0.0, &CFG) - (base - 1.0)).abs() < 1e-12);
        assert!((fitness(&v, 4, 252.0, 0.0, &CFG) - (base - 0.2)).abs() < 1e-12);
        assert!((fitness(&v, 5, 252.0, 0.8, &CFG) - (base - 0.4)).abs() < 1e-12);
    }

    #[test]
    fn flat_or_empty_series_are_finite() {
        assert!(fitness(&[], 0, 252.0, 0.0, &CFG).is_finite());
        assert!(fitness(&[100.0; 10], 0, 252.0, 0.0, &CFG).is_finite());
    }

    #[test]
    fn correlation_of_a_series_with_itself_and_its_mirror() {
        let a = [0.01, -0.02, 0.03, 0.0, 0.01];
        let b: Vec<f64> = a.iter().map(|x| -x).collect();
        assert!((correlation(&a, &a) - 1.0).abs() < 1e-12);
        assert!((correlation(&a, &b) + 1.0).abs() < 1e-12);
        assert_eq!(correlation(&a, &[1.0; 5]), 0.0);
    }
}
