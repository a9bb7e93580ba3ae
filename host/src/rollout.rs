//! New code taking over while a pipeline runs: the `replace`, `compete`
//! and `canary` strategies of a deploy, applied between two bars of a
//! replay.
//!
//! Invariants: a deploy whose code cannot be had (unreadable, untrusted,
//! not compiling) changes nothing and says why; `replace` keeps every
//! instance's id, parameters and inbox (what waits is handled by the new
//! code, in order) and starts the new code from the old one's snapshot,
//! or fresh if it refuses it; `compete` adds variants of the new code to
//! the population and leaves the old code's variants alone, so selection
//! decides. Each deploy yields one [`DeployReport`], for the summary, the
//! audit log and the lineage.
//!
//! **Canary.** One instance of the new code (`{first old id}.canary`, the
//! first old instance's parameters and snapshot) joins the module's groups
//! beside the old instances, and the groups' rosters give it `share`
//! percent of the keys ([`Bus::set_roster`]), so every key stays with one
//! instance and its order holds. The module must take shared deliveries
//! (a broadcast would reach both codes) and the new code must bear the
//! same module name (its group).
//!
//! **Watch.** A `replace` or a `canary` stays under watch ([`Rollout`])
//! for its `watch_bars`: the old code stays compiled and each instance's
//! snapshot at the switch stays kept. If the new code's instances trap
//! `traps` times between them meanwhile, it is taken back: every instance
//! of the new code (those born of it since included) goes back to the old
//! code, from its snapshot at the switch (a child born since, from its
//! own, or fresh), a canary is stopped and its keys go back, and the
//! lineage records the change back. A canary that lasts the watch is
//! promoted: the old instances take the new code, from their snapshots,
//! and the canary stops. Traps are counted per message handled, never by
//! the clock, so a replay settles at the same bar every time. With
//! `fitness_margin`, a `replace` of the population is judged at the end of
//! its watch too: taken back if its variants' mean fitness over the watch
//! fell below theirs over as many bars before the switch by more than the
//! margin ([`Evolver::fitness_fell`]).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::bindings::types::Snapshot;
use crate::bus::Bus;
use crate::config::{DeployConfig, RollbackConfig, Strategy};
use crate::engine::Module;
use crate::loader::deploy::Deploy;
use crate::replication::Evolver;
use crate::runtime::{Runtime, UpgradeError, Upgraded};
use crate::scoring::Scoreboard;

/// What one deploy did.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    /// The bar it took effect before.
    pub bar: usize,
    /// The pipeline module it was for.
    pub module: String,
    /// The new code's `name@version`, if it has a manifest, else its file.
    pub code: String,
    /// sha256 of the new code (empty if it could not be loaded).
    pub digest: String,
    /// Who signed it (key id), if anyone.
    pub signer: Option<String>,
    /// `replace`, `compete` or `canary`.
    pub strategy: &'static str,
    /// The instances it touched, each with what became of it
    /// (`from-snapshot`, `fresh: WHY`, `failed: WHY`, `born`).
    pub instances: Vec<(String, String)>,
    /// `done`, or `refused: WHY` when nothing changed.
    pub outcome: String,
    /// How a watched deploy ended, once it has: taken back or promoted.
    pub settled: Option<Settled>,
}

/// How a watched deploy ended.
#[derive(Debug, Clone, Serialize)]
pub struct Settled {
    /// The bar it took effect before.
    pub bar: usize,
    /// `rolled-back` or `promoted`.
    pub outcome: &'static str,
    /// Why (`4 traps of the new code in 10 bars (rollback.traps 3)`).
    pub why: String,
    /// The instances it touched, each with what became of it, as in
    /// [`DeployReport::instances`] (`stopped` for a canary).
    pub instances: Vec<(String, String)>,
}

impl Settled {
    /// The outcome of a deploy taken back.
    pub const ROLLED_BACK: &'static str = "rolled-back";
    /// The outcome of a canary that lasted its watch.
    pub const PROMOTED: &'static str = "promoted";
}

/// A deploy still under watch: what it takes to go back, or on.
pub struct Rollout {
    /// Index of its report among the run's deploys.
    pub report: usize,
    module: String,
    old: Arc<Module>,
    new: Arc<Module>,
    /// Per instance moved to the new code: its snapshot at the switch.
    switched: Vec<(String, Option<Snapshot>)>,
    /// A canary's instance, and the groups whose rosters it shares.
    canary: Option<(String, Vec<String>)>,
    since: usize,
    rule: RollbackConfig,
}

impl Rollout {
    /// The bar after which the deploy is final.
    fn final_bar(&self) -> usize {
        self.since + self.rule.watch_bars
    }

