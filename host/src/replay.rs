//! A replay run: start the pipeline's instances, feed every row through it in
//! event time, collect fitness, and summarise.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::bindings::types::Body;
use crate::bus::{Bus, BusStats, MemoryBus};
use crate::config::{ModuleConfig, PipelineConfig};
use crate::engine::{Engine, Module};
use crate::feed::{self, Timeline, csv::Row};
use crate::genes::ParamError;
use crate::loader::PipelineError;
use crate::replication::{Evolver, Habitat, LineageRecord};
use crate::runtime::{
    InstanceReport, InstanceSpec, InstanceState, Runtime, RuntimeOptions, RuntimeStats, SpawnError,
};
use crate::scoring::{self, Score, Scoreboard};

/// A local runtime is a habitat: births spawn instances in it (from the
/// first parent's snapshot), retirements stop them. This is where the
/// runtime and the replication engine meet, so neither imports the other's
/// concerns.
impl<B: Bus> Habitat for Runtime<B> {
    fn birth(&mut self, mut spec: InstanceSpec, record: &LineageRecord) -> Result<(), String> {
        spec.snapshot = record.parents.first().and_then(|p| self.snapshot_of(p));
        let id = spec.id.clone();
        self.spawn(spec).map_err(|e| e.to_string())?;
        match self.quarantined(&id) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    fn retire(&mut self, record: &LineageRecord, time: i64) -> Result<(), String> {
        Runtime::retire(self, &record.id, time);
        Ok(())
    }

    fn quarantined(&self, id: &str) -> Option<String> {
        match self.state_of(id) {
            Some((InstanceState::Quarantined { reason }, _)) => Some(reason),
            _ => None,
        }
    }
}

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
    /// Bars in the run (for the out-of-sample cut and annualising); 0 if unknown.
    pub total_bars: usize,
    /// Steps per year of the data (for annualising fitness); 0 if unknown.
    pub steps_per_year: f64,
    /// Most messages an instance is handed in one call; 0 means the
    /// default ([`RuntimeOptions::per_call`]). The results are the same for
    /// any size.
    pub per_call: usize,
    /// New code to load while it runs (`[[deploy]]`), loading already
    /// ([`crate::loader::deploy::start_all`]).
    pub deploys: Vec<crate::loader::deploy::Deploy>,
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
    /// Its generation (0: the starting population).
    pub generation: u32,
    /// Why it was born, with evolution on.
    pub birth_cause: Option<String>,
    /// Fitness over its in-sample life.
    pub in_sample: Option<f64>,
    /// Fitness over the out-of-sample part.
    pub out_of_sample: Option<f64>,
}

/// A variant singled out by the evolution report.
#[derive(Debug, Clone, Serialize)]
pub struct EvolvedVariant {
    /// Instance id.
    pub id: String,
    /// Generation.
    pub generation: u32,
    /// Fitness in sample.
    pub in_sample: Option<f64>,
    /// Fitness out of sample.
    pub out_of_sample: Option<f64>,
    /// Its account's return over the out-of-sample part.
    pub out_of_sample_return: Option<f64>,
}

/// Holding the replayed series over the out-of-sample part.
#[derive(Debug, Clone, Serialize)]
pub struct BuyAndHold {
    /// Last close over first close, minus one (with several symbols, of
    /// an equal-weight basket of them).
    pub out_of_sample_return: f64,
    /// Sharpe-like score of the closes (of the basket's value).
    pub out_of_sample_sharpe: f64,
    /// With several symbols: each one's return over the same bars.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_symbol: Vec<(String, f64)>,
}

