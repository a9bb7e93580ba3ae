//! One population across daemons: the leader runs the replication engine
//! for all of it, and acts only by writing fenced decisions.
//!
//! The leader reads the bar, fitness and context streams from their start
//! (it needs every variant's whole record, and a new leader must see what
//! the old one saw), so it does not depend on which daemon ran which
//! instance. A bar's index is its position in the bar stream, counted from
//! the first entry ever added (`XINFO STREAM` entries-added), so indices
//! survive trimming and every leader agrees on them. A fitness report
//! belongs to the latest bar at or before its time; a report seen twice
//! (a redelivery after a failover) is counted once.
//!
//! Each decision goes through [`Membership::decide`]: if a newer leader
//! exists it is refused and this leader stops. Every daemon, the leader
//! included, learns the population only from the log ([`super::Follower`]).
//! A new leader rebuilds the engine from the starting plan and the logged
//! lineage, and goes on after the last bar a leader logged as acted on.

use std::collections::HashMap;
use std::sync::Arc;

use crate::Envelope;
use crate::bindings::types::{Body, Setting};
use crate::bus::redis::{AUTH_FIELD, Fields, entry_position, field, open_entry};
use crate::config::EvolutionConfig;
use crate::engine::Module;
use crate::loader::Planned;
use crate::replication::{BirthCause, Evolver, Habitat, LineageRecord};
use crate::runtime::InstanceSpec;
use crate::scoring::{self, Scoreboard};

use super::leader_deploys::{DeployWork, Engine, Unfit};
use super::{Decision, DeployOrder, Follower, Membership, variant_of};

/// Stream entries read per request.
const BATCH: usize = 5_000;

/// Topics the leader reads.
#[derive(Debug, Clone)]
pub struct LeaderTopics {
    /// Bars.
    pub bars: String,
    /// Fitness reports.
    pub fitness: String,
    /// Context changes, if the pipeline has them.
    pub context: Option<String>,
}

/// The leader's replication engine and what it has read.
pub struct Leader {
    term: u64,
    cfg: EvolutionConfig,
    seed: u64,
    modules: Vec<Arc<Module>>,
    initial: Vec<Planned>,
    restored: Vec<LineageRecord>,
    evolver: Option<Evolver>,
    board: Scoreboard,
    topics: LeaderTopics,
    /// Last entry id read, per stream (bars, fitness, context).
    after: [String; 3],
    /// Entries refused since [`Leader::take_refused`].
    refused: u64,
    /// Index of the first bar read.
    base: Option<usize>,
    /// Event time of each bar read, from `base` on.
    times: Vec<i64>,
    /// Context changes seen before the engine was made: (label, bar).
    contexts: Vec<(String, usize)>,
    /// Per variant, the event time of its latest report taken in: a
    /// report at or before it is a redelivery (reports of one variant come
    /// in event-time order), so memory grows with the variants alive, not
    /// with the run.
    reported: HashMap<String, i64>,
    /// Highest bar a fitness report has reached.
    reported_upto: Option<usize>,
    /// Next bar to act on.
    next_step: usize,
    quarantined: HashMap<String, String>,
    lost: bool,
    /// What deploys give the engine to do.
    deploys: DeployWork,
    /// Deploys judged unfit since [`Leader::take_unfit`].
    unfit: Vec<Unfit>,
}

impl Leader {
    /// The leader for term `term`: the population's starting members are
    /// the population entries of `plan`; `log` is what the decision log
    /// says happened since (the lineage, the last bar acted on, the
    /// deploys); `modules` the code loaded, deploys' included. `None` if
    /// the plan has no population or evolution is off.
    pub fn new(
        term: u64,
        (cfg, seed): (EvolutionConfig, u64),
        plan: &[Planned],
        modules: Vec<Arc<Module>>,
        log: &Follower,
        topics: LeaderTopics,
    ) -> Option<Leader> {
        let (lineage, stepped) = (log.lineage(), log.stepped());
        let initial: Vec<Planned> = plan.iter().filter(|p| p.population).cloned().collect();
        if initial.is_empty() || !cfg.enabled {
            return None;
        }
        // Bars already decided on are not acted on again.
        let decided = lineage
            .iter()
            .flat_map(|r| [Some(r.birth_bar), r.death_bar])
            .flatten()
            .chain(stepped)
            .max();
        Some(Leader {
            term,
            cfg,
            seed,
            modules,
            initial,
            restored: lineage.to_vec(),
            evolver: None,
            board: Scoreboard::default(),
            topics,
            after: ["0-0".into(), "0-0".into(), "0-0".into()],
            base: None,
            times: Vec::new(),
            contexts: Vec::new(),
            reported: HashMap::new(),
            reported_upto: None,
            next_step: decided.map_or(0, |b| b + 1),
            quarantined: HashMap::new(),
            lost: false,
            refused: 0,
            deploys: DeployWork::new(plan, log.recoded(), lineage),
            unfit: Vec::new(),
        })
    }

