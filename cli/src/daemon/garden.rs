//! What runs in a garden of daemons, as one daemon knows it, and how it
//! follows the leader's decision log.

use std::collections::HashSet;
use std::sync::Arc;

use super::deploys::Deployer;
use garden_host::bus::{Bus, RedisBus};
use garden_host::cluster::{self, Decision, Follower, Membership};
use garden_host::records::Recorder;
use garden_host::runtime::InstanceState;
use garden_host::{InstanceSpec, Module, Runtime};

/// What runs in the whole garden, as this daemon knows it: the plan, plus
/// the variants born by decision, minus those retired.
pub(super) struct Garden {
    /// Each instance, with the parent whose snapshot a child starts from.
    pub(super) wanted: Vec<(InstanceSpec, Option<String>)>,
    pub(super) retired: HashSet<String>,
    /// The population's settings, for children.
    pub(super) settings: Vec<garden_host::types::Setting>,
    /// The loaded modules, for children (found by digest).
    pub(super) modules: Vec<Arc<Module>>,
    pub(super) follower: Follower,
    /// The code each pipeline module runs now, and how many variants one
    /// of its instances carries.
    pub(super) current: Vec<(String, Arc<Module>, u32)>,
    /// Deploys as they stand here.
    pub(super) deployer: Deployer,
    /// Deploys refused here since the last heartbeat, to audit.
    pub(super) refused_deploys: Vec<String>,
}

