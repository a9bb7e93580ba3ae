//! Replication: the population breeds. The engine sees genes, parameter
//! blobs, snapshots and fitness reports, never what a module does.
//!
//! During the in-sample part of a run (all bars before
//! `1 − out_of_sample` of it) the engine, after each bar:
//!
//! * **failure recovery**: replaces a quarantined variant by a mutated copy
//!   of the best variant of the same code;
//! * **threshold**: every `threshold_every` bars, lets a variant whose
//!   fitness reaches `threshold` have one child early;
//! * **generation**: every `generation_bars` bars, scores every variant old
//!   enough (`min_age_bars`) on the bars since its birth (bars it was not
//!   selected on), keeps the best `elite` unchanged, breeds `children` by
//!   tournament selection, uniform crossover (same code only) and Gaussian
//!   mutation, each child starting from its first parent's snapshot, and
//!   retires the weakest to keep the population within `cap`;
//! * **diversity**: after a generation, if the genes have collapsed (mean
//!   normalised spread below `diversity_min`), injects fresh random variants.
//!
//! Every birth records its cause, every retirement its reason. Variant 0
//! (the module's default genes) is the control: it may breed but is never
//! retired, so the report can compare against it. On the out-of-sample
//! part nothing is bred or retired: the population is only measured.

pub mod fitness;
pub mod genome;
pub mod lineage;

use std::sync::Arc;

use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::bindings::types::{Param, Setting};
use crate::config::EvolutionConfig;
use crate::engine::Module;
use crate::genes::value_f64;
use crate::runtime::InstanceSpec;
use crate::scoring::Scoreboard;

/// Why a variant was born.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BirthCause {
    /// The starting population.
    Initial,
    /// A scheduled generation.
    Generation,
    /// Its parent reached the fitness threshold.
    Threshold,
    /// The genes had collapsed; a fresh random variant.
    Diversity,
    /// It replaces a quarantined variant.
    Recovery,
    /// The context (regime) changed to a label its parent did well in.
    Regime,
    /// New code was deployed to compete with the old (`compete`).
    Deploy,
}

impl BirthCause {
    /// The cause as text.
    pub fn as_str(self) -> &'static str {
        match self {
            BirthCause::Initial => "initial",
            BirthCause::Generation => "generation",
            BirthCause::Threshold => "threshold",
            BirthCause::Diversity => "diversity",
            BirthCause::Recovery => "recovery",
            BirthCause::Regime => "regime",
            BirthCause::Deploy => "deploy",
        }
    }
}

/// Where the population lives, as the engine acts on it: a local
/// [`crate::runtime::Runtime`] (see [`crate::replay`]), or (in a garden of daemons) the leader's decision log that
/// every daemon follows.
pub trait Habitat {
    /// Start `spec` as the variant `record` describes, from the snapshot of
    /// its first parent if it has one; the reason if it cannot start.
    fn birth(&mut self, spec: InstanceSpec, record: &LineageRecord) -> Result<(), String>;
    /// Retire the variant `record` describes (its death already noted) at
    /// event time `time`; the reason if the retirement could not be carried
    /// out (in a garden: the fenced write to the decision log failed).
    fn retire(&mut self, record: &LineageRecord, time: i64) -> Result<(), String>;
    /// Why variant `id` is quarantined, if it is.
    fn quarantined(&self, id: &str) -> Option<String>;
}

