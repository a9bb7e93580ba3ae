//! What the leader's replication engine makes of the deploys in the
//! decision log: the lineage notes which code each variant runs, and
//! `compete` deploys bring new variants.
//!
//! * A `replace` (a deploy, a promotion or a rollback) moves the
//!   population's living variants of a module to the new code at the first
//!   bar at or past the deploy's position; the changed records go to the
//!   log as one `recode` decision.
//! * A `replace` with a fitness rule is judged once the leader has acted
//!   on its watch: if the moved variants' mean fitness fell by more than
//!   the margin, the leader's daemon rolls it back.
//! * A `compete` deploy brings new variants of its code, born by decision,
//!   once the leader's daemon has loaded the code; a rollback of it retires
//!   them, and the old code's variants go on.
//!
//! Invariants: each deploy is taken in once, in log order. What is done is
//! in the log (a `recode` decision, births on the new code, retirements),
//! so a new leader does not do it again: it skips recodes the log holds and
//! competes whose code has variants already.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::engine::Module;
use crate::loader::Planned;
use crate::replication::{Evolver, Habitat, LineageRecord};

use super::{DeployOrder, FitnessRule, Rollout};
use crate::scoring::Scoreboard;

/// One piece of work a deploy gives the engine.
#[derive(Debug, Clone)]
enum Work {
    /// The population's variants of `old` take `new` at the first bar at
    /// or past `at`.
    Recode {
        deploy: usize,
        old: String,
        new: String,
        at: u64,
        bar: Option<usize>,
        judge: Option<(String, FitnessRule)>,
    },
    /// Variants of `new` join, taking `old`'s settings.
    Compete {
        old: String,
        new: String,
        variants: u32,
    },
    /// The variants of `digest` go.
    Withdraw { digest: String, why: String },
}

/// The deploys the leader has taken in, and the work left of them.
#[derive(Debug, Default)]
pub(super) struct DeployWork {
    /// Deploys taken in (an index into the log's deploys).
    seen: usize,
    /// Per population module: the code its variants run, and its size.
    running: HashMap<String, (String, u32)>,
    /// Per module: the deploys in force (digest, rollout); a rollback
    /// takes the latest off.
    stacks: HashMap<String, Vec<(String, Rollout)>>,
    /// Recodes the log holds already.
    recoded: HashSet<usize>,
    pending: Vec<Work>,
    /// Replaces to judge on fitness once acted on past their watch.
    judges: Vec<Judge>,
    /// Per code, the living variants a logged recode moved to it, and the
    /// bar: what a new leader judges a recoded deploy by.
    moved: HashMap<String, (Vec<String>, usize)>,
}

/// A `replace` to judge on fitness.
#[derive(Debug, Clone)]
struct Judge {
    module: String,
    digest: String,
    /// The variants it moved.
    ids: Vec<String>,
    /// The bar the switch fell on.
    since: usize,
    rule: FitnessRule,
}

/// A deploy whose new code did worse than the old: take it back.
#[derive(Debug, Clone, PartialEq)]
pub struct Unfit {
    /// The pipeline module.
    pub module: String,
    /// The code that did worse.
    pub digest: String,
    /// By how much.
    pub why: String,
}

/// What carrying out deploy work needs from the leader.
pub(super) struct Engine<'a, H: Habitat> {
    pub(super) evolver: &'a mut Evolver,
    pub(super) habitat: &'a mut H,
    pub(super) modules: &'a [Arc<Module>],
    /// The last bar acted on, and its time.
    pub(super) bar: usize,
    pub(super) time: i64,
}

impl DeployWork {
    /// Work on the population of `plan`, with the recodes of deploys
    /// `recoded` (indices) in the log already, and the `lineage` it
    /// holds.
    pub(super) fn new(
        plan: &[Planned],
        recoded: &[usize],
        lineage: &[LineageRecord],
    ) -> DeployWork {
        let mut moved: HashMap<String, (Vec<String>, usize)> = HashMap::new();
        for r in lineage.iter().filter(|r| r.death_bar.is_none()) {
            if let Some((bar, digest)) = r.code_changes.last() {
                let entry = moved.entry(digest.clone()).or_insert((Vec::new(), *bar));
                entry.0.push(r.id.clone());
            }
        }
        let mut running = HashMap::new();
        for p in plan.iter().filter(|p| p.population) {
            running
                .entry(p.name.clone())
                .or_insert_with(|| (p.spec.module.digest().to_string(), p.count));
        }
        DeployWork {
            running,
            recoded: recoded.iter().copied().collect(),
            moved,
            ..DeployWork::default()
        }
    }