    /// The code loaded now (a deploy's, once ready): what variants born of
    /// a deploy, or moved by one, run.
    pub fn set_modules(&mut self, modules: &[Arc<Module>]) {
        if modules.len() != self.modules.len() {
            self.modules = modules.to_vec();
        }
    }

    /// Deploys whose new code did worse on fitness than the old by more
    /// than their margin, since the last call: to roll back.
    pub fn take_unfit(&mut self) -> Vec<Unfit> {
        std::mem::take(&mut self.unfit)
    }

    /// Take in the deploys the log holds (every one, in log order): their
    /// code changes go to the lineage, and `compete` brings variants.
    pub fn take_deploys(&mut self, deploys: &[DeployOrder]) {
        self.deploys.take(deploys);
    }

    /// The living population's spread of genes, once evolution started.
    pub fn diversity(&self) -> Option<f64> {
        self.evolver.as_ref().and_then(Evolver::diversity)
    }

    /// Entries no trusted daemon wrote that the leader ignored (bars,
    /// fitness, context) since the last call, to count and audit.
    pub fn take_refused(&mut self) -> u64 {
        std::mem::take(&mut self.refused)
    }

    /// The term this leader acts in.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// False once a decision was refused because a newer leader exists:
    /// drop this one.
    pub fn leading(&self) -> bool {
        !self.lost
    }

    /// Which variants are quarantined now, and why (from the daemons'
    /// heartbeats).
    pub fn set_quarantined(&mut self, quarantined: HashMap<String, String>) {
        self.quarantined = quarantined;
    }

    /// Bars read so far (the index of the next bar).
    pub fn bars(&self) -> usize {
        self.base.unwrap_or(0) + self.times.len()
    }

    /// Read what is new on the streams and act on every bar whose fitness
    /// has been reported. Returns how many decisions were written.
    pub fn poll(&mut self, m: &mut Membership) -> redis::RedisResult<usize> {
        self.read(m)?;
        let mut written = 0;
        if self.evolver.is_none() {
            self.ensure_evolver();
            // The log holds the whole lineage: the starting population too,
            // once, logged by the first leader that sees it missing.
            let starting: Vec<LineageRecord> = self
                .evolver
                .as_ref()
                .map(|ev| ev.lineage())
                .unwrap_or_default()
                .into_iter()
                .filter(|r| {
                    r.birth_cause == BirthCause::Initial
                        && !self.restored.iter().any(|k| k.id == r.id)
                })
                .collect();
            for record in starting {
                let birth = Decision::Birth {
                    term: self.term,
                    record,
                };
                if !m.log(self.term, &birth)? {
                    self.lost = true;
                    return Ok(written);
                }
                written += 1;
            }
        }
        written += self.carry_deploys(m)?;
        let Some(upto) = self.reported_upto else {
            return Ok(written);
        };
        if self.next_step < self.base.unwrap_or(0) {
            // Trimmed away before this leader could read it.
            self.next_step = self.base.unwrap_or(0);
        }
        let Some(ev) = self.evolver.as_mut() else {
            return Ok(written);
        };
        let mut decider = Decider::new(m, self.term, &self.quarantined);
        let start = self.next_step;
        while self.next_step <= upto && !decider.lost {
            let Some(&time) = self.times.get(self.next_step - self.base.unwrap_or(0)) else {
                break;
            };
            ev.step(self.next_step, time, &self.board, &mut decider);
            self.next_step += 1;
        }
        if self.next_step > start {
            let judged = self.deploys.judge(ev, &self.board, self.next_step - 1);
            self.unfit.extend(judged);
        }
        if self.next_step > start && !decider.lost {
            let step = Decision::Stepped {
                term: self.term,
                bar: self.next_step - 1,
            };
            if !decider.m.log(self.term, &step)? {
                decider.lost = true;
            }
        }
        self.lost = decider.lost;
        // A retired variant breeds and is scored no more: what the leader
        // kept of it goes, so memory follows the living population.
        for id in &decider.retired {
            self.board.forget(id);
            self.reported.remove(id);
        }
        Ok(written + decider.written)
    }