/// One variant's life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineageRecord {
    /// Instance id.
    pub id: String,
    /// Parent ids (none for the initial population and injected variants).
    pub parents: Vec<String>,
    /// sha256 of its code.
    pub component: String,
    /// sha256 of its parameter blob.
    pub blob: String,
    /// Gene values.
    pub genes: Vec<(String, f64)>,
    /// Generation (parents' highest plus one).
    pub generation: u32,
    /// Bar of birth (index).
    pub birth_bar: usize,
    /// Bar of death, if it died.
    pub death_bar: Option<usize>,
    /// Why it was born.
    pub birth_cause: BirthCause,
    /// Why it died, if it did.
    pub death_cause: Option<String>,
    /// (bar, fitness) at each evaluation.
    pub fitness: Vec<(usize, f64)>,
    /// Fitness over its in-sample life (birth to the cut).
    pub in_sample: Option<f64>,
    /// Fitness over the out-of-sample part.
    pub out_of_sample: Option<f64>,
    /// The control: default genes, never retired.
    pub control: bool,
    /// Fitness over the bars of each context label it lived through.
    pub fitness_by_label: Vec<(String, f64)>,
    /// New code it was switched to while it lived (a `replace` deploy):
    /// (bar, sha256 of the code). `component` is the code it was born with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub code_changes: Vec<(usize, String)>,
}

struct Variant {
    record: LineageRecord,
    module: Arc<Module>,
    params: Vec<Param>,
    last_threshold_birth: Option<usize>,
}

impl Variant {
    fn alive(&self) -> bool {
        self.record.death_bar.is_none()
    }
}

/// Counts over the run.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct EvolutionCounts {
    /// Generations run.
    pub generations: u32,
    /// Births by cause (initial included).
    pub births: std::collections::BTreeMap<String, u32>,
    /// Births whose parameters or snapshot the module refused.
    pub failed_births: u32,
    /// Variants retired by selection.
    pub retired: u32,
    /// Variants lost to quarantine.
    pub quarantined: u32,
    /// Retirements the habitat could not carry out (a garden's decision
    /// log refused or could not take them).
    pub failed_retirements: u32,
}

/// The replication engine for one population.
pub struct Evolver {
    cfg: EvolutionConfig,
    rng: rand::rngs::ChaCha8Rng,
    module_name: String,
    settings: Vec<Setting>,
    /// Per code (component digest) in the population: the pipeline's name
    /// for its module (children's ids start with it) and its settings.
    codes: std::collections::HashMap<String, (String, Vec<Setting>)>,
    variants: Vec<Variant>,
    next: u32,
    cut: usize,
    steps_per_year: f64,
    counts: EvolutionCounts,
    /// (first bar, label) of each context period, in order.
    labels: Vec<(usize, String)>,
    /// A context change not yet acted on.
    pending_context: Option<String>,
    /// Bar of the last regime-triggered birth (they are spaced by
    /// `min_age_bars`, so a flickering context cannot flood the population).
    last_regime_birth: Option<usize>,
}

/// The first bar of the out-of-sample part of a run of `total_bars`: the
/// last `out_of_sample` share of it (kept within 0..=0.9).
pub fn cut_bar(total_bars: usize, out_of_sample: f64) -> usize {
    let oos = out_of_sample.clamp(0.0, 0.9);
    ((total_bars as f64) * (1.0 - oos)).round() as usize
}

impl Evolver {
    /// An engine for the population of `module_name`, over a run of
    /// `total_bars` bars.
    pub fn new(
        cfg: EvolutionConfig,
        seed: u64,
        module_name: &str,
        settings: Vec<Setting>,
        total_bars: usize,
        steps_per_year: f64,
    ) -> Self {
        let cut = cut_bar(total_bars, cfg.out_of_sample);
        Evolver {
            rng: rand::rngs::ChaCha8Rng::seed_from_u64(seed ^ 0x65766f6c7665),
            cfg,
            module_name: module_name.into(),
            settings,
            codes: std::collections::HashMap::new(),
            variants: Vec::new(),
            next: 0,
            cut,
            steps_per_year,
            counts: EvolutionCounts::default(),
            labels: Vec::new(),
            pending_context: None,
            last_regime_birth: None,
        }
    }

    /// The first bar of the out-of-sample part ([`cut_bar`]).
    pub fn cut(&self) -> usize {
        self.cut
    }

    /// Ids `0..n` are taken by the starting population.
    pub fn skip_ids(&mut self, n: u32) {
        self.next = self.next.max(n);
    }

