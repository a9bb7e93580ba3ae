//! Deploys in a garden of daemons, as one daemon carries them out: each
//! deploy decision's code is pulled by digest, verified against this
//! daemon's own trust store and compiled on a thread of its own; the local
//! instances of the old code meanwhile handle every message before the
//! decision's bus position and stop at it ([`Runtime::hold`]), and each
//! takes the new code there, from its snapshot, with the first message
//! past the hold handled by the new code. So every daemon switches at one
//! point of the streams, and no message is lost or handled twice.
//!
//! A `canary` or `compete` deploy holds nothing: its code is loaded the
//! same way, and the garden adds its instances once it is ready
//! ([`super::garden::Garden::switch`]).
//!
//! Invariant: code that does not verify here is refused here (said in the
//! status and the audit log): the holds are let go and the old code goes
//! on, whatever the other daemons did.

use std::sync::Arc;

use garden_host::bus::RedisBus;
use garden_host::cluster::{DeployOrder, Membership, Rollout};
use garden_host::config::{DeployConfig, RollbackConfig, Strategy};
use garden_host::loader::deploy::Deploy;
use garden_host::{Engine, Module, Runtime, integrity::Trust};

/// One deploy as it stands on this daemon.
pub(super) struct Rolling {
    order: DeployOrder,
    old: Arc<Module>,
    deploy: Option<Deploy>,
    /// Code this daemon has loaded already (a rollback's): no pull.
    known: Option<Arc<Module>>,
    new: Option<Arc<Module>>,
    refused: Option<String>,
    /// A later deploy of the same module took over from this one.
    superseded: bool,
    switched: usize,
}

/// What a daemon needs to carry out deploys.
pub(super) struct Deployer {
    pub(super) engine: Arc<Engine>,
    pub(super) trust: Trust,
    pub(super) rolling: Vec<Rolling>,
    /// A load is going or an instance waits at its hold: worth a look
    /// between rounds, not only at the heartbeat.
    pub(super) waiting: bool,
}

/// What changed when a deploy's code became ready: the old code and the
/// new, for the garden's plan to follow.
pub(super) struct Ready {
    pub(super) module: String,
    pub(super) rollout: Rollout,
    pub(super) old: Arc<Module>,
    pub(super) new: Arc<Module>,
}