impl BuyAndHold {
    /// Holding every symbol of `timeline` in equal parts from bar `cut` on.
    fn from(timeline: &Timeline, cut: usize, steps_per_year: f64) -> Self {
        let n = timeline.symbols.len();
        let mut first: Vec<Option<f64>> = vec![None; n];
        let mut last: Vec<Option<f64>> = vec![None; n];
        let mut values = Vec::with_capacity(timeline.len().saturating_sub(cut));
        for (i, row) in timeline.bars.iter().skip(cut) {
            if let (Some(f), Some(l)) = (first.get_mut(*i), last.get_mut(*i)) {
                f.get_or_insert(row.close);
                *l = Some(row.close);
            }
            // The basket: each symbol seen so far at last over first.
            let held: Vec<f64> = first
                .iter()
                .zip(&last)
                .filter_map(|(f, l)| match (f, l) {
                    (Some(f), Some(l)) if *f > 0.0 => Some(l / f),
                    _ => None,
                })
                .collect();
            if !held.is_empty() {
                values.push(held.iter().sum::<f64>() / held.len() as f64);
            }
        }
        let returns: Vec<(String, f64)> = timeline
            .symbols
            .iter()
            .zip(first.iter().zip(&last))
            .map(|(s, (f, l))| {
                let r = match (f, l) {
                    (Some(f), Some(l)) if *f > 0.0 => l / f - 1.0,
                    _ => 0.0,
                };
                (s.clone(), r)
            })
            .collect();
        BuyAndHold {
            out_of_sample_return: returns.iter().map(|(_, r)| r).sum::<f64>() / n.max(1) as f64,
            out_of_sample_sharpe: scoring::sharpe(&values, steps_per_year),
            per_symbol: if n > 1 { returns } else { Vec::new() },
        }
    }
}

/// What evolution did and how its best compares, out of sample.
#[derive(Debug, Clone, Serialize)]
pub struct EvolutionReport {
    /// First bar of the out-of-sample part.
    pub cut_bar: usize,
    /// Generations, births by cause, failed births, retirements.
    pub counts: crate::replication::EvolutionCounts,
    /// Every variant that ever lived (judge selection bias by it).
    pub variants_tried: usize,
    /// The variant with the best in-sample fitness, judged out of sample.
    pub best: Option<EvolvedVariant>,
    /// Generation 0's control (the module's default genes).
    pub control: Option<EvolvedVariant>,
    /// Buy-and-hold of the data.
    pub buy_and_hold: BuyAndHold,
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
    /// Evolution, if it ran.
    pub evolution: Option<EvolutionReport>,
    /// Every variant that lived, with parents and causes.
    pub lineage: Vec<LineageRecord>,
    /// Fitness reports about other subjects (e.g. each expert, the fusion's
    /// calibration), as their modules reported them.
    pub reports: Vec<Score>,
    /// What each deploy did, in order.
    pub deploys: Vec<crate::rollout::DeployReport>,
    /// Each reported subject with values outside the population (e.g. the
    /// trader's `portfolio`), scored over the out-of-sample bars only.
    pub out_of_sample: Vec<WindowScore>,
}

/// A subject's figures over the out-of-sample bars of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowScore {
    /// The subject.
    pub subject: String,
    /// First bar of the window.
    pub from_bar: usize,
    /// Last value over first, minus one.
    pub total_return: f64,
    /// Sharpe-like score of its values.
    pub sharpe: f64,
    /// Largest fall from a running peak, as a fraction of that peak.
    pub max_drawdown: f64,
    /// Trades it made in the window.
    pub trades: u32,
}

/// What a replay shows its progress callback while it runs (for
/// `garden run --metrics`): the instances, the bus, the reports and the
/// population.
pub trait View {
    /// A report per instance, in spawn order.
    fn reports(&self) -> Vec<crate::runtime::InstanceReport>;
    /// The bus's running totals.
    fn bus_totals(&self) -> BusStats;
    /// The latest metrics of each fitness report subject that is not a
    /// member of the population (e.g. an expert judged by fusion).
    fn reported(&self) -> Vec<(String, Vec<(String, f64)>)>;
    /// Every variant's lineage so far (empty without evolution).
    fn lineage(&self) -> Vec<LineageRecord>;
    /// The living population's spread of genes, if it has one.
    fn diversity(&self) -> Option<f64>;
}

