//! What runs in a garden of daemons, as one daemon knows it, and how it
//! follows the leader's decision log.
//!
//! A canary across daemons is one more wanted instance, of the new code,
//! and a change of its group's roster at the deploy's position: from there
//! it takes its share of the keys, and from the position of the module's
//! next deploy (its promotion or its rollback) it takes none and stops. The
//! roster is kept per position ([`Bus::set_roster_history`]), so every
//! daemon splits each entry's key alike, whenever it learns of the deploy.
//!
//! Per-key order across the hand-over: a key that moves to the canary at
//! `at` may still have messages before `at` at its old member, perhaps on
//! another daemon. So the canary takes nothing until every old member has
//! handled all it had before `at` (asked of Redis: [`Bus::passed_by`]),
//! and at its end the old members hold at `until` until the canary has
//! handled all it had before `until`. Each key is handled by one instance
//! at a time, in stream order.

use std::collections::HashSet;
use std::sync::Arc;

use super::deploys::Deployer;
use garden_host::bus::{Bus, RedisBus};
use garden_host::cluster::{self, Decision, DeployOrder, Follower, Membership, Rollout};
use garden_host::records::Recorder;
use garden_host::replication::LineageRecord;
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
    /// Every canary deployed, ended ones included (their roster changes
    /// stay, for entries still to read).
    pub(super) canaries: Vec<Canary>,
    /// Variants born on a deploy's code still loading here.
    pub(super) unborn: Vec<LineageRecord>,
    /// Canaries started here that wait for the old members to pass their
    /// position.
    pub(super) held_canaries: Vec<String>,
    /// Old members held at a canary's end until the canary has passed it.
    pub(super) gates: Vec<Gate>,
    /// When the gates are next asked about (each look is a few Redis
    /// commands).
    pub(super) next_gate_check: std::time::Instant,
}

/// An old member held at a canary's end, `until`, while the canary
/// handles what it has before. When the gate opens, a deploy that switches
/// the member there does so; with none (a rollback, or new code refused
/// here), the member is let go on its code.
pub(super) struct Gate {
    old: String,
    canary: String,
    group: String,
    until: u64,
}