impl Deployer {
    /// Take up a deploy decision: pull its code (unless `known`, loaded
    /// here already), start its load and hold the old code's instances
    /// here at its position. `old` is the code the module runs now
    /// (`None`: the pipeline has no such module); `cohort` how many
    /// variants one of its instances carries.
    pub(super) fn begin(
        &mut self,
        order: DeployOrder,
        old: Option<Arc<Module>>,
        known: Option<Arc<Module>>,
        cohort: u32,
        m: &mut Membership,
        runtime: &mut Runtime<RedisBus>,
    ) -> Option<String> {
        let Some(old) = old else {
            return Some(self.refuse(order, None, "the pipeline here runs no such module"));
        };
        // An earlier deploy of the module is over: its holds go.
        for r in self
            .rolling
            .iter_mut()
            .filter(|r| r.order.module == order.module && !r.superseded)
        {
            r.superseded = true;
            for id in runtime.instances_of(r.old.digest()) {
                runtime.hold(&id, None);
            }
        }
        if old.digest() == order.digest {
            return None;
        }
        // Only a replace moves the old code's instances.
        let holds = if order.rollout == Rollout::Replace {
            runtime.instances_of(old.digest())
        } else {
            Vec::new()
        };
        if let Some(known) = known {
            for id in &holds {
                runtime.hold(id, Some(order.at));
            }
            eprintln!(
                "{} of {} to {}: loaded here already; instances hold at position {}",
                order.reason,
                order.module,
                known.label(),
                order.at
            );
            self.waiting = true;
            self.rolling.push(Rolling {
                order,
                old,
                deploy: None,
                known: Some(known),
                new: None,
                refused: None,
                superseded: false,
                switched: 0,
            });
            return None;
        }
        let bytes = match m.code(&order.digest) {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(why)) => return Some(self.refuse(order, Some(old), &why)),
            Err(e) => {
                return Some(self.refuse(order, Some(old), &format!("cannot read it ({e})")));
            }
        };
        let config = DeployConfig {
            at_bar: 0,
            module: order.module.clone(),
            path: format!("sha256:{}", order.digest).into(),
            strategy: Strategy::Replace,
            variants: None,
            share: None,
            rollback: RollbackConfig::default(),
        };
        let deploy = Deploy::start_bytes(
            self.engine.clone(),
            self.trust.clone(),
            config,
            cohort,
            bytes,
            order.digest.clone(),
        );
        for id in &holds {
            runtime.hold(id, Some(order.at));
        }
        eprintln!(
            "deploy of sha256:{} to {} ({}): loading; {} instances of the old code hold at position {}",
            order.digest,
            order.module,
            order.rollout,
            holds.len(),
            order.at
        );
        self.waiting = true;
        self.rolling.push(Rolling {
            order,
            old,
            deploy: Some(deploy),
            known: None,
            new: None,
            refused: None,
            superseded: false,
            switched: 0,
        });
        None
    }

    fn refuse(&mut self, order: DeployOrder, old: Option<Arc<Module>>, why: &str) -> String {
        let line = refusal(&order, why);
        if let Some(old) = old {
            self.rolling.push(Rolling {
                order,
                old,
                deploy: None,
                known: None,
                new: None,
                refused: Some(why.to_string()),
                superseded: false,
                switched: 0,
            });
        }
        line
    }

    /// Between rounds: finish loads, and switch each instance of an old
    /// code that waits at its hold, but those in `gated` (held until a
    /// canary has passed its end). What became ready, and the refusals
    /// (one line each) to audit.
    pub(super) fn step(
        &mut self,
        runtime: &mut Runtime<RedisBus>,
        gated: &[String],
    ) -> (Vec<Ready>, Vec<String>) {
        let (mut ready, mut refused) = (Vec::new(), Vec::new());
        self.waiting = false;
        for r in self.rolling.iter_mut().filter(|r| !r.superseded) {
            if r.new.is_none() && r.refused.is_none() {
                let loaded = match r.known.take() {
                    Some(known) => Ok(known),
                    None => match r.deploy.as_ref().filter(|d| d.ready()) {
                        Some(deploy) => deploy.code(),
                        None => {
                            self.waiting = true;
                            continue;
                        }
                    },
                };
                // A canary splits one module's keys: it must be that module.
                let loaded = loaded.and_then(|new| match r.order.rollout {
                    Rollout::Canary { .. } if new.info().name != r.old.info().name => Err(format!(
                        "a canary must be the same module: the new code is `{}`, the old `{}`",
                        new.info().name,
                        r.old.info().name
                    )),
                    _ => Ok(new),
                });
                match loaded {
                    Ok(new) => {
                        eprintln!("deploy to {}: {} ready", r.order.module, new.label());
                        ready.push(Ready {
                            module: r.order.module.clone(),
                            rollout: r.order.rollout,
                            old: r.old.clone(),
                            new: new.clone(),
                        });
                        r.new = Some(new);
                    }
                    Err(why) => {
                        for id in runtime.instances_of(r.old.digest()) {
                            runtime.hold(&id, None);
                        }
                        refused.push(refusal(&r.order, &why));
                        r.refused = Some(why);
                    }
                }
                r.deploy = None;
            }
            let Some(new) = &r.new else { continue };
            if r.order.rollout != Rollout::Replace {
                continue;
            }
            // Quarantined on the old code, they handle nothing: at once.
            for id in runtime.quarantined_of(r.old.digest()) {
                let snapshot = runtime.snapshot_of(&id);
                match runtime.upgrade_from(&id, new.clone(), snapshot) {
                    Ok(how) => {
                        r.switched += 1;
                        eprintln!("{id}, quarantined, runs {} now ({how:?})", new.label());
                    }
                    Err(e) => eprintln!("{id} could not take the new code: {e}"),
                }
            }
            for id in runtime.instances_of(r.old.digest()) {
                if gated.contains(&id) {
                    self.waiting = true;
                    continue;
                }
                if !runtime.at_hold(&id) {
                    // Placed here since, or not yet at its position.
                    runtime.hold(&id, Some(r.order.at));
                    self.waiting = true;
                    continue;
                }
                match runtime.upgrade(&id, new.clone()) {
                    Ok(how) => {
                        r.switched += 1;
                        eprintln!(
                            "{id} runs {} from position {} ({how:?})",
                            new.label(),
                            r.order.at
                        );
                    }
                    Err(e) => eprintln!("{id} could not take the new code: {e}"),
                }
            }
        }
        (ready, refused)
    }

    /// Whether a `replace` here will still move the instances of code
    /// `digest` (it is not refused or superseded).
    pub(super) fn replacing(&self, digest: &str) -> bool {
        self.rolling.iter().any(|r| {
            r.old.digest() == digest
                && r.order.rollout == Rollout::Replace
                && r.order.digest != digest
                && r.refused.is_none()
                && !r.superseded
        })
    }

    /// Whether code `digest` is a deploy's that is loading here.
    pub(super) fn loading(&self, digest: &str) -> bool {
        self.rolling.iter().any(|r| {
            r.order.digest == digest && r.new.is_none() && r.refused.is_none() && !r.superseded
        })
    }

    /// Each deploy as it stands here, for the heartbeat: an instance
    /// still on the old code waits for its first message past the switch.
    pub(super) fn status(&self, runtime: &Runtime<RedisBus>) -> Vec<String> {
        self.rolling
            .iter()
            .map(|r| {
                let waiting = runtime.instances_of(r.old.digest()).len();
                let what = match (&r.new, &r.refused) {
                    _ if r.superseded => "over: a later deploy took over".to_string(),
                    (_, Some(why)) => format!("refused: {why}"),
                    (Some(new), None) => format!(
                        "{}, {} switched here, {waiting} waiting for a message past the switch",
                        new.label(),
                        r.switched
                    ),
                    (None, None) => format!("loading, {waiting} instances holding"),
                };
                format!(
                    "{} -> sha256:{} at {} ({}, {}): {what}",
                    r.order.module,
                    &r.order.digest[..12.min(r.order.digest.len())],
                    r.order.at,
                    r.order.reason,
                    r.order.rollout
                )
            })
            .collect()
    }
}

/// What a daemon says, to its log and the audit log, of a deploy it
/// refuses.
fn refusal(order: &DeployOrder, why: &str) -> String {
    let line = format!(
        "refused the deploy of sha256:{} to {}: {why}; the old code goes on",
        order.digest, order.module
    );
    eprintln!("{line}");
    line
}