impl<B: Bus> View for Replay<B> {
    fn reports(&self) -> Vec<crate::runtime::InstanceReport> {
        self.runtime.instances()
    }

    fn bus_totals(&self) -> crate::bus::BusStats {
        self.runtime.bus().stats()
    }

    fn reported(&self) -> Vec<(String, Vec<(String, f64)>)> {
        self.board
            .latest_metrics()
            .filter(|(subject, _)| !self.population.iter().any(|p| p == subject))
            .filter(|(subject, _)| {
                self.evolver
                    .as_ref()
                    .is_none_or(|ev| !ev.is_variant(subject))
            })
            .map(|(subject, metrics)| (subject.to_string(), metrics.to_vec()))
            .collect()
    }

    fn lineage(&self) -> Vec<LineageRecord> {
        self.evolver
            .as_ref()
            .map(Evolver::lineage)
            .unwrap_or_default()
    }

    fn diversity(&self) -> Option<f64> {
        self.evolver.as_ref().and_then(Evolver::diversity)
    }
}

/// A pipeline ready to be fed: its instances started on a bus (the memory
/// bus unless [`Replay::start_on`] is given another).
pub struct Replay<B: Bus = MemoryBus> {
    runtime: Runtime<B>,
    board: Scoreboard,
    feed_topic: String,
    fitness_topic: String,
    population: Vec<String>,
    options: ReplayOptions,
    tapped: Vec<Arc<crate::Envelope>>,
    tapping: bool,
    evolver: Option<Evolver>,
    bar: usize,
    /// Deploys still to come, in bar order.
    pending: std::collections::VecDeque<crate::loader::deploy::Deploy>,
    /// The code each pipeline module runs now.
    current: crate::rollout::Current,
    /// What the deploys so far did.
    deployed: Vec<crate::rollout::DeployReport>,
    /// Deploys that can still be taken back.
    watched: Vec<crate::rollout::Rollout>,
    /// First bar of the out-of-sample part (evolution's, or the share the
    /// pipeline's `[evolution] out_of_sample` gives).
    cut: usize,
}

impl Replay<MemoryBus> {
    /// Start every instance of `modules` (as loaded by [`PipelineConfig::load`])
    /// on a memory bus.
    pub fn start(
        engine: Arc<Engine>,
        config: &PipelineConfig,
        modules: &[(ModuleConfig, Arc<Module>)],
        options: ReplayOptions,
    ) -> Result<Self, RunError> {
        let bus = MemoryBus::new(engine.limits().inbox_capacity);
        Self::start_on(bus, engine, config, modules, options)
    }
}

impl<B: Bus> Replay<B> {
    /// Start every instance of `modules` on `bus`.
    pub fn start_on(
        bus: B,
        engine: Arc<Engine>,
        config: &PipelineConfig,
        modules: &[(ModuleConfig, Arc<Module>)],
        options: ReplayOptions,
    ) -> Result<Self, RunError> {
        let mut runtime_options = RuntimeOptions::default();
        if options.per_call > 0 {
            runtime_options.per_call = options.per_call;
        }
        let mut runtime = Runtime::new(engine, bus, options.seed).with_options(runtime_options);
        if options.threads > 0 {
            runtime = runtime.with_threads(options.threads);
        }
        runtime.host_subscribe(&config.fitness_topic);
        if let Some(topic) = &config.context_topic {
            runtime.host_subscribe(topic);
        }
        let mut population = Vec::new();
        let mut evolver = None;
        for p in crate::loader::plan(modules, options.seed, options.variants)? {
            if p.population {
                let id = p.spec.id.clone();
                population.push(id.clone());
                if config.evolution.enabled {
                    let ev = evolver.get_or_insert_with(|| {
                        Evolver::new(
                            config.evolution.clone(),
                            options.seed,
                            &p.name,
                            p.spec.settings.clone(),
                            options.total_bars,
                            options.steps_per_year,
                        )
                    });
                    ev.add_code(&p.spec.module, &p.name, p.spec.settings.clone(), p.count);
                    ev.register_initial(
                        &id,
                        p.spec.module.clone(),
                        p.spec.params.clone(),
                        p.index == 0,
                    );
                }
            }
            runtime.spawn(p.spec)?;
        }
        let current = modules
            .iter()
            .map(|(m, module)| (m.name.clone(), module.clone()))
            .collect();
        let mut pending: Vec<_> = options.deploys.clone();
        pending.sort_by_key(|d| d.config.at_bar);
        Ok(Replay {
            pending: pending.into(),
            current,
            deployed: Vec::new(),
            watched: Vec::new(),
            cut: crate::replication::cut_bar(options.total_bars, config.evolution.out_of_sample),
            runtime,
            board: Scoreboard::default(),
            feed_topic: config.feed_topic.clone(),
            fitness_topic: config.fitness_topic.clone(),
            population,
            options,
            tapped: Vec::new(),
            tapping: false,
            evolver,
            bar: 0,
        })
    }

