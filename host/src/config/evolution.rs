//! How a population evolves: the settings of selection, breeding and the
//! fitness formula, as a pipeline file's `[evolution]` table gives them.
//! Plain data: what each setting does is told in [`crate::replication`]
//! and [`crate::replication::fitness`].
//!
//! Invariant: every field has a default, so an empty `[evolution]` table (or
//! none) is the documented default behaviour.

use serde::{Deserialize, Serialize};

/// How the population evolves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvolutionConfig {
    /// Breed at all.
    pub enabled: bool,
    /// Bars between generations.
    pub generation_bars: usize,
    /// A variant must be this many bars old to breed or be retired.
    pub min_age_bars: usize,
    /// Fitness at which a variant may breed early (none: never).
    pub threshold: Option<f64>,
    /// Bars between threshold checks.
    pub threshold_every: usize,
    /// Children per generation.
    pub children: usize,
    /// Best variants kept unchanged.
    pub elite: usize,
    /// Tournament size.
    pub tournament: usize,
    /// Most variants alive at once.
    pub cap: usize,
    /// Probability that a child has two parents.
    pub crossover: f64,
    /// Mutation settings.
    pub mutation: Mutation,
    /// Gene spread below which random variants are injected.
    pub diversity_min: f64,
    /// Random variants injected on a diversity gap.
    pub inject: usize,
    /// Children bred, on a context change (e.g. a market regime), from the
    /// variants that did best the earlier times that label held.
    pub regime_children: usize,
    /// Share of the run at its end kept out of sample.
    pub out_of_sample: f64,
    /// The fitness formula.
    pub fitness: FitnessConfig,
}

impl Default for EvolutionConfig {
    fn default() -> Self {
        EvolutionConfig {
            enabled: true,
            generation_bars: 500,
            min_age_bars: 250,
            threshold: Some(4.0),
            threshold_every: 100,
            children: 4,
            elite: 2,
            tournament: 3,
            cap: 16,
            crossover: 0.5,
            mutation: Mutation::default(),
            diversity_min: 0.04,
            inject: 2,
            regime_children: 1,
            out_of_sample: 0.3,
            fitness: FitnessConfig::default(),
        }
    }
}

/// The fitness formula's weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FitnessConfig {
    /// Cost per percent of maximum drawdown.
    pub drawdown_weight: f64,
    /// Trades needed to escape the shortfall penalty.
    pub min_trades: u32,
    /// Cost of a full shortfall (no trades at all).
    pub trade_weight: f64,
    /// Cost per unit of mean absolute correlation with the other survivors.
    pub correlation_weight: f64,
}

impl Default for FitnessConfig {
    fn default() -> Self {
        FitnessConfig {
            drawdown_weight: 0.2,
            min_trades: 5,
            trade_weight: 1.0,
            correlation_weight: 0.5,
        }
    }
}

/// Mutation settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mutation {
    /// Probability that a numeric gene is perturbed.
    pub rate: f64,
    /// Probability that a boolean gene flips.
    pub flip: f64,
    /// Multiplies every gene's own scale (the standard deviation).
    pub scale: f64,
}

impl Default for Mutation {
    fn default() -> Self {
        Mutation {
            rate: 0.5,
            flip: 0.1,
            scale: 1.0,
        }
    }
}