    /// Take in the deploys logged since the last call (`deploys` is every
    /// deploy in the log, in order).
    pub(super) fn take(&mut self, deploys: &[DeployOrder]) {
        for (i, d) in deploys.iter().enumerate().skip(self.seen) {
            let stack = self.stacks.entry(d.module.clone()).or_default();
            if d.is_rollback() {
                if let Some((digest, Rollout::Compete { .. })) = stack.pop() {
                    self.pending.push(Work::Withdraw {
                        digest,
                        why: d.reason.clone(),
                    });
                }
            } else if !d.is_promotion() {
                stack.push((d.digest.clone(), d.rollout));
            }
            let Some((running, size)) = self.running.get_mut(&d.module) else {
                continue;
            };
            match d.rollout {
                Rollout::Replace if *running != d.digest => {
                    // Recoded under an earlier leader: judged here still.
                    if let (true, Some(rule), Some((ids, bar))) = (
                        self.recoded.contains(&i),
                        d.fitness,
                        self.moved.get(&d.digest),
                    ) {
                        self.judges.push(Judge {
                            module: d.module.clone(),
                            digest: d.digest.clone(),
                            ids: ids.clone(),
                            since: *bar,
                            rule,
                        });
                    }
                    if !self.recoded.contains(&i) {
                        self.pending.push(Work::Recode {
                            deploy: i,
                            old: running.clone(),
                            new: d.digest.clone(),
                            at: d.at,
                            bar: None,
                            judge: d.fitness.map(|f| (d.module.clone(), f)),
                        });
                    }
                    *running = d.digest.clone();
                }
                Rollout::Compete { variants } if !d.is_rollback() => {
                    self.pending.push(Work::Compete {
                        old: running.clone(),
                        new: d.digest.clone(),
                        variants: variants.unwrap_or(*size),
                    });
                }
                _ => {}
            }
        }
        self.seen = deploys.len();
    }

    /// The bar read at stream position `position` has index `bar`: a
    /// recode waiting for its switch falls on it.
    pub(super) fn bar_read(&mut self, position: u64, bar: usize) {
        for w in &mut self.pending {
            if let Work::Recode {
                at,
                bar: found @ None,
                ..
            } = w
                && *at <= position
            {
                *found = Some(bar);
            }
        }
    }

    /// Whether there is work left.
    pub(super) fn pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Carry out what can be done now, in order (a piece whose bar or code
    /// is not there yet waits, with what comes after it). The recodes to
    /// log: (deploy index, records changed).
    pub(super) fn carry<H: Habitat>(
        &mut self,
        e: &mut Engine<'_, H>,
    ) -> Vec<(usize, Vec<LineageRecord>)> {
        let mut recodes = Vec::new();
        while let Some(w) = self.pending.first().cloned() {
            let code = |digest: &str| e.modules.iter().find(|m| m.digest() == digest).cloned();
            match w {
                Work::Recode {
                    deploy,
                    old,
                    new,
                    bar: Some(bar),
                    judge,
                    ..
                } => {
                    let Some(new) = code(&new) else { break };
                    let changed = e.evolver.replace_code(&old, &new, bar);
                    if let Some((module, rule)) = judge {
                        self.judges.push(Judge {
                            module,
                            digest: new.digest().to_string(),
                            ids: changed.iter().map(|r| r.id.clone()).collect(),
                            since: bar,
                            rule,
                        });
                    }
                    self.recoded.insert(deploy);
                    recodes.push((deploy, changed));
                }
                Work::Recode { bar: None, .. } => break,
                Work::Compete { old, new, variants } => {
                    if !e.evolver.born_on(&new) {
                        let Some(new) = code(&new) else { break };
                        let born = e.evolver.compete(e.habitat, &old, &new, variants, e.bar);
                        tracing::info!(code = %new.label(), "{} variants join to compete", born.len());
                    }
                }
                Work::Withdraw { digest, why } => {
                    let n = e.evolver.withdraw(e.habitat, &digest, e.bar, e.time, &why);
                    tracing::info!(%digest, "{n} competing variants withdrawn: {why}");
                }
            }
            self.pending.remove(0);
        }
        recodes
    }
}

impl DeployWork {
    /// Judge the replaces whose watch the leader has acted on (through bar
    /// `stepped`): those whose variants did worse by more than their
    /// margin.
    pub(super) fn judge(
        &mut self,
        evolver: &Evolver,
        board: &Scoreboard,
        stepped: usize,
    ) -> Vec<Unfit> {
        let mut unfit = Vec::new();
        self.judges.retain(|j| {
            let watch = usize::try_from(j.rule.watch_bars).unwrap_or(usize::MAX);
            if stepped < j.since.saturating_add(watch) {
                return true;
            }
            if let Some(why) = evolver.fitness_fell(board, &j.ids, j.since, watch, j.rule.margin) {
                unfit.push(Unfit {
                    module: j.module.clone(),
                    digest: j.digest.clone(),
                    why,
                });
            }
            false
        });
        unfit
    }
}