    /// Another code in the population (a population may mix modules, even
    /// languages; crossover stays within one code): its children are named
    /// `name.N` and get `settings`, and ids skip its `count` first ones.
    pub fn add_code(&mut self, module: &Module, name: &str, settings: Vec<Setting>, count: u32) {
        self.codes
            .insert(module.digest().to_string(), (name.to_string(), settings));
        self.skip_ids(count);
    }

    /// Next instance id.
    pub fn next_id(&mut self) -> String {
        let name = self.module_name.clone();
        self.next_id_of(&name)
    }

    /// Next instance id for a variant of module `name` (ids are unique
    /// across the population's codes: one counter).
    fn next_id_of(&mut self, name: &str) -> String {
        let id = format!("{name}.{}", self.next);
        self.next += 1;
        id
    }

    /// Register a member of the starting population (already spawned).
    pub fn register_initial(
        &mut self,
        id: &str,
        module: Arc<Module>,
        params: Vec<Param>,
        control: bool,
    ) {
        self.add(
            id.to_string(),
            module,
            params,
            Vec::new(),
            0,
            0,
            BirthCause::Initial,
            control,
        );
    }

    /// Take back a variant as another engine left it (a garden's new leader
    /// rebuilding the population from the decision log): a known id gets
    /// `record` as its life so far, an unknown one joins. Ids of new
    /// children continue after the highest restored.
    pub fn restore(&mut self, record: LineageRecord, module: Arc<Module>, params: Vec<Param>) {
        if let Some(n) = record
            .id
            .rsplit_once('.')
            .and_then(|(_, n)| n.parse::<u32>().ok())
        {
            self.next = self.next.max(n.saturating_add(1));
        }
        match self.variants.iter_mut().find(|v| v.record.id == record.id) {
            // A starting variant a deploy has moved to other code since.
            Some(v) => {
                v.record = record;
                v.module = module;
            }
            None => {
                *self
                    .counts
                    .births
                    .entry(record.birth_cause.as_str().to_string())
                    .or_default() += 1;
                self.variants.push(Variant {
                    record,
                    module,
                    params,
                    last_threshold_birth: None,
                });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        id: String,
        module: Arc<Module>,
        params: Vec<Param>,
        parents: Vec<String>,
        generation: u32,
        bar: usize,
        cause: BirthCause,
        control: bool,
    ) {
        *self
            .counts
            .births
            .entry(cause.as_str().to_string())
            .or_default() += 1;
        self.variants.push(Variant {
            record: LineageRecord {
                id,
                parents,
                component: module.digest().to_string(),
                blob: genome::blob_hash(&params),
                genes: params
                    .iter()
                    .map(|p| (p.name.clone(), value_f64(&p.value)))
                    .collect(),
                generation,
                birth_bar: bar,
                death_bar: None,
                birth_cause: cause,
                death_cause: None,
                fitness: Vec::new(),
                in_sample: None,
                out_of_sample: None,
                control,
                fitness_by_label: Vec::new(),
                code_changes: Vec::new(),
            },
            module,
            params,
            last_threshold_birth: None,
        });
    }

    /// Fitness of variant `i` over `[from, to)`, with `rho` its correlation penalty input.
    fn fitness_of(&self, board: &Scoreboard, i: usize, from: usize, to: usize, rho: f64) -> f64 {
        let (values, trades) = board.window(&self.variants[i].record.id, from, to);
        fitness::fitness(&values, trades, self.steps_per_year, rho, &self.cfg.fitness)
    }

    /// Score every eligible living variant at `bar`: (index, fitness), best first.
    fn score(&mut self, board: &Scoreboard, bar: usize) -> Vec<(usize, f64)> {
        let eligible: Vec<usize> = (0..self.variants.len())
            .filter(|&i| {
                self.variants[i].alive()
                    && bar + 1 >= self.variants[i].record.birth_bar + self.cfg.min_age_bars
            })
            .collect();
        let returns: Vec<Vec<f64>> = eligible
            .iter()
            .map(|&i| {
                let (v, _) = board.window(
                    &self.variants[i].record.id,
                    self.variants[i].record.birth_bar,
                    bar + 1,
                );
                crate::scoring::returns(&v)
            })
            .collect();
        let mut scores = Vec::new();
        for (k, &i) in eligible.iter().enumerate() {
            let others: Vec<f64> = (0..eligible.len())
                .filter(|&j| j != k)
                .map(|j| fitness::correlation(&returns[k], &returns[j]).abs())
                .collect();
            let rho = if others.is_empty() {
                0.0
            } else {
                others.iter().sum::<f64>() / others.len() as f64
            };
            let f = self.fitness_of(board, i, self.variants[i].record.birth_bar, bar + 1, rho);
            self.variants[i].record.fitness.push((bar, f));
            scores.push((i, f));
        }
        scores.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scores
    }

    fn tournament(&mut self, pool: &[(usize, f64)]) -> usize {
        let mut best: Option<(usize, f64)> = None;
        for _ in 0..self.cfg.tournament.max(1) {
            let pick = pool[self.rng.random_range(0..pool.len())];
            if best.is_none_or(|b| pick.1 > b.1) {
                best = Some(pick);
            }
        }
        best.map_or(pool[0].0, |b| b.0)
    }

    fn living(&self) -> usize {
        self.variants.iter().filter(|v| v.alive()).count()
    }

    /// Spawn a child of `parents` (first is the main parent: its snapshot
    /// is inherited) with `params`. A child whose init refuses its
    /// parameters or snapshot is a failed birth, recorded as such.
    #[allow(clippy::too_many_arguments)]
    fn birth<H: Habitat>(
        &mut self,
        habitat: &mut H,
        module: Arc<Module>,
        params: Vec<Param>,
        parents: Vec<String>,
        generation: u32,
        bar: usize,
        cause: BirthCause,
    ) {
        let (name, settings) = self
            .codes
            .get(module.digest())
            .cloned()
            .unwrap_or_else(|| (self.module_name.clone(), self.settings.clone()));
        let id = self.next_id_of(&name);
        let spec = InstanceSpec {
            id: id.clone(),
            module: module.clone(),
            params: params.clone(),
            settings,
            snapshot: None,
        };
        self.add(id, module, params, parents, generation, bar, cause, false);
        let Some(v) = self.variants.last_mut() else {
            return;
        };
        if let Err(reason) = habitat.birth(spec, &v.record) {
            self.counts.failed_births += 1;
            v.record.death_bar = Some(bar);
            v.record.death_cause = Some(format!("failed birth: {reason}"));
        }
    }

    fn retire<H: Habitat>(
        &mut self,
        habitat: &mut H,
        i: usize,
        bar: usize,
        time: i64,
        why: String,
    ) {
        let v = &mut self.variants[i];
        v.record.death_bar = Some(bar);
        v.record.death_cause = Some(why);
        self.counts.retired += 1;
        if let Err(reason) = habitat.retire(&v.record, time) {
            self.counts.failed_retirements += 1;
            tracing::warn!(variant = %v.record.id, "retirement not carried out: {reason}");
        }
    }

    /// A mutated child of `parent`, inheriting its snapshot.
    fn breed_mutant<H: Habitat>(
        &mut self,
        habitat: &mut H,
        parent: usize,
        bar: usize,
        cause: BirthCause,
    ) {
        let params = self.mutant(parent);
        let module = self.variants[parent].module.clone();
        let generation = self.variants[parent].record.generation + 1;
        let parents = vec![self.variants[parent].record.id.clone()];
        self.birth(habitat, module, params, parents, generation, bar, cause);
    }

    /// Mutated copy of `parent`'s genes.
    fn mutant(&mut self, parent: usize) -> Vec<Param> {
        let mut params = self.variants[parent].params.clone();
        let genes = self.variants[parent].module.info().genes.clone();
        genome::mutate(&genes, &mut params, &self.cfg.mutation, &mut self.rng);
        params
    }

    /// A module announced that the context is now `label` (from bar `bar`).
    pub fn on_context(&mut self, label: &str, bar: usize) {
        if self.labels.last().is_some_and(|(_, l)| l == label) {
            return;
        }
        self.labels.push((bar, label.to_string()));
        self.pending_context = Some(label.to_string());
    }

    /// The bar ranges `[from, to)` of the earlier periods of `label`, up to `now`.
    fn periods(&self, label: &str, now: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (k, (start, l)) in self.labels.iter().enumerate() {
            let end = self.labels.get(k + 1).map_or(now, |(s, _)| *s);
            if l == label && end <= now && end > *start {
                out.push((*start, end));
            }
        }
        out
    }

    /// Fitness of variant `i` over the given periods, clipped to its life.
    fn fitness_in(&self, board: &Scoreboard, i: usize, periods: &[(usize, usize)]) -> Option<f64> {
        let r = &self.variants[i].record;
        let mut values = Vec::new();
        let mut trades = 0;
        for &(a, b) in periods {
            let from = a.max(r.birth_bar);
            let to = b.min(r.death_bar.map_or(usize::MAX, |d| d + 1));
            if from < to {
                let (v, t) = board.window(&r.id, from, to);
                values.extend(v);
                trades += t;
            }
        }
        (values.len() > 2)
            .then(|| fitness::fitness(&values, trades, self.steps_per_year, 0.0, &self.cfg.fitness))
    }

    fn regime<H: Habitat>(
        &mut self,
        label: &str,
        bar: usize,
        time: i64,
        board: &Scoreboard,
        habitat: &mut H,
    ) {
        let earlier = self.periods(label, bar + 1);
        // The period that just began is not "earlier".
        let earlier: Vec<(usize, usize)> = earlier.into_iter().filter(|(_, b)| *b <= bar).collect();
        if earlier.is_empty()
            || self.cfg.regime_children == 0
            || self
                .last_regime_birth
                .is_some_and(|b| bar < b + self.cfg.min_age_bars)
        {
            return;
        }
        let mut ranked: Vec<(usize, f64)> = (0..self.variants.len())
            .filter(|&i| self.variants[i].alive())
            .filter_map(|i| self.fitness_in(board, i, &earlier).map(|f| (i, f)))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let scores = self.score(board, bar);
        // Only variants that actually did well in this context breed from it.
        for &(parent, _) in ranked
            .iter()
            .filter(|(_, f)| *f > 0.0)
            .take(self.cfg.regime_children)
        {
            self.last_regime_birth = Some(bar);
            if self.living() >= self.cfg.cap && !self.retire_weakest(&scores, bar, time, habitat) {
                return;
            }
            self.breed_mutant(habitat, parent, bar, BirthCause::Regime);
        }
    }

    /// Run the triggers after bar `bar` (event time `time`).
    #[tracing::instrument(name = "selection", level = "debug", skip(self, board, habitat, time))]
    pub fn step<H: Habitat>(&mut self, bar: usize, time: i64, board: &Scoreboard, habitat: &mut H) {
        if !self.cfg.enabled || self.variants.is_empty() {
            return;
        }
        if bar + 1 == self.cut {
            // The end of the in-sample part: freeze and record.
            for i in 0..self.variants.len() {
                if self.variants[i].alive() {
                    let from = self.variants[i].record.birth_bar;
                    let f = self.fitness_of(board, i, from, self.cut, 0.0);
                    self.variants[i].record.in_sample = Some(f);
                }
            }
            return;
        }
        if bar + 1 > self.cut {
            return;
        }
        self.recover(bar, board, habitat);
        if let Some(label) = self.pending_context.take() {
            self.regime(&label, bar, time, board, habitat);
        }
        let generation =
            self.cfg.generation_bars > 0 && (bar + 1).is_multiple_of(self.cfg.generation_bars);
        if generation {
            self.generation(bar, time, board, habitat);
        } else if let Some(threshold) = self.cfg.threshold
            && self.cfg.threshold_every > 0
            && (bar + 1).is_multiple_of(self.cfg.threshold_every)
        {
            self.threshold(bar, time, threshold, board, habitat);
        }
    }

    fn recover<H: Habitat>(&mut self, bar: usize, board: &Scoreboard, habitat: &mut H) {
        for i in 0..self.variants.len() {
            if !self.variants[i].alive() {
                continue;
            }
            let Some(reason) = habitat.quarantined(&self.variants[i].record.id) else {
                continue;
            };
            self.variants[i].record.death_bar = Some(bar);
            self.variants[i].record.death_cause = Some(format!("quarantined: {reason}"));
            self.counts.quarantined += 1;
            // The best living variant of the same code, by fitness since birth.
            let digest = self.variants[i].record.component.clone();
            let best = (0..self.variants.len())
                .filter(|&j| {
                    self.variants[j].alive() && self.variants[j].record.component == digest
                })
                .map(|j| {
                    let from = self.variants[j].record.birth_bar;
                    (j, self.fitness_of(board, j, from, bar + 1, 0.0))
                })
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
            if let Some((parent, _)) = best {
                self.breed_mutant(habitat, parent, bar, BirthCause::Recovery);
            }
        }
    }

    fn threshold<H: Habitat>(
        &mut self,
        bar: usize,
        time: i64,
        threshold: f64,
        board: &Scoreboard,
        habitat: &mut H,
    ) {
        let scores = self.score(board, bar);
        let gap = self.cfg.generation_bars;
        let ready: Vec<usize> = scores
            .iter()
            .filter(|(i, f)| {
                *f >= threshold
                    && self.variants[*i]
                        .last_threshold_birth
                        .is_none_or(|b| bar >= b + gap)
            })
            .map(|(i, _)| *i)
            .collect();
        for parent in ready {
            if self.living() >= self.cfg.cap && !self.retire_weakest(&scores, bar, time, habitat) {
                return;
            }
            self.variants[parent].last_threshold_birth = Some(bar);
            self.breed_mutant(habitat, parent, bar, BirthCause::Threshold);
        }
    }

    /// Retire the weakest eligible variant that is neither elite nor the
    /// control; false if there is none.
    fn retire_weakest<H: Habitat>(
        &mut self,
        scores: &[(usize, f64)],
        bar: usize,
        time: i64,
        habitat: &mut H,
    ) -> bool {
        let elite: Vec<usize> = scores
            .iter()
            .take(self.cfg.elite)
            .map(|(i, _)| *i)
            .collect();
        let weakest = scores.iter().rev().find(|(i, _)| {
            self.variants[*i].alive() && !self.variants[*i].record.control && !elite.contains(i)
        });
        match weakest {
            Some(&(i, f)) => {
                self.retire(habitat, i, bar, time, format!("selection: fitness {f:.3}"));
                true
            }
            None => false,
        }
    }

    fn generation<H: Habitat>(
        &mut self,
        bar: usize,
        time: i64,
        board: &Scoreboard,
        habitat: &mut H,
    ) {
        let scores = self.score(board, bar);
        if scores.is_empty() {
            return;
        }
        self.counts.generations += 1;
        for _ in 0..self.cfg.children {
            if self.living() >= self.cfg.cap && !self.retire_weakest(&scores, bar, time, habitat) {
                break;
            }
            let pool: Vec<(usize, f64)> = scores
                .iter()
                .copied()
                .filter(|(i, _)| self.variants[*i].alive())
                .collect();
            if pool.is_empty() {
                break;
            }
            let a = self.tournament(&pool);
            let digest = self.variants[a].record.component.clone();
            let mates: Vec<(usize, f64)> = pool
                .iter()
                .copied()
                .filter(|(j, _)| *j != a && self.variants[*j].record.component == digest)
                .collect();
            let mut parents = vec![a];
            let mut params = self.variants[a].params.clone();
            if !mates.is_empty() && self.rng.random_bool(self.cfg.crossover.clamp(0.0, 1.0)) {
                let b = self.tournament(&mates);
                let crossed = genome::crossover(
                    &digest,
                    &self.variants[a].params,
                    &self.variants[b].record.component,
                    &self.variants[b].params,
                    &mut self.rng,
                );
                if let Ok(p) = crossed {
                    params = p;
                    parents.push(b);
                }
            }
            let genes = self.variants[a].module.info().genes.clone();
            genome::mutate(&genes, &mut params, &self.cfg.mutation, &mut self.rng);
            let generation = parents
                .iter()
                .map(|&p| self.variants[p].record.generation)
                .max()
                .unwrap_or(0)
                + 1;
            let module = self.variants[a].module.clone();
            let ids = parents
                .iter()
                .map(|&p| self.variants[p].record.id.clone())
                .collect();
            self.birth(
                habitat,
                module,
                params,
                ids,
                generation,
                bar,
                BirthCause::Generation,
            );
        }
        // Keep within the cap.
        while self.living() > self.cfg.cap {
            let alive: Vec<(usize, f64)> = scores
                .iter()
                .copied()
                .filter(|(i, _)| self.variants[*i].alive())
                .collect();
            if !self.retire_weakest(&alive, bar, time, habitat) {
                break;
            }
        }
        self.inject_if_collapsed(bar, habitat);
    }

    /// Fresh random variants when the genes have collapsed.
    fn inject_if_collapsed<H: Habitat>(&mut self, bar: usize, habitat: &mut H) {
        let Some(first) = self.variants.iter().find(|v| v.alive()) else {
            return;
        };
        let module = first.module.clone();
        if self.diversity().is_none_or(|d| d >= self.cfg.diversity_min) {
            return;
        }
        let room = self.cfg.cap.saturating_sub(self.living());
        self.fresh(
            habitat,
            &module,
            self.cfg.inject.min(room),
            bar,
            BirthCause::Diversity,
        );
    }

    /// `count` variants of `module` with random genes and no parents, born
    /// at `bar` for `cause`.
    fn fresh<H: Habitat>(
        &mut self,
        habitat: &mut H,
        module: &Arc<Module>,
        count: usize,
        bar: usize,
        cause: BirthCause,
    ) {
        let genes = module.info().genes.clone();
        for _ in 0..count {
            let params = crate::genes::random(&genes, &mut self.rng);
            self.birth(habitat, module.clone(), params, Vec::new(), 0, bar, cause);
        }
    }

    /// Close the books at the end of the run (`bars` bars): out-of-sample
    /// fitness of every variant alive at the cut.
    pub fn finish(&mut self, board: &Scoreboard, bars: usize) {
        let mut labels: Vec<String> = self.labels.iter().map(|(_, l)| l.clone()).collect();
        labels.sort();
        labels.dedup();
        for i in 0..self.variants.len() {
            if self.variants[i].record.in_sample.is_some() {
                let f = self.fitness_of(board, i, self.cut, bars + 1, 0.0);
                self.variants[i].record.out_of_sample = Some(f);
            }
            let by_label: Vec<(String, f64)> = labels
                .iter()
                .filter_map(|l| {
                    let periods = self.periods(l, bars + 1);
                    self.fitness_in(board, i, &periods).map(|f| (l.clone(), f))
                })
                .collect();
            self.variants[i].record.fitness_by_label = by_label;
        }
    }

    /// The living population's spread of genes (mean normalised spread
    /// of the variants running the first living variant's code, as the
    /// diversity rule measures it), or none with fewer than two.
    pub fn diversity(&self) -> Option<f64> {
        let first = self.variants.iter().find(|v| v.alive())?;
        let module = &first.module;
        let living: Vec<&[Param]> = self
            .variants
            .iter()
            .filter(|v| v.alive() && v.record.component == module.digest())
            .map(|v| v.params.as_slice())
            .collect();
        (living.len() >= 2).then(|| genome::diversity(&module.info().genes, &living))
    }

    /// New code for the living variants running `old` (a digest): the
    /// runtime has switched them; they go on under their ids on `new`,
    /// their lineage notes the change at `bar`, and children of theirs are
    /// born on `new`. The records changed.
    pub fn replace_code(&mut self, old: &str, new: &Arc<Module>, bar: usize) -> Vec<LineageRecord> {
        if let Some(entry) = self.codes.remove(old) {
            self.codes.insert(new.digest().to_string(), entry);
        }
        let mut changed = Vec::new();
        for v in self
            .variants
            .iter_mut()
            .filter(|v| v.alive() && v.module.digest() == old)
        {
            v.module = new.clone();
            v.record.code_changes.push((bar, new.digest().to_string()));
            changed.push(v.record.clone());
        }
        changed
    }

    /// Whether new code did worse than the old by more than `margin`:
    /// the mean fitness of variants `ids` over the `watch` bars from the
    /// switch at `since`, against theirs over the `watch` bars before it
    /// (on the old code). Why, if it did; nothing without reports on both
    /// sides.
    pub fn fitness_fell(
        &self,
        board: &Scoreboard,
        ids: &[String],
        since: usize,
        watch: usize,
        margin: f64,
    ) -> Option<String> {
        let mean = |from: usize, to: usize| {
            let values: Vec<f64> = (0..self.variants.len())
                .filter(|&i| ids.contains(&self.variants[i].record.id))
                .filter(|&i| {
                    !board
                        .window(&self.variants[i].record.id, from, to)
                        .0
                        .is_empty()
                })
                .map(|i| self.fitness_of(board, i, from, to, 0.0))
                .collect();
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        };
        let before = mean(since.saturating_sub(watch), since)?;
        let after = mean(since, since + watch)?;
        (after < before - margin).then(|| {
            format!(
                "mean fitness {after:.3} over {watch} bars on the new code, {before:.3} before on the old (margin {margin})"
            )
        })
    }

    /// Whether a variant was ever born on code `digest`.
    pub fn born_on(&self, digest: &str) -> bool {
        self.variants.iter().any(|v| v.record.component == digest)
    }

    /// Retire every living variant of code `digest` at `bar`: new code
    /// that came to `compete` is taken back, and the other code's
    /// variants go on. How many were retired.
    pub fn withdraw<H: Habitat>(
        &mut self,
        habitat: &mut H,
        digest: &str,
        bar: usize,
        time: i64,
        why: &str,
    ) -> usize {
        let doomed: Vec<usize> = (0..self.variants.len())
            .filter(|&i| self.variants[i].alive() && self.variants[i].module.digest() == digest)
            .collect();
        for &i in &doomed {
            self.retire(habitat, i, bar, time, why.to_string());
        }
        doomed.len()
    }

    /// `count` variants of new code `module` join the population at `bar`
    /// with random genes, to compete with the variants of `old` (whose
    /// settings they take); crossover stays within one code. Their ids.
    pub fn compete<H: Habitat>(
        &mut self,
        habitat: &mut H,
        old: &str,
        module: &Arc<Module>,
        count: u32,
        bar: usize,
    ) -> Vec<String> {
        let settings = self
            .codes
            .get(old)
            .map_or_else(|| self.settings.clone(), |(_, s)| s.clone());
        self.codes.insert(
            module.digest().to_string(),
            (module.info().name.clone(), settings),
        );
        let first = self.variants.len();
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        self.fresh(habitat, module, count, bar, BirthCause::Deploy);
        self.variants[first..]
            .iter()
            .map(|v| v.record.id.clone())
            .collect()
    }

    /// Whether `id` is, or was, a variant of the population.
    pub fn is_variant(&self, id: &str) -> bool {
        self.variants.iter().any(|v| v.record.id == id)
    }

    /// Every variant that ever lived, in birth order.
    pub fn lineage(&self) -> Vec<LineageRecord> {
        self.variants.iter().map(|v| v.record.clone()).collect()
    }

    /// Counts.
    pub fn counts(&self) -> EvolutionCounts {
        self.counts.clone()
    }
}