    /// Feed one row of the run's symbol ([`ReplayOptions::symbol`]).
    pub fn feed(&mut self, row: &Row) {
        let symbol = std::mem::take(&mut self.options.symbol);
        self.feed_bar(&symbol, row);
        self.options.symbol = symbol;
    }

    /// Feed one bar of `symbol`, run until every instance is idle, then
    /// let the population breed.
    pub fn feed_bar(&mut self, symbol: &str, row: &Row) {
        while self
            .pending
            .front()
            .is_some_and(|d| d.config.at_bar <= self.bar)
        {
            if let Some(d) = self.pending.pop_front() {
                let (report, watch) = crate::rollout::apply(
                    &mut self.runtime,
                    self.evolver.as_mut(),
                    &mut self.current,
                    &d,
                    self.bar,
                );
                if let Some(mut watch) = watch {
                    watch.report = self.deployed.len();
                    self.watched.push(watch);
                }
                self.deployed.push(report);
            }
        }
        let message = feed::bar_message(&self.feed_topic, symbol, row);
        self.runtime.publish(message);
        self.runtime.run_until_idle();
        self.collect();
        if !self.watched.is_empty() {
            crate::rollout::watch(
                &mut self.runtime,
                (self.evolver.as_mut(), &self.board),
                &mut self.current,
                &mut self.watched,
                &mut self.deployed,
                self.bar,
            );
        }
        if let Some(ev) = self.evolver.as_mut() {
            ev.step(self.bar, row.time, &self.board, &mut self.runtime);
            // Retirements publish final reports: take them in now.
            self.runtime.run_until_idle();
            self.collect();
        }
        self.bar += 1;
    }

    /// Signal the end of the stream, let everyone flush, and summarise.
    pub fn finish(self, rows: &[Row], elapsed_secs: f64) -> RunSummary {
        self.finish_tapped(rows, elapsed_secs).0
    }

    /// [`Replay::finish`], also returning the tapped messages not yet taken.
    pub fn finish_tapped(
        self,
        rows: &[Row],
        elapsed_secs: f64,
    ) -> (RunSummary, Vec<Arc<crate::Envelope>>) {
        let timeline = Timeline::single(&self.options.symbol, rows);
        self.finish_timeline(&timeline, elapsed_secs)
    }