    /// Do what deploys ask of the engine, once it runs: recodes go to the
    /// log as decisions, births and retirements as the engine makes them.
    fn carry_deploys(&mut self, m: &mut Membership) -> redis::RedisResult<usize> {
        let Some(ev) = self.evolver.as_mut() else {
            return Ok(0);
        };
        if !self.deploys.pending() || self.lost {
            return Ok(0);
        }
        let bar = self.next_step.saturating_sub(1);
        let time = self
            .times
            .get(bar.saturating_sub(self.base.unwrap_or(0)))
            .copied()
            .unwrap_or(0);
        let mut decider = Decider::new(m, self.term, &self.quarantined);
        let recodes = self.deploys.carry(&mut Engine {
            evolver: ev,
            habitat: &mut decider,
            modules: &self.modules,
            bar,
            time,
        });
        for (deploy, records) in recodes {
            let recode = Decision::Recode {
                term: self.term,
                deploy,
                records,
            };
            if let Err(e) = decider.log(&recode) {
                tracing::warn!("a deploy's code change is not in the lineage: {e}");
            }
        }
        self.lost |= decider.lost;
        for id in &decider.retired {
            self.board.forget(id);
            self.reported.remove(id);
        }
        Ok(decider.written)
    }

    fn read(&mut self, m: &mut Membership) -> redis::RedisResult<()> {
        let bars = m.stream(&self.topics.bars);
        if self.base.is_none() {
            let (added, held) = m.stream_counts(&bars)?;
            self.base = Some(usize::try_from(added.saturating_sub(held)).unwrap_or(0));
        }
        for (id, fields) in read_new(m, &bars, &mut self.after[0])? {
            let index = self.bars();
            self.deploys.bar_read(entry_position(&id), index);
            // A bar that is refused or does not decode still takes its
            // place in the count (every daemon counts the same stream); it
            // keeps the previous bar's time.
            let time = trusted(m, &bars, &self.topics.bars, &fields, &mut self.refused)
                .map(|e| e.time)
                .unwrap_or_else(|| self.times.last().copied().unwrap_or(0));
            self.times.push(time);
        }
        let fitness = m.stream(&self.topics.fitness);
        for (_, fields) in read_new(m, &fitness, &mut self.after[1])? {
            let Some(e) = trusted(
                m,
                &fitness,
                &self.topics.fitness,
                &fields,
                &mut self.refused,
            ) else {
                continue;
            };
            if let Body::Fitness(f) = &e.body
                && let Some(bar) = self.bar_at(e.time)
                && self
                    .reported
                    .get(&f.subject)
                    .is_none_or(|latest| e.time > *latest)
            {
                self.reported.insert(f.subject.clone(), e.time);
                self.board.record(f, bar);
                self.reported_upto = self.reported_upto.max(Some(bar));
            }
        }
        if let Some(topic) = self.topics.context.clone() {
            let stream = m.stream(&topic);
            for (_, fields) in read_new(m, &stream, &mut self.after[2])? {
                if let Some(e) = trusted(m, &stream, &topic, &fields, &mut self.refused)
                    && let Body::Context(c) = &e.body
                    && let Some(bar) = self.bar_at(e.time)
                {
                    match self.evolver.as_mut() {
                        Some(ev) => ev.on_context(&c.label, bar),
                        None => self.contexts.push((c.label.clone(), bar)),
                    }
                }
            }
        }
        Ok(())
    }

    /// Index of the latest bar at or before `time`.
    fn bar_at(&self, time: i64) -> Option<usize> {
        let n = self.times.partition_point(|t| *t <= time);
        (n > 0).then(|| self.base.unwrap_or(0) + n - 1)
    }