    /// Instances of the new code now: those switched and those born of it
    /// since (a quarantined one included, which the rollback takes back).
    fn instances<B: Bus>(&self, runtime: &Runtime<B>) -> Vec<String> {
        let mut ids: Vec<String> = self.switched.iter().map(|(id, _)| id.clone()).collect();
        for id in runtime.instances_of(self.new.digest()) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    /// Traps of the new code since the switch: each instance's traps on
    /// the code it runs now, over those running the new code.
    fn traps<B: Bus>(&self, runtime: &Runtime<B>) -> u64 {
        self.instances(runtime)
            .iter()
            .filter_map(|id| runtime.code_of(id))
            .filter(|(code, _)| code.digest() == self.new.digest())
            .map(|(_, traps)| traps)
            .sum()
    }

    /// Stop the canary, if any, and give its groups back to the old
    /// instances.
    fn stop_canary<B: Bus>(&self, runtime: &mut Runtime<B>, touched: &mut Vec<(String, String)>) {
        if let Some((id, groups)) = &self.canary {
            runtime.remove(id);
            for g in groups {
                runtime.bus_mut().set_roster(g, Vec::new());
            }
            touched.push((id.clone(), "stopped".into()));
        }
    }

    /// Take the deploy back: every instance of the new code to the old.
    fn roll_back<B: Bus>(
        &self,
        runtime: &mut Runtime<B>,
        evolver: Option<&mut Evolver>,
        current: &mut Current,
        bar: usize,
        why: String,
    ) -> Settled {
        tracing::warn!(module = %self.module, %why, "rolling back a deploy");
        let mut instances = Vec::new();
        self.stop_canary(runtime, &mut instances);
        for id in self.instances(runtime) {
            let snapshot = match self.switched.iter().find(|(s, _)| *s == id) {
                Some((_, snapshot)) => snapshot.clone(),
                None => runtime.snapshot_of(&id),
            };
            let what = runtime.upgrade_from(&id, self.old.clone(), snapshot);
            instances.push((id, outcome(what)));
        }
        if let Some(ev) = evolver {
            ev.replace_code(self.new.digest(), &self.old, bar);
        }
        current.insert(self.module.clone(), self.old.clone());
        Settled {
            bar,
            outcome: Settled::ROLLED_BACK,
            why,
            instances,
        }
    }

    /// Promote a canary that lasted its watch: the old instances take the
    /// new code, and the canary stops.
    fn promote<B: Bus>(
        &self,
        runtime: &mut Runtime<B>,
        current: &mut Current,
        bar: usize,
    ) -> Settled {
        let mut instances = Vec::new();
        self.stop_canary(runtime, &mut instances);
        for id in runtime.instances_of(self.old.digest()) {
            let what = runtime.upgrade(&id, self.new.clone());
            instances.push((id, outcome(what)));
        }
        current.insert(self.module.clone(), self.new.clone());
        Settled {
            bar,
            outcome: Settled::PROMOTED,
            why: format!(
                "{} traps in {} bars (rollback.traps {})",
                self.traps(runtime),
                self.rule.watch_bars,
                self.rule.traps
            ),
            instances,
        }
    }
}

/// The code each pipeline module runs now, by its pipeline name.
pub type Current = HashMap<String, Arc<Module>>;

/// Apply `deploy` at `bar`: what it did, and for a deploy that can still
/// be taken back, its watch.
pub fn apply<B: Bus>(
    runtime: &mut Runtime<B>,
    evolver: Option<&mut Evolver>,
    current: &mut Current,
    deploy: &Deploy,
    bar: usize,
) -> (DeployReport, Option<Rollout>) {
    let d = &deploy.config;
    let mut report = DeployReport {
        bar,
        module: d.module.clone(),
        code: d.path.display().to_string(),
        digest: String::new(),
        signer: None,
        strategy: d.strategy.as_str(),
        instances: Vec::new(),
        outcome: "done".into(),
        settled: None,
    };
    let code = match deploy.code() {
        Ok(code) => code,
        Err(why) => {
            report.outcome = format!("refused: {why}");
            return (report, None);
        }
    };
    report.digest = code.digest().to_string();
    report.signer = code.signer().map(|(key, _)| key.to_string());
    if let Some(m) = code.manifest() {
        report.code = m.reference();
    }
    let Some(old) = current.get(&d.module).cloned() else {
        report.outcome = format!("refused: the pipeline runs no module `{}`", d.module);
        return (report, None);
    };
    let mut watch = Rollout {
        report: 0,
        module: d.module.clone(),
        old: old.clone(),
        new: code.clone(),
        switched: Vec::new(),
        canary: None,
        since: bar,
        rule: d.rollback,
    };
    let applied = match d.strategy {
        Strategy::Replace => {
            for id in runtime.instances_of(old.digest()) {
                let snapshot = runtime.snapshot_of(&id);
                let what = outcome(runtime.upgrade_from(&id, code.clone(), snapshot.clone()));
                report.instances.push((id.clone(), what));
                watch.switched.push((id, snapshot));
            }
            if let Some(ev) = evolver {
                ev.replace_code(old.digest(), &code, bar);
            }
            current.insert(d.module.clone(), code.clone());
            Ok(())
        }
        Strategy::Compete => compete(runtime, evolver, d, &old, &code, bar, &mut report),
        Strategy::Canary => canary(runtime, d, &old, &code, &mut watch, &mut report),
    };
    if let Err(why) = applied {
        report.outcome = format!("refused: {why}");
        return (report, None);
    }
    let watched = d.strategy != Strategy::Compete
        && old.digest() != code.digest()
        && (d.rollback.traps > 0 || d.rollback.fitness_margin.is_some() || watch.canary.is_some());
    (report, watched.then_some(watch))
}

/// `compete`: new variants of `code` join the population.
fn compete<B: Bus>(
    runtime: &mut Runtime<B>,
    evolver: Option<&mut Evolver>,
    d: &DeployConfig,
    old: &Arc<Module>,
    code: &Arc<Module>,
    bar: usize,
    report: &mut DeployReport,
) -> Result<(), String> {
    let ev = evolver.ok_or("`compete` needs evolution on")?;
    let count = d.variants.unwrap_or_else(|| {
        u32::try_from(runtime.instances_of(old.digest()).len()).unwrap_or(u32::MAX)
    });
    for id in ev.compete(runtime, old.digest(), code, count, bar) {
        report.instances.push((id, "born".into()));
    }
    Ok(())
}

/// `canary`: one instance of `code` takes `share` percent of the keys.
fn canary<B: Bus>(
    runtime: &mut Runtime<B>,
    d: &DeployConfig,
    old: &Arc<Module>,
    code: &Arc<Module>,
    watch: &mut Rollout,
    report: &mut DeployReport,
) -> Result<(), String> {
    let share = d.share.unwrap_or(DeployConfig::CANARY_SHARE);
    if !(1..=99).contains(&share) {
        return Err(format!("a canary's share is 1 to 99 percent, not {share}"));
    }
    let (name, new_name) = (&old.info().name, &code.info().name);
    if name != new_name {
        return Err(format!(
            "a canary must be the same module: the new code is `{new_name}`, the old `{name}`"
        ));
    }
    if !old.takes_shared() {
        return Err(format!(
            "`{name}` takes no shared deliveries, so old and new code would both get every \
             message: deploy it with `replace`, or with `compete` if it is the population"
        ));
    }
    let olds = runtime.instances_of(old.digest());
    let first = olds.first().ok_or("no instance of the old code runs")?;
    let id = format!("{first}.canary");
    let what = runtime
        .spawn_like(&id, first, code.clone())
        .map_err(|e| e.to_string())?;
    report.instances.push((id.clone(), outcome(Ok(what))));
    // Of 100 places, `share` are the canary's; the old instances share
    // the rest in turn.
    let roster = crate::bus::canary_roster(&id, share, &olds);
    let groups = vec![name.clone()];
    for g in &groups {
        runtime.bus_mut().set_roster(g, roster.clone());
    }
    watch.switched.push((id.clone(), None));
    watch.canary = Some((id, groups));
    Ok(())
}

/// An upgrade's outcome as a report says it.
fn outcome(upgraded: Result<Upgraded, UpgradeError>) -> String {
    match upgraded {
        Ok(Upgraded::FromSnapshot) => "from-snapshot".to_string(),
        Ok(Upgraded::Fresh(why)) => format!("fresh: {why}"),
        Ok(Upgraded::Failed(why)) => format!("failed: {why}"),
        Err(e) => format!("failed: {e}"),
    }
}

/// After bar `bar`: take back each watched deploy whose new code trapped
/// too often, promote each canary that lasted its watch, let go of the
/// other deploys now final, and note each ending in its report.
pub fn watch<B: Bus>(
    runtime: &mut Runtime<B>,
    (mut evolver, board): (Option<&mut Evolver>, &Scoreboard),
    current: &mut Current,
    rollouts: &mut Vec<Rollout>,
    reports: &mut [DeployReport],
    bar: usize,
) {
    rollouts.retain(|r| {
        let traps = r.traps(runtime);
        let next = bar + 1;
        let fell = || {
            let margin = r.rule.fitness_margin?;
            let ids: Vec<String> = r.switched.iter().map(|(id, _)| id.clone()).collect();
            let ev = evolver.as_deref()?;
            ev.fitness_fell(board, &ids, r.since, r.rule.watch_bars, margin)
        };
        let settled = if r.rule.traps > 0 && traps >= r.rule.traps {
            let why = format!(
                "{traps} traps of the new code in {} bars (rollback.traps {})",
                next - r.since,
                r.rule.traps
            );
            r.roll_back(runtime, evolver.as_deref_mut(), current, next, why)
        } else if next < r.final_bar() {
            return true;
        } else if r.canary.is_some() {
            r.promote(runtime, current, next)
        } else if let Some(why) = fell() {
            r.roll_back(runtime, evolver.as_deref_mut(), current, next, why)
        } else {
            return false;
        };
        if let Some(report) = reports.get_mut(r.report) {
            report.settled = Some(settled);
        }
        false
    });
}