impl Garden {
    /// Read the decision log and carry out what is new: births join the
    /// garden, retirements leave it (closed by whichever daemon runs them).
    pub(super) fn follow(&mut self, m: &mut Membership, runtime: &mut Runtime<RedisBus>) {
        let decisions = match self.follower.poll(m) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("could not read the decision log ({e})");
                return;
            }
        };
        let here: HashSet<String> = runtime.instances().into_iter().map(|i| i.id).collect();
        for d in decisions {
            match d {
                Decision::Birth { record, term } => {
                    if self.retired.contains(&record.id)
                        || self.wanted.iter().any(|(s, _)| s.id == record.id)
                    {
                        continue;
                    }
                    match cluster::variant_of(&record, &self.modules) {
                        Ok((module, params)) => {
                            eprintln!(
                                "born in term {term}: {} (parents {})",
                                record.id,
                                record.parents.join(", ")
                            );
                            self.wanted.push((
                                InstanceSpec {
                                    id: record.id.clone(),
                                    module,
                                    params,
                                    settings: self.settings.clone(),
                                    snapshot: None,
                                },
                                record.parents.first().cloned(),
                            ));
                        }
                        Err(e) => eprintln!("cannot start a born variant: {e}"),
                    }
                }
                Decision::Retire { record, time, term } => {
                    self.retired.insert(record.id.clone());
                    self.wanted.retain(|(s, _)| s.id != record.id);
                    if here.contains(&record.id) {
                        eprintln!(
                            "retiring {} (term {term}): {}",
                            record.id,
                            record.death_cause.as_deref().unwrap_or("")
                        );
                        runtime.retire(&record.id, time);
                        let _ = m.forget_snapshot(&record.id);
                    }
                }
                Decision::Deploy { order, term } => {
                    eprintln!(
                        "{} in term {term}: sha256:{} to {}, asked by {}",
                        order.reason, order.digest, order.module, order.by
                    );
                    let found = self.current.iter().find(|(n, ..)| *n == order.module);
                    let (old, cohort) = found.map_or((None, 1), |(_, m, c)| (Some(m.clone()), *c));
                    let known = self
                        .modules
                        .iter()
                        .find(|k| k.digest() == order.digest)
                        .cloned();
                    if let Some(line) = self.deployer.begin(order, old, known, cohort, m, runtime) {
                        self.refused_deploys.push(line);
                    }
                }
                Decision::Leader { .. } | Decision::Stepped { .. } => {}
            }
        }
    }

    /// Carry deploys on between rounds: switch what waits at its hold, and
    /// once new code is ready, start the old code's instances on it
    /// wherever they are placed from now on.
    pub(super) fn switch(&mut self, runtime: &mut Runtime<RedisBus>) -> Vec<String> {
        let (ready, refused) = self.deployer.step(runtime);
        let mut audit = refused;
        for r in ready {
            for (spec, _) in &mut self.wanted {
                if spec.module.digest() == r.old.digest() {
                    spec.module = r.new.clone();
                }
            }
            if !self.modules.iter().any(|m| m.digest() == r.new.digest()) {
                self.modules.push(r.new.clone());
            }
            if let Some(c) = self.current.iter_mut().find(|(n, ..)| *n == r.module) {
                c.1 = r.new.clone();
            }
            audit.push(format!(
                "deploy of {} to {}: ready here, replacing {}",
                r.new.label(),
                r.module,
                r.old.label()
            ));
        }
        audit
    }

    /// Start what belongs here and is not running; hand over what runs here
    /// and now belongs elsewhere (with its latest snapshot). Every shared
    /// subscribing group's roster is the garden's members of it, in plan
    /// order, so each key goes to the same member on every daemon.
    pub(super) fn place(
        &self,
        name: &str,
        live: &[String],
        runtime: &mut Runtime<RedisBus>,
        m: &mut Membership,
    ) {
        let mut rosters: Vec<(String, Vec<String>)> = Vec::new();
        for (spec, _) in &self.wanted {
            let info = spec.module.info();
            let shares = info
                .subscribes
                .iter()
                .any(|s| s.delivery == garden_host::types::Delivery::Shared && !s.addressed);
            if !shares {
                continue;
            }
            match rosters.iter_mut().find(|(g, _)| *g == info.name) {
                Some((_, ids)) => ids.push(spec.id.clone()),
                None => rosters.push((info.name.clone(), vec![spec.id.clone()])),
            }
        }
        for (group, ids) in rosters {
            runtime.bus_mut().set_roster(&group, ids);
        }
        let running: Vec<String> = runtime.instances().into_iter().map(|i| i.id).collect();
        for (spec, parent) in &self.wanted {
            let mine = cluster::owner(&spec.id, live) == Some(name);
            let here = running.contains(&spec.id);
            if mine && !here {
                let mut spec = spec.clone();
                // Its own latest state if it ran elsewhere before, else
                // its parent's.
                let cap = spec.module.limits().max_snapshot_bytes;
                let from = |id: &str, m: &mut Membership| m.snapshot(id, cap).ok().flatten();
                spec.snapshot =
                    from(&spec.id, m).or_else(|| parent.as_deref().and_then(|p| from(p, m)));
                eprintln!(
                    "starting {}{}",
                    spec.id,
                    if spec.snapshot.is_some() {
                        " from its snapshot"
                    } else {
                        ""
                    }
                );
                let id = spec.id.clone();
                let fresh = InstanceSpec {
                    snapshot: None,
                    ..spec.clone()
                };
                let from_snapshot = spec.snapshot.is_some();
                if let Err(e) = runtime.spawn(spec) {
                    eprintln!("could not start {id}: {e}");
                    continue;
                }
                // A kept snapshot the module refuses (damaged, or from a
                // version it does not read) must not cost the instance:
                // it starts fresh instead.
                if from_snapshot
                    && let Some((state, error)) = runtime.state_of(&id)
                    && !matches!(state, InstanceState::Running)
                {
                    eprintln!(
                        "{id} refused its snapshot ({}); starting it fresh",
                        error.as_deref().unwrap_or("no reason given")
                    );
                    runtime.remove(&id);
                    if let Err(e) = runtime.spawn(fresh) {
                        eprintln!("could not start {id}: {e}");
                    }
                }
            } else if !mine && here {
                eprintln!("handing {} over", spec.id);
                if let Some(s) = runtime.snapshot_of(&spec.id) {
                    let _ = m.save_snapshots(&[(spec.id.clone(), s)]);
                }
                runtime.remove(&spec.id);
            }
        }
    }
}

/// Hand the lineage records decisions changed to the recorder, if there is
/// one (every daemon with a store writes them; newer ones win).
pub(super) fn persist_lineage(follower: &mut Follower, recorder: Option<&Recorder>) {
    let changed = follower.take_changed();
    if let Some(r) = recorder {
        // A record that does not encode is left out and said, never
        // stored as an empty one.
        r.lineage(
            changed
                .into_iter()
                .filter_map(|(at, rec)| match serde_json::to_string(&rec) {
                    Ok(json) => Some((rec.id, at, json)),
                    Err(e) => {
                        eprintln!(
                            "lineage record {} not stored: it does not encode ({e})",
                            rec.id
                        );
                        None
                    }
                })
                .collect(),
        );
    }
}
