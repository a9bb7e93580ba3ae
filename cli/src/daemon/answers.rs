//! The leader's answers to deploy requests, and the deploys it decides on
//! its own: a rollback of new code that traps, a canary's promotion.
//!
//! Invariant: every deploy is a fenced decision in the log, placed two
//! heartbeats ahead on Redis's clock (at once for a daemon alone, which
//! follows it before it reads on), so every daemon switches at one point
//! of the streams; a request is answered at most once.

use garden_host::cluster::{
    self, Decision, DeployOrder, FitnessRule, InstanceStatus, Rollout, Unfit,
};
use garden_host::config::RollbackConfig;

use super::Daemon;

/// A deploy to decide: what, and who asked and why.
struct Deciding<'a> {
    module: &'a str,
    digest: &'a str,
    request: &'a str,
    by: &'a str,
    reason: &'a str,
}

impl Daemon {
    /// The leader's answer to deploy requests: each one a trusted daemon
    /// key signed, for a module of the pipeline, whose code is in Redis and
    /// verifies here, becomes a deploy decision, with the position every
    /// daemon switches at two heartbeats ahead on Redis's clock (time for
    /// each to read it and load the code). Others are refused and audited.
    pub(super) fn answer_requests(&mut self) {
        let Some(term) = self.status.leader_term else {
            return;
        };
        let after = self
            .requests_after
            .clone()
            .or_else(|| self.garden.follower.last_answered().map(str::to_string))
            .unwrap_or_else(|| "0".into());
        let (requests, refused) = match self.membership.deploy_requests(&after) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("could not read the deploy requests ({e})");
                return;
            }
        };
        for r in &refused {
            self.status.refused += 1;
            let detail = format!("{}: {}", r.entry, r.reason);
            eprintln!("refused a deploy request {detail}");
            self.watch
                .audit()
                .record("refused-entry", r.kind, &self.name, &detail);
        }
        let last = refused
            .iter()
            .map(|r| r.entry.clone())
            .chain(requests.iter().map(|r| r.id.clone()))
            .max_by_key(|id| garden_host::bus::redis::entry_position(id));
        if let Some(last) = last {
            self.requests_after = Some(last);
        }
        for r in requests {
            if self.garden.follower.answered(&r.id) {
                continue;
            }
            let (digest, reason) = match &r.digest {
                Some(d) => (Ok(d.clone()), DeployOrder::DEPLOY.to_string()),
                None => (
                    self.previous_code(&r.module),
                    format!("{}: asked", DeployOrder::ROLLBACK),
                ),
            };
            let decided = digest.and_then(|digest| {
                if r.digest.is_some() {
                    self.check_code(&r.module, &digest, r.downgrade)?;
                    self.check_rollout(&r.module, r.rollout, r.fitness.is_some())?;
                }
                let order = Deciding {
                    module: &r.module,
                    digest: &digest,
                    request: &r.id,
                    by: &r.by.to_string(),
                    reason: &reason,
                };
                self.decide_deploy(term, &order, (r.rollout, r.fitness))
            });
            if let Err(detail) = decided {
                let line = format!(
                    "refused the request {} ({} of {}, by {}): {detail}",
                    r.id,
                    r.digest.as_deref().map_or_else(
                        || "rollback".to_string(),
                        |d| format!("deploy sha256:{d}, {}", r.rollout)
                    ),
                    r.module,
                    r.by
                );
                eprintln!("{line}");
                self.watch
                    .audit()
                    .record("deploy-refused", "leader", &self.name, &line);
            }
        }
    }

    /// The leader's watch over deploys: new code that traps is rolled
    /// back, a canary past its watch promoted.
    pub(super) fn watch_deploys(&mut self) {
        let Some(term) = self.status.leader_term else {
            return;
        };
        self.roll_back_failing(term);
        self.promote_canaries(term);
    }

    /// Log a deploy of `digest` to `module`, switching two heartbeats
    /// ahead on Redis's clock (time for every daemon to read it and load
    /// the code), and follow it at once.
    fn decide_deploy(
        &mut self,
        term: u64,
        a: &Deciding,
        (rollout, fitness): (Rollout, Option<FitnessRule>),
    ) -> Result<(), String> {
        let now = self
            .membership
            .clock_position()
            .map_err(|e| format!("cannot read Redis's clock ({e})"))?;
        // Others need time to read the decision, load the code and hold at
        // its position; a daemon alone follows it at once, before it reads
        // on, and needs no time when the code is loaded or compiled here.
        let alone = self.live.iter().all(|d| *d == self.name);
        let ready = self.garden.modules.iter().any(|m| m.digest() == a.digest)
            || self.garden.deployer.engine.is_compiled(a.digest);
        let lead = if alone && ready {
            0
        } else {
            u64::try_from(2 * self.membership.interval().as_millis()).unwrap_or(u64::MAX)
        };
        let order = DeployOrder {
            module: a.module.to_string(),
            digest: a.digest.to_string(),
            at: now.saturating_add(lead << 16),
            request: a.request.to_string(),
            by: a.by.to_string(),
            reason: a.reason.to_string(),
            rollout,
            fitness,
        };
        match self.membership.log(term, &Decision::Deploy { term, order }) {
            Ok(true) => {
                self.garden.follow(&mut self.membership, &mut self.runtime);
                Ok(())
            }
            Ok(false) => Err("a newer leader exists: it answers".into()),
            Err(e) => Err(format!("could not log it ({e})")),
        }
    }

    /// The code `module` ran before its latest deploy: the pipeline's, or
    /// an earlier deploy's.
    fn previous_code(&self, module: &str) -> Result<String, String> {
        let first = self
            .plan
            .iter()
            .find(|p| p.name == module)
            .map(|p| p.spec.module.digest().to_string())
            .ok_or_else(|| format!("the pipeline runs no module `{module}`"))?;
        // A deploy goes on the stack of codes; a rollback takes one off;
        // a promotion keeps the canary's, there already.
        let mut history = vec![first];
        for d in self.garden.follower.deploys() {
            if d.module != module || d.is_promotion() {
                continue;
            }
            if !d.is_rollback() {
                history.push(d.digest.clone());
            } else if history.len() > 1 {
                history.pop();
            }
        }
        if history.len() < 2 {
            return Err(format!(
                "`{module}` was never deployed to: nothing to roll back"
            ));
        }
        Ok(history[history.len() - 2].clone())
    }

    /// The leader takes a module back to the code it ran before when the
    /// code of its latest deploy traps [`RollbackConfig::TRAPS`] times
    /// over the garden's instances, or gets one quarantined: what the
    /// heartbeats say.
    fn roll_back_failing(&mut self, term: u64) {
        // New code that competes is judged by selection: a trap there
        // quarantines a variant, which the engine replaces.
        let latest = self.latest_deploys();
        for d in latest
            .iter()
            .filter(|d| !d.is_rollback() && !matches!(d.rollout, Rollout::Compete { .. }))
        {
            let prefix = &d.digest[..12.min(d.digest.len())];
            let on_it: Vec<&InstanceStatus> = self
                .view
                .iter()
                .flat_map(|s| &s.instances)
                .filter(|i| i.code.ends_with(&format!("sha256:{prefix}")))
                .collect();
            let traps: u64 = on_it.iter().map(|i| i.code_traps).sum();
            let quarantined = on_it
                .iter()
                .filter(|i| i.state.starts_with("quarantined"))
                .count();
            if traps < RollbackConfig::TRAPS && quarantined == 0 {
                continue;
            }
            let why = format!(
                "{traps} traps and {quarantined} quarantined of the new code (rollback.traps {})",
                RollbackConfig::TRAPS
            );
            self.roll_back(term, d, &why);
        }
    }

    /// Take deploy `d` back to the code its module ran before, said in the
    /// log and the audit log.
    fn roll_back(&mut self, term: u64, d: &DeployOrder, why: &str) {
        let by = self.membership_key();
        let reason = format!("{}: {why}", DeployOrder::ROLLBACK);
        let decided = self.previous_code(&d.module).and_then(|previous| {
            let order = Deciding {
                module: &d.module,
                digest: &previous,
                request: &d.request,
                by: &by,
                reason: &reason,
            };
            self.decide_deploy(term, &order, (Rollout::Replace, None))
        });
        let prefix = &d.digest[..12.min(d.digest.len())];
        let line = match decided {
            Ok(()) => format!("rolled {} back from sha256:{prefix}: {why}", d.module),
            Err(e) => format!("could not roll {} back: {e}", d.module),
        };
        eprintln!("{line}");
        self.watch
            .audit()
            .record("rolled-back", "leader", &self.name, &line);
    }

    /// The leader's engine found new code doing worse on fitness than the
    /// old by more than its margin: take it back, if it is still the
    /// module's latest deploy.
    pub(super) fn roll_back_unfit(&mut self, term: u64, unfit: Vec<Unfit>) {
        for u in unfit {
            let latest = self.latest_deploys();
            let Some(d) = latest
                .iter()
                .find(|d| d.module == u.module && d.digest == u.digest && !d.is_rollback())
            else {
                continue;
            };
            self.roll_back(term, d, &u.why);
        }
    }

    /// The latest deploy of each module, in log order.
    fn latest_deploys(&self) -> Vec<DeployOrder> {
        let mut by_module: Vec<DeployOrder> = Vec::new();
        for d in self.garden.follower.deploys() {
            by_module.retain(|o| o.module != d.module);
            by_module.push(d.clone());
        }
        by_module
    }

    /// A canary whose watch is over (its bars past the switch) without a
    /// rollback is promoted: a `replace` of the old code by its own.
    fn promote_canaries(&mut self, term: u64) {
        for d in self.latest_deploys() {
            let Rollout::Canary { watch_bars, .. } = d.rollout else {
                continue;
            };
            let watch = usize::try_from(watch_bars).unwrap_or(usize::MAX);
            let seen = match self
                .membership
                .entries_since(&self.topics.bars, d.at, watch)
            {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("could not count the bars of a canary's watch ({e})");
                    continue;
                }
            };
            if seen < watch {
                continue;
            }
            let by = self.membership_key();
            let order = Deciding {
                module: &d.module,
                digest: &d.digest,
                request: &d.request,
                by: &by,
                reason: DeployOrder::PROMOTE,
            };
            let line = match self.decide_deploy(term, &order, (Rollout::Replace, None)) {
                Ok(()) => format!(
                    "promoted the canary of {} (sha256:{}): {watch} bars without a rollback",
                    d.module,
                    &d.digest[..12.min(d.digest.len())]
                ),
                Err(e) => format!("could not promote the canary of {}: {e}", d.module),
            };
            eprintln!("{line}");
            self.watch
                .audit()
                .record("promoted", "leader", &self.name, &line);
        }
    }

    /// A rollout the module can take: a canary needs shared deliveries to
    /// split, a compete the population with evolution on.
    fn check_rollout(&self, module: &str, rollout: Rollout, fitness: bool) -> Result<(), String> {
        let planned = self.plan.iter().find(|p| p.name == module);
        let population = planned.is_some_and(|p| p.population) && self.evolution.enabled;
        if fitness && !(rollout == Rollout::Replace && population) {
            return Err(format!(
                "a fitness rule judges a `replace` of the population (`{module}` is not, or evolution is off)"
            ));
        }
        match rollout {
            Rollout::Replace => Ok(()),
            Rollout::Canary { .. } if !planned.is_some_and(|p| p.spec.module.takes_shared()) => {
                Err(format!(
                    "`{module}` takes no shared deliveries, so old and new code would both get \
                     every message: deploy it with `replace`, or `compete` if it is the population"
                ))
            }
            Rollout::Compete { .. } if !population => Err(format!(
                "`compete` needs `{module}` to be the population and evolution on: deploy it with `replace`"
            )),
            Rollout::Canary { .. } | Rollout::Compete { .. } => Ok(()),
        }
    }

    /// This daemon's key id, as it signs.
    fn membership_key(&self) -> String {
        self.key_file.current().to_string()
    }

    /// The code a request names can be deployed: the module is the
    /// pipeline's, and the code is in Redis and verifies against this
    /// daemon's trust store.
    fn check_code(&mut self, module: &str, digest: &str, downgrade: bool) -> Result<(), String> {
        let Some((_, running, _)) = self.garden.current.iter().find(|(n, ..)| n == module) else {
            return Err(format!("the pipeline runs no module `{module}`"));
        };
        let running = running.manifest().map(|m| m.version.clone());
        let bytes = self
            .membership
            .code(digest)
            .map_err(|e| format!("cannot read its code ({e})"))??;
        let trust = &self.garden.deployer.trust;
        let verified = trust
            .store_for(&bytes)
            .verify(&bytes)
            .map_err(|e| format!("its code does not verify here: {e}"))?;
        let found = verified.component.digest.to_hex();
        if found != digest {
            return Err(format!(
                "the code kept under sha256:{digest} is sha256:{found}"
            ));
        }
        let new = &verified.manifest().version;
        match running.and_then(|old| cluster::older(new, &old).then_some(old)) {
            Some(old) if !downgrade => Err(format!(
                "its version {new} is older than the {old} running: a downgrade is deployed only when asked for (`garden deploy --allow-downgrade`)"
            )),
            _ => Ok(()),
        }
    }
}