/// How often held canaries and gates are asked about.
const GATE_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// A canary: one instance of new code taking `share` percent of a
/// module's keys from bus position `at` until `until`.
pub(super) struct Canary {
    /// The pipeline module.
    module: String,
    /// Its subscribing group (the module's name in its component).
    group: String,
    id: String,
    /// The old code's instance it starts from (its snapshot).
    parent: String,
    digest: String,
    share: u8,
    at: u64,
    until: Option<u64>,
    /// Its instance has stopped here, or never ran here.
    gone: bool,
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
                    if self.loading(&record) {
                        self.unborn.push(record);
                        continue;
                    }
                    self.want_born(&record, &format!("born in term {term}"));
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
                    let begun =
                        self.deployer
                            .begin(order.clone(), old.clone(), known, cohort, m, runtime);
                    if let Some(line) = begun {
                        self.refused_deploys.push(line);
                    }
                    // After the deploy took its holds: the old members
                    // hold at a canary's end too, until it passed it.
                    self.end_canary(&order, runtime);
                    if let (Rollout::Canary { share, .. }, Some(old)) = (order.rollout, &old) {
                        self.start_canary(&order, old, share);
                    }
                    // A canary's roster change takes effect at once, not at
                    // the next placement: the bus may read past its
                    // position before then.
                    self.set_rosters(runtime);
                }
                Decision::Leader { .. } | Decision::Stepped { .. } | Decision::Recode { .. } => {}
            }
        }
    }

    /// Whether `record` is born on code a deploy here is still loading:
    /// it starts once the code is ready.
    fn loading(&self, record: &LineageRecord) -> bool {
        !self.modules.iter().any(|m| m.digest() == record.component)
            && self.deployer.loading(&record.component)
    }

    /// A canary deploy: its instance joins the garden once its code is
    /// ready here, and its group's roster gives it its share from `at`.
    fn start_canary(&mut self, order: &DeployOrder, old: &Module, share: u8) {
        let Some((first, _)) = self
            .wanted
            .iter()
            .find(|(s, _)| s.module.digest() == old.digest())
        else {
            eprintln!("no instance of {} runs: no canary", order.module);
            return;
        };
        let id = format!(
            "{}.canary-{}",
            first.id,
            &order.digest[..8.min(order.digest.len())]
        );
        eprintln!(
            "canary {id} takes {share}% of {}'s keys from position {}",
            order.module, order.at
        );
        self.canaries.push(Canary {
            module: order.module.clone(),
            group: old.info().name.clone(),
            parent: first.id.clone(),
            id,
            digest: order.digest.clone(),
            share,
            at: order.at,
            until: None,
            gone: false,
        });
    }

    /// A later deploy of a canary's module (its promotion, its rollback
    /// or other code) ends it at that deploy's position: it handles its
    /// keys' messages from before and stops once it has read past it. It
    /// is not held there: a broadcast past its end may come before its
    /// last keyed message, and it must still take that one.
    fn end_canary(&mut self, order: &DeployOrder, runtime: &mut Runtime<RedisBus>) {
        let olds = self.base_members();
        for c in self
            .canaries
            .iter_mut()
            .filter(|c| c.module == order.module && c.until.is_none())
        {
            eprintln!("canary {} ends at position {}", c.id, order.at);
            c.until = Some(order.at);
            self.deployer.waiting = true;
            for (group, ids) in &olds {
                for old in ids.iter().filter(|_| *group == c.group) {
                    if runtime.hold(old, Some(order.at)) {
                        self.gates.push(Gate {
                            old: old.clone(),
                            canary: c.id.clone(),
                            group: group.clone(),
                            until: order.at,
                        });
                    }
                }
            }
        }
    }

    /// Let a held canary go once the old members passed its position, and
    /// an old member once the canary passed its end; the members still
    /// held at a gate.
    fn open_gates(&mut self, runtime: &mut Runtime<RedisBus>) -> Vec<String> {
        if !self.held_canaries.is_empty() || !self.gates.is_empty() {
            self.deployer.waiting = true;
        }
        if std::time::Instant::now() < self.next_gate_check {
            return self.gates.iter().map(|g| g.old.clone()).collect();
        }
        self.next_gate_check = std::time::Instant::now() + GATE_CHECK;
        let olds = self.base_members();
        let mut held = std::mem::take(&mut self.held_canaries);
        held.retain(|id| {
            let Some(c) = self.canaries.iter().find(|c| c.id == *id) else {
                return false;
            };
            let members = olds
                .iter()
                .find(|(g, _)| *g == c.group)
                .map_or(&[][..], |(_, ids)| ids.as_slice());
            if !runtime.bus_mut().passed_by(&c.group, members, c.at) {
                return true;
            }
            eprintln!("canary {id} takes its keys: the old members passed its position");
            runtime.hold(id, None);
            false
        });
        self.held_canaries = held;
        let mut gates = std::mem::take(&mut self.gates);
        gates.retain(|g| {
            let canary = std::slice::from_ref(&g.canary);
            if !runtime.bus_mut().passed_by(&g.group, canary, g.until) {
                return true;
            }
            let switching = runtime
                .code_of(&g.old)
                .is_some_and(|(code, _)| self.deployer.replacing(code.digest()));
            if !switching {
                runtime.hold(&g.old, None);
            }
            false
        });
        self.gates = gates;
        self.gates.iter().map(|g| g.old.clone()).collect()
    }

    /// Each shared subscribing group's members, canaries left out, in
    /// plan order.
    fn base_members(&self) -> Vec<(String, Vec<String>)> {
        let mut rosters: Vec<(String, Vec<String>)> = Vec::new();
        for (spec, _) in &self.wanted {
            if self.canaries.iter().any(|c| c.id == spec.id) {
                continue;
            }
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
        rosters
    }

    /// Stop the ended canaries that reached their end here; take those
    /// that run elsewhere (or nowhere) out of the garden.
    fn stop_canaries(&mut self, runtime: &mut Runtime<RedisBus>) -> Vec<String> {
        let mut audit = Vec::new();
        let running: HashSet<String> = runtime.instances().into_iter().map(|i| i.id).collect();
        for c in self
            .canaries
            .iter_mut()
            .filter(|c| c.until.is_some() && !c.gone)
        {
            if running.contains(&c.id) {
                let quarantined = !runtime.quarantined_of(&c.digest).is_empty();
                let ended = c.until.is_some_and(|u| runtime.drained_to(&c.id, u));
                if !ended && !quarantined {
                    // Not read past its end yet: its keys may have more.
                    self.deployer.waiting = true;
                    continue;
                }
                // Its outputs out first; then its groups go, so the old
                // members' gates see it done.
                runtime.bus_mut().pump();
                runtime.bus_mut().forget_groups(&c.id);
                runtime.remove(&c.id);
                audit.push(format!("canary {} of {} stopped here", c.id, c.module));
            }
            c.gone = true;
            self.wanted.retain(|(s, _)| s.id != c.id);
        }
        audit
    }

    /// Carry deploys on between rounds: switch what waits at its hold, and
    /// once new code is ready, start the old code's instances on it
    /// wherever they are placed from now on (a canary's or a compete's
    /// code: its instance or its variants join).
    pub(super) fn switch(&mut self, runtime: &mut Runtime<RedisBus>) -> Vec<String> {
        let gated = self.open_gates(runtime);
        let (ready, refused) = self.deployer.step(runtime, &gated);
        let mut audit = refused;
        audit.extend(self.stop_canaries(runtime));
        for r in ready {
            if !self.modules.iter().any(|m| m.digest() == r.new.digest()) {
                self.modules.push(r.new.clone());
            }
            // What the audit log keeps of it: the code, who signed it, how
            // it takes over.
            let what = format!(
                "deploy of {} to {} ({}, signed by {})",
                r.new.label(),
                r.module,
                r.rollout,
                r.new.signer().map_or_else(
                    || "nobody".to_string(),
                    |(key, name)| format!("{name} {key}")
                )
            );
            match r.rollout {
                Rollout::Replace => {}
                Rollout::Canary { .. } => {
                    self.add_canary(&r.new);
                    audit.push(format!("{what}: ready here, its canary joins"));
                    continue;
                }
                Rollout::Compete { .. } => {
                    self.born_on(r.new.digest());
                    audit.push(format!("{what}: ready here, its variants compete"));
                    continue;
                }
            }
            for (spec, _) in &mut self.wanted {
                if spec.module.digest() == r.old.digest() {
                    spec.module = r.new.clone();
                }
            }
            if let Some(c) = self.current.iter_mut().find(|(n, ..)| *n == r.module) {
                c.1 = r.new.clone();
            }
            audit.push(format!("{what}: ready here, replacing {}", r.old.label()));
        }
        audit
    }

    /// The canary of code `new`, if it has not ended, joins the garden.
    fn add_canary(&mut self, new: &Arc<Module>) {
        let Some(c) = self
            .canaries
            .iter()
            .find(|c| c.digest == new.digest() && c.until.is_none())
        else {
            return;
        };
        let Some((parent, _)) = self.wanted.iter().find(|(s, _)| s.id == c.parent) else {
            return;
        };
        let spec = InstanceSpec {
            id: c.id.clone(),
            module: new.clone(),
            params: parent.params.clone(),
            settings: parent.settings.clone(),
            snapshot: None,
        };
        if !self.wanted.iter().any(|(s, _)| s.id == c.id) {
            self.wanted.push((spec, Some(c.parent.clone())));
        }
    }

    /// Variants born on code `digest` while it loaded join the garden.
    fn born_on(&mut self, digest: &str) {
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unborn)
            .into_iter()
            .partition(|r| r.component == digest);
        self.unborn = later;
        for record in now {
            self.want_born(&record, "born on new code");
        }
    }

    /// A variant born by decision joins the garden (it starts from its
    /// first parent's snapshot).
    fn want_born(&mut self, record: &LineageRecord, how: &str) {
        match cluster::variant_of(record, &self.modules) {
            Ok((module, params)) => {
                eprintln!(
                    "{how}: {} (parents {})",
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

    /// Every shared subscribing group's roster: the garden's members of
    /// it in plan order (so each key goes to the same member on every
    /// daemon), with each canary's share from its position to its end.
    fn set_rosters(&self, runtime: &mut Runtime<RedisBus>) {
        for (group, ids) in self.base_members() {
            let mut versions = vec![(0, ids.clone())];
            for c in self.canaries.iter().filter(|c| c.group == group) {
                versions.push((c.at, garden_host::bus::canary_roster(&c.id, c.share, &ids)));
                if let Some(until) = c.until {
                    versions.push((until, ids.clone()));
                }
            }
            if versions.len() == 1 {
                runtime.bus_mut().set_roster(&group, ids);
            } else {
                runtime.bus_mut().set_roster_history(&group, versions);
            }
        }
    }

    /// Start what belongs here and is not running; hand over what runs here
    /// and now belongs elsewhere (with its latest snapshot), with the
    /// rosters set first.
    pub(super) fn place(
        &mut self,
        name: &str,
        live: &[String],
        runtime: &mut Runtime<RedisBus>,
        m: &mut Membership,
    ) {
        self.set_rosters(runtime);
        let running: Vec<String> = runtime.instances().into_iter().map(|i| i.id).collect();
        let mut started: Vec<String> = Vec::new();
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
                started.push(id.clone());
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
        // A canary takes nothing until the old members have passed its
        // position (`open_gates`).
        for id in started {
            if self
                .canaries
                .iter()
                .any(|c| c.id == id && c.until.is_none())
            {
                runtime.hold(&id, Some(0));
                self.held_canaries.push(id);
                self.deployer.waiting = true;
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
