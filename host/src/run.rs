//! A replay run: start the pipeline's instances, feed every row through it in
//! event time, collect fitness, and summarise.

use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;
use serde::Serialize;

use crate::bindings::types::{Body, Setting};
use crate::bus::{Bus, BusStats, MemoryBus};
use crate::engine::{Engine, Module};
use crate::feed::{self, csv::Row};
use crate::pipeline::{ModuleConfig, PipelineConfig, PipelineError};
use crate::population::{self, ParamError};
use crate::report::{self, Score, Scoreboard};
use crate::runtime::{InstanceReport, InstanceSpec, Runtime, RuntimeStats, SpawnError};

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The pipeline could not be set up.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A parameter override is invalid.
    #[error(transparent)]
    Param(#[from] ParamError),
    /// An instance could not be added.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// There is nothing to replay.
    #[error("the data has no rows to replay")]
    NoData,
}

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Seed for random genes and the instances' random streams.
    pub seed: u64,
    /// Size of the population (overrides the configuration's `instances`).
    pub variants: Option<u32>,
    /// Symbol the rows are published under.
    pub symbol: String,
    /// Name of the data, for the summary.
    pub data_name: String,
    /// Threads to run instances on; 0 means the default (one). The results
    /// are the same for any number.
    pub threads: usize,
}

/// One member of the population, with its scores.
#[derive(Debug, Clone, Serialize)]
pub struct VariantSummary {
    /// Instance id.
    pub id: String,
    /// Its parameters.
    pub params: Vec<(String, f64)>,
    /// Its scores, if it reported fitness.
    pub score: Option<Score>,
    /// Its instance state at the end.
    pub state: crate::runtime::InstanceState,
}

/// Everything a run reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// The seed (always printed, so a run can be repeated).
    pub seed: u64,
    /// The data replayed.
    pub data: String,
    /// Rows replayed.
    pub bars: usize,
    /// Wall time of the replay, seconds (start-up excluded).
    pub elapsed_secs: f64,
    /// Rows per second.
    pub bars_per_sec: f64,
    /// Messages delivered to instances.
    pub messages: u64,
    /// Messages delivered per second.
    pub messages_per_sec: f64,
    /// Scheduler totals.
    pub runtime: RuntimeStats,
    /// Bus totals.
    pub bus: BusStats,
    /// The population, best Sharpe-like score first.
    pub variants: Vec<VariantSummary>,
    /// Every instance.
    pub instances: Vec<InstanceReport>,
}

/// A pipeline ready to be fed: its instances started on a memory bus.
pub struct Replay {
    runtime: Runtime<MemoryBus>,
    board: Scoreboard,
    feed_topic: String,
    fitness_topic: String,
    population: Vec<String>,
    options: ReplayOptions,
    tapped: Vec<Arc<crate::Envelope>>,
    tapping: bool,
}

impl Replay {
    /// Start every instance of `modules` (as loaded by [`PipelineConfig::load`]).
    pub fn start(
        engine: Arc<Engine>,
        config: &PipelineConfig,
        modules: &[(ModuleConfig, Arc<Module>)],
        options: ReplayOptions,
    ) -> Result<Self, RunError> {
        let bus = MemoryBus::new(engine.limits().inbox_capacity);
        let mut runtime = Runtime::new(engine, bus, options.seed);
        if options.threads > 0 {
            runtime = runtime.with_threads(options.threads);
        }
        runtime.host_subscribe(&config.fitness_topic);
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(options.seed);
        let mut population = Vec::new();
        for (mc, module) in modules {
            let genes = &module.info().genes;
            let count = if mc.population {
                options.variants.unwrap_or(mc.instances)
            } else {
                mc.instances
            };
            let settings: Vec<Setting> = mc
                .settings_strings()
                .into_iter()
                .map(|(name, value)| Setting { name, value })
                .collect();
            for n in 0..count {
                // Variant 0 is the module's own defaults; the rest explore.
                let mut params = if mc.population && n > 0 {
                    population::random(genes, &mut rng)
                } else {
                    population::defaults(genes)
                };
                population::apply_overrides(&mc.name, genes, &mut params, &mc.params)?;
                let id = if count == 1 && !mc.population {
                    mc.name.clone()
                } else {
                    format!("{}.{n}", mc.name)
                };
                if mc.population {
                    population.push(id.clone());
                }
                runtime.spawn(InstanceSpec {
                    id,
                    module: module.clone(),
                    params,
                    settings: settings.clone(),
                })?;
            }
        }
        Ok(Replay {
            runtime,
            board: Scoreboard::default(),
            feed_topic: config.feed_topic.clone(),
            fitness_topic: config.fitness_topic.clone(),
            population,
            options,
            tapped: Vec::new(),
            tapping: false,
        })
    }