    /// Make the engine once two bars tell the bar rate: the starting plan,
    /// then every logged birth and retirement.
    fn ensure_evolver(&mut self) {
        if self.evolver.is_some() || self.times.len() < 2 {
            return;
        }
        let (Some(first), Some(last)) = (self.times.first(), self.times.last()) else {
            return;
        };
        let Some(head) = self.initial.first() else {
            return;
        };
        let spy = scoring::steps_per_year(self.times.len(), *first, *last);
        let settings: Vec<Setting> = head.spec.settings.clone();
        // A stream has no end, so no out-of-sample part.
        let mut ev = Evolver::new(
            self.cfg.clone(),
            self.seed ^ self.term.rotate_left(32),
            &head.name,
            settings,
            usize::MAX,
            spy,
        );
        for p in &self.initial {
            ev.add_code(&p.spec.module, &p.name, p.spec.settings.clone(), p.count);
            ev.register_initial(
                &p.spec.id,
                p.spec.module.clone(),
                p.spec.params.clone(),
                p.index == 0,
            );
        }
        for r in &self.restored {
            match variant_of(r, &self.modules) {
                Ok((module, params)) => ev.restore(r.clone(), module, params),
                Err(e) => tracing::warn!("leader cannot take back a variant: {e}"),
            }
        }
        for (label, bar) in self.contexts.drain(..) {
            ev.on_context(&label, bar);
        }
        self.evolver = Some(ev);
    }
}

/// Every entry of `stream` after id `after`, oldest first, with its id;
/// `after` moves to the last one.
fn read_new(
    m: &mut Membership,
    stream: &str,
    after: &mut String,
) -> redis::RedisResult<Vec<(String, Fields)>> {
    let mut out = Vec::new();
    loop {
        let batch = m.read(stream, after, BATCH)?;
        let Some((last, _)) = batch.last() else {
            return Ok(out);
        };
        *after = last.clone();
        out.extend(batch);
    }
}

/// The population as the leader acts on it: every change is a fenced
/// decision in the log, which the daemons carry out.
struct Decider<'a> {
    m: &'a mut Membership,
    term: u64,
    quarantined: &'a HashMap<String, String>,
    written: usize,
    lost: bool,
    /// Variants retired by decisions written this round.
    retired: Vec<String>,
}

impl<'a> Decider<'a> {
    fn new(
        m: &'a mut Membership,
        term: u64,
        quarantined: &'a HashMap<String, String>,
    ) -> Decider<'a> {
        Decider {
            m,
            term,
            quarantined,
            written: 0,
            lost: false,
            retired: Vec::new(),
        }
    }

    fn log(&mut self, d: &Decision) -> Result<(), String> {
        if self.lost {
            return Err("this daemon no longer leads".into());
        }
        match self.m.log(self.term, d) {
            Ok(true) => {
                self.written += 1;
                Ok(())
            }
            Ok(false) => {
                self.lost = true;
                Err("a newer leader exists; the decision was refused".into())
            }
            Err(e) => Err(format!("the decision could not be written: {e}")),
        }
    }
}

impl Habitat for Decider<'_> {
    fn birth(&mut self, _spec: InstanceSpec, record: &LineageRecord) -> Result<(), String> {
        self.log(&Decision::Birth {
            term: self.term,
            record: record.clone(),
        })
    }

    fn retire(&mut self, record: &LineageRecord, time: i64) -> Result<(), String> {
        let d = Decision::Retire {
            term: self.term,
            record: record.clone(),
            time,
        };
        self.log(&d)?;
        self.retired.push(record.id.clone());
        Ok(())
    }

    fn quarantined(&self, id: &str) -> Option<String> {
        self.quarantined.get(id).cloned()
    }
}

/// The message of an entry a trusted daemon wrote on `stream`; `None`
/// for one it did not (what a plain Redis client writes never steers
/// selection: it is counted in `refused`) or that does not decode.
fn trusted(
    m: &Membership,
    stream: &str,
    topic: &str,
    fields: &Fields,
    refused: &mut u64,
) -> Option<Envelope> {
    let auth = m.entry_auth()?;
    let checked = auth.check(
        stream,
        field(fields, "m").unwrap_or_default(),
        field(fields, AUTH_FIELD),
    );
    if let Err(why) = checked {
        tracing::warn!(%stream, "the leader ignores an entry: {why}");
        *refused += 1;
        return None;
    }
    open_entry(topic, stream, fields, auth.body_keys())
        .ok()
        .map(|(e, _, _)| e)
}