    /// [`Replay::finish_tapped`] for a run of several symbols.
    pub fn finish_timeline(
        mut self,
        timeline: &Timeline,
        elapsed_secs: f64,
    ) -> (RunSummary, Vec<Arc<crate::Envelope>>) {
        let rows = timeline.rows();
        let last = rows.last().map_or(0, |r| r.time);
        self.runtime.end_of_stream(last);
        self.runtime.run_until_idle();
        self.collect();
        let tapped = std::mem::take(&mut self.tapped);
        let first = rows.first().map_or(0, |r| r.time);
        let spy = scoring::steps_per_year(rows.len(), first, last);
        let instances = self.runtime.instances();
        let lineage = match self.evolver.as_mut() {
            Some(ev) => {
                ev.finish(&self.board, rows.len());
                ev.lineage()
            }
            None => Vec::new(),
        };
        let ids: Vec<String> = if lineage.is_empty() {
            self.population.clone()
        } else {
            lineage.iter().map(|l| l.id.clone()).collect()
        };
        let mut variants: Vec<VariantSummary> = ids
            .iter()
            .filter_map(|id| instances.iter().find(|i| &i.id == id))
            .map(|i| {
                let l = lineage.iter().find(|l| l.id == i.id);
                VariantSummary {
                    id: i.id.clone(),
                    params: i.params.clone(),
                    score: self.board.score(&i.id, spy),
                    state: i.state.clone(),
                    generation: l.map_or(0, |l| l.generation),
                    birth_cause: l.map(|l| l.birth_cause.as_str().to_string()),
                    in_sample: l.and_then(|l| l.in_sample),
                    out_of_sample: l.and_then(|l| l.out_of_sample),
                }
            })
            .collect();
        // With evolution, rank by in-sample fitness (what selection could
        // see); otherwise by the Sharpe-like score.
        variants.sort_by(|a, b| {
            let key = |v: &VariantSummary| match (&v.in_sample, &v.score) {
                (Some(f), _) => *f,
                (None, Some(s)) if lineage.is_empty() => s.sharpe,
                _ => f64::NEG_INFINITY,
            };
            key(b).total_cmp(&key(a)).then_with(|| a.id.cmp(&b.id))
        });
        let evolution = self.evolver.as_ref().map(|ev| {
            let cut = ev.cut();
            let oos_return = |id: &str| {
                let (v, _) = self.board.window(id, cut, rows.len() + 1);
                match (v.first(), v.last()) {
                    (Some(a), Some(b)) if *a > 0.0 => Some(b / a - 1.0),
                    _ => None,
                }
            };
            let pick = |l: &LineageRecord| EvolvedVariant {
                id: l.id.clone(),
                generation: l.generation,
                in_sample: l.in_sample,
                out_of_sample: l.out_of_sample,
                out_of_sample_return: oos_return(&l.id),
            };
            let best = lineage
                .iter()
                .filter(|l| l.in_sample.is_some())
                .max_by(|a, b| {
                    a.in_sample
                        .unwrap_or(f64::NEG_INFINITY)
                        .total_cmp(&b.in_sample.unwrap_or(f64::NEG_INFINITY))
                })
                .map(pick);
            let control = lineage.iter().find(|l| l.control).map(pick);
            let buy_and_hold = BuyAndHold::from(timeline, cut, spy);
            EvolutionReport {
                cut_bar: cut,
                counts: ev.counts(),
                variants_tried: lineage.len(),
                best,
                control,
                buy_and_hold,
            }
        });
        let reports: Vec<Score> = self
            .board
            .subjects()
            .filter(|s| !ids.iter().any(|id| id == s))
            .filter_map(|s| self.board.score(s, spy))
            .collect();
        let cut = self.evolver.as_ref().map_or(self.cut, Evolver::cut);
        let out_of_sample = reports
            .iter()
            .filter(|r| r.steps > 0)
            .filter_map(|r| {
                let (values, trades) = self.board.window(&r.subject, cut, rows.len() + 1);
                let (first, last) = (values.first()?, values.last()?);
                Some(WindowScore {
                    subject: r.subject.clone(),
                    from_bar: cut,
                    total_return: if *first > 0.0 {
                        last / first - 1.0
                    } else {
                        0.0
                    },
                    sharpe: scoring::sharpe(&values, spy),
                    max_drawdown: scoring::max_drawdown(&values),
                    trades,
                })
            })
            .collect();
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
            evolution,
            reports,
            lineage,
            deploys: std::mem::take(&mut self.deployed),
            out_of_sample,
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
    pub fn runtime(&self) -> &Runtime<B> {
        &self.runtime
    }

    fn collect(&mut self) {
        for m in self.runtime.take_host_messages() {
            if m.topic == self.fitness_topic
                && let Body::Fitness(f) = &m.body
            {
                self.board.record(f, self.bar);
            }
            if let Body::Context(c) = &m.body
                && let Some(ev) = self.evolver.as_mut()
            {
                ev.on_context(&c.label, self.bar);
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
    progress: impl FnMut(usize),
) -> Result<RunSummary, RunError> {
    let bus = MemoryBus::new(engine.limits().inbox_capacity);
    replay_on(bus, engine, config, modules, rows, options, progress)
}

/// [`replay`] on the given bus.
pub fn replay_on<B: Bus>(
    bus: B,
    engine: Arc<Engine>,
    config: &PipelineConfig,
    modules: &[(ModuleConfig, Arc<Module>)],
    rows: &[Row],
    options: ReplayOptions,
    mut progress: impl FnMut(usize),
) -> Result<RunSummary, RunError> {
    replay_with(
        bus,
        engine,
        config,
        modules,
        rows,
        options,
        &[],
        |_| {},
        |n, _| progress(n),
    )
}

/// [`replay_on`], also handing every message on `taps` to `tapped` as the
/// run goes (e.g. to record them).
#[allow(clippy::too_many_arguments)]
pub fn replay_with<B: Bus>(
    bus: B,
    engine: Arc<Engine>,
    config: &PipelineConfig,
    modules: &[(ModuleConfig, Arc<Module>)],
    rows: &[Row],
    options: ReplayOptions,
    taps: &[&str],
    tapped: impl FnMut(&[Arc<crate::Envelope>]),
    progress: impl FnMut(usize, &dyn View),
) -> Result<RunSummary, RunError> {
    let timeline = Timeline::single(&options.symbol, rows);
    replay_timeline_with(
        bus, engine, config, modules, &timeline, options, taps, tapped, progress,
    )
}

/// [`replay_with`] over several symbols on one timeline: each bar is
/// published under its own symbol (`options.symbol` names the first).
#[allow(clippy::too_many_arguments)]
pub fn replay_timeline_with<B: Bus>(
    bus: B,
    engine: Arc<Engine>,
    config: &PipelineConfig,
    modules: &[(ModuleConfig, Arc<Module>)],
    timeline: &Timeline,
    options: ReplayOptions,
    taps: &[&str],
    mut tapped: impl FnMut(&[Arc<crate::Envelope>]),
    mut progress: impl FnMut(usize, &dyn View),
) -> Result<RunSummary, RunError> {
    if timeline.is_empty() {
        return Err(RunError::NoData);
    }
    let mut options = options;
    if options.total_bars == 0 {
        options.total_bars = timeline.len();
    }
    if options.steps_per_year <= 0.0 {
        let time = |b: Option<&(usize, Row)>| b.map_or(0, |(_, r)| r.time);
        options.steps_per_year = scoring::steps_per_year(
            timeline.len(),
            time(timeline.bars.first()),
            time(timeline.bars.last()),
        );
    }
    let mut replay = Replay::start_on(bus, engine, config, modules, options)?;
    for t in taps {
        replay.tap(t);
    }
    let started = Instant::now();
    for (n, (symbol, row)) in timeline.bars.iter().enumerate() {
        replay.feed_bar(timeline.symbol(*symbol), row);
        if !taps.is_empty() {
            tapped(&replay.take_tapped());
        }
        progress(n + 1, &replay);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (summary, rest) = replay.finish_timeline(timeline, elapsed);
    if !taps.is_empty() {
        tapped(&rest);
    }
    Ok(summary)
}