    /// Feed one row and run until every instance is idle.
    pub fn feed(&mut self, row: &Row) {
        let message = feed::bar_message(&self.feed_topic, &self.options.symbol, row);
        self.runtime.publish(message);
        self.runtime.run_until_idle();
        self.collect();
    }

    /// Signal the end of the stream, let everyone flush, and summarise.
    pub fn finish(self, rows: &[Row], elapsed_secs: f64) -> RunSummary {
        self.finish_tapped(rows, elapsed_secs).0
    }

    /// [`Replay::finish`], also returning the tapped messages not yet taken.
    pub fn finish_tapped(
        mut self,
        rows: &[Row],
        elapsed_secs: f64,
    ) -> (RunSummary, Vec<Arc<crate::Envelope>>) {
        let last = rows.last().map_or(0, |r| r.time);
        self.runtime.end_of_stream(last);
        self.runtime.run_until_idle();
        self.collect();
        let tapped = std::mem::take(&mut self.tapped);
        let first = rows.first().map_or(0, |r| r.time);
        let spy = report::steps_per_year(rows.len(), first, last);
        let instances = self.runtime.instances();
        let mut variants: Vec<VariantSummary> = self
            .population
            .iter()
            .filter_map(|id| instances.iter().find(|i| &i.id == id))
            .map(|i| VariantSummary {
                id: i.id.clone(),
                params: i.params.clone(),
                score: self.board.score(&i.id, spy),
                state: i.state.clone(),
            })
            .collect();
        variants.sort_by(|a, b| {
            let key = |v: &VariantSummary| v.score.as_ref().map_or(f64::NEG_INFINITY, |s| s.sharpe);
            key(b).total_cmp(&key(a)).then_with(|| a.id.cmp(&b.id))
        });
        let bus = self.runtime.bus().stats();
        let elapsed = elapsed_secs.max(1e-9);
        let summary = RunSummary {
            seed: self.options.seed,
            data: self.options.data_name.clone(),
            bars: rows.len(),
            elapsed_secs,
            bars_per_sec: rows.len() as f64 / elapsed,
            messages: bus.delivered,
            messages_per_sec: bus.delivered as f64 / elapsed,
            runtime: self.runtime.stats(),
            bus,
            variants,
            instances,
        };
        (summary, tapped)
    }

    /// Also keep every message on `topic`, to read with
    /// [`Replay::take_tapped`] (tests and tools watching the pipeline).
    pub fn tap(&mut self, topic: &str) {
        self.runtime.host_subscribe(topic);
        self.tapping = true;
    }

    /// Messages on tapped topics since the last call, in delivery order.
    pub fn take_tapped(&mut self) -> Vec<Arc<crate::Envelope>> {
        self.collect();
        std::mem::take(&mut self.tapped)
    }

    /// The runtime, for inspection.
    pub fn runtime(&self) -> &Runtime<MemoryBus> {
        &self.runtime
    }

    fn collect(&mut self) {
        for m in self.runtime.take_host_messages() {
            if m.topic == self.fitness_topic
                && let Body::Fitness(f) = &m.body
            {
                self.board.record(f);
            }
            if self.tapping {
                self.tapped.push(m);
            }
        }
    }
}

/// Replay `rows` through a freshly started pipeline; `progress` is called
/// after every row with the number done.
pub fn replay(
    engine: Arc<Engine>,
    config: &PipelineConfig,
    modules: &[(ModuleConfig, Arc<Module>)],
    rows: &[Row],
    options: ReplayOptions,
    mut progress: impl FnMut(usize),
) -> Result<RunSummary, RunError> {
    if rows.is_empty() {
        return Err(RunError::NoData);
    }
    let mut replay = Replay::start(engine, config, modules, options)?;
    let started = Instant::now();
    for (n, row) in rows.iter().enumerate() {
        replay.feed(row);
        progress(n + 1);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(replay.finish(rows, elapsed))
}
