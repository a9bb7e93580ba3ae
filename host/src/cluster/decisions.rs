//! The leader's decisions, as written to `{prefix}:decisions` and read back
//! by every daemon (the leader included): one log, one way to change the
//! population.
//!
//! Invariant: a decision is used only if a trusted daemon key signed it
//! (`identity`) and, unless it announces a term, only if the key that
//! announced its term signed it; anything else is refused and reported,
//! and never moves the follower's term, lineage or position in the bars.

use std::collections::HashMap;
use std::sync::Arc;

use crate::bindings::types::Param;
use crate::bus::redis::{Fields, entry_position};
use crate::engine::Module;
use crate::genes::typed;
use crate::replication::LineageRecord;

use super::Membership;
use super::identity::EntryRefused;
use garden_trust::KeyId;

/// An entry a reader did not use, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Where it was: a stream entry id, or the heartbeat's key.
    pub entry: String,
    /// What it claimed to be (`decision`, `heartbeat`).
    pub kind: &'static str,
    /// Why it was refused.
    pub reason: EntryRefused,
}

/// Decisions read from the log per request while catching up.
const DECISIONS_PER_READ: usize = 1000;

/// One entry of the decision log.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// A daemon took the lease for a new term.
    Leader {
        /// The term.
        term: u64,
        /// The new leader.
        daemon: String,
    },
    /// A variant is born: start it (on the daemon it belongs on).
    Birth {
        /// The term it was decided in.
        term: u64,
        /// Who it is: id, code, genes, parents.
        record: LineageRecord,
    },
    /// A variant is retired: close what it holds and stop it.
    Retire {
        /// The term it was decided in.
        term: u64,
        /// Its life, death included.
        record: LineageRecord,
        /// Event time of the retirement.
        time: i64,
    },
    /// The leader has run selection after every bar up to `bar`: a new
    /// leader goes on from the next.
    Stepped {
        /// The term it was decided in.
        term: u64,
        /// The last bar (index in the bar stream) acted on.
        bar: usize,
    },
    /// New code for a module: every daemon pulls it by digest, verifies
    /// it against its own trust store and switches at `at`.
    Deploy {
        /// The term it was decided in.
        term: u64,
        /// What to deploy, where and when.
        order: DeployOrder,
    },
    /// The population's variants took a deploy's code at the bar the
    /// switch fell on: their records, with the change noted.
    Recode {
        /// The term it was decided in.
        term: u64,
        /// Which deploy (its index among the deploys logged).
        deploy: usize,
        /// The records changed.
        records: Vec<LineageRecord>,
    },
}

impl DeployOrder {
    /// The reason of a deploy asked for.
    pub const DEPLOY: &'static str = "deploy";
    /// The reason of a canary's promotion: the leader's `replace` of the
    /// old code by the canary's, once its watch is over.
    pub const PROMOTE: &'static str = "promote";
    /// How the reason of a rollback starts (`rollback: WHY`).
    pub const ROLLBACK: &'static str = "rollback";

    /// Whether it takes a module back rather than giving it new code.
    pub fn is_rollback(&self) -> bool {
        self.reason.starts_with(Self::ROLLBACK)
    }

    /// Whether it promotes a canary (the code is the canary's, already
    /// deployed).
    pub fn is_promotion(&self) -> bool {
        self.reason == Self::PROMOTE
    }
}

/// A deploy as the leader decided it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeployOrder {
    /// The pipeline module (its name in the pipeline file).
    pub module: String,
    /// sha256 of the new code, hex: what every daemon must load.
    pub digest: String,
    /// Bus position (a Redis entry id's time and sequence) from which
    /// every message goes to the new code.
    pub at: u64,
    /// The request it answers (its entry id in `{prefix}:requests`).
    pub request: String,
    /// Who asked: the daemon key that signed the request (or the leader's
    /// own, for a rollback it decided).
    pub by: String,
    /// `deploy`, `promote`, or `rollback: WHY` when it takes a module back
    /// to the code it ran before.
    pub reason: String,
    /// How the new code takes over.
    pub rollout: super::Rollout,
    /// When a `replace` of the population is taken back on fitness.
    pub fitness: Option<super::FitnessRule>,
}

impl Decision {
    /// The fields to log (the fencing script adds the term).
    /// A lineage record that cannot be encoded is an error: the log never
    /// holds an empty record in its place.
    pub fn fields(&self) -> Result<Vec<(&'static str, String)>, serde_json::Error> {
        let json = |r: &LineageRecord| serde_json::to_string(r);
        Ok(match self {
            Decision::Leader { daemon, .. } => {
                vec![("kind", "leader".into()), ("daemon", daemon.clone())]
            }
            Decision::Birth { record, .. } => vec![
                ("kind", "birth".into()),
                ("id", record.id.clone()),
                ("record", json(record)?),
            ],
            Decision::Retire { record, time, .. } => vec![
                ("kind", "retire".into()),
                ("id", record.id.clone()),
                ("time", time.to_string()),
                ("record", json(record)?),
            ],
            Decision::Stepped { bar, .. } => {
                vec![("kind", "stepped".into()), ("bar", bar.to_string())]
            }
            Decision::Deploy { order, .. } => {
                let mut fields = vec![
                    ("kind", "deploy".into()),
                    ("module", order.module.clone()),
                    ("digest", order.digest.clone()),
                    ("at", order.at.to_string()),
                    ("request", order.request.clone()),
                    ("by", order.by.clone()),
                    ("reason", order.reason.clone()),
                    ("rollout", order.rollout.to_string()),
                ];
                if let Some(f) = order.fitness {
                    fields.push(("fitness", f.to_string()));
                }
                fields
            }
            Decision::Recode {
                deploy, records, ..
            } => vec![
                ("kind", "recode".into()),
                ("deploy", deploy.to_string()),
                ("records", serde_json::to_string(records)?),
            ],
        })
    }

    /// Read a logged entry back, or say what is wrong with it.
    pub fn parse(fields: &Fields) -> Result<Decision, String> {
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| format!("decision without `{name}`"))
        };
        let term = get("term")?
            .parse::<u64>()
            .map_err(|e| format!("decision term is not a number: {e}"))?;
        let record = || -> Result<LineageRecord, String> {
            serde_json::from_str(get("record")?)
                .map_err(|e| format!("decision record does not decode: {e}"))
        };
        match get("kind")? {
            "leader" => Ok(Decision::Leader {
                term,
                daemon: get("daemon")?.to_string(),
            }),
            "birth" => Ok(Decision::Birth {
                term,
                record: record()?,
            }),
            "retire" => Ok(Decision::Retire {
                term,
                record: record()?,
                time: get("time")?
                    .parse()
                    .map_err(|e| format!("retirement time is not a number: {e}"))?,
            }),
            "stepped" => Ok(Decision::Stepped {
                term,
                bar: get("bar")?
                    .parse()
                    .map_err(|e| format!("stepped bar is not a number: {e}"))?,
            }),
            "deploy" => Ok(Decision::Deploy {
                term,
                order: DeployOrder {
                    module: get("module")?.to_string(),
                    digest: get("digest")?.to_string(),
                    at: get("at")?
                        .parse()
                        .map_err(|e| format!("deploy position is not a number: {e}"))?,
                    request: get("request")?.to_string(),
                    by: get("by")?.to_string(),
                    reason: get("reason")?.to_string(),
                    // Logged before rollouts had a name: a replace.
                    rollout: match get("rollout") {
                        Ok(r) => r.parse()?,
                        Err(_) => super::Rollout::Replace,
                    },
                    fitness: get("fitness").ok().map(str::parse).transpose()?,
                },
            }),
            "recode" => Ok(Decision::Recode {
                term,
                deploy: get("deploy")?
                    .parse()
                    .map_err(|e| format!("recode deploy is not a number: {e}"))?,
                records: serde_json::from_str(get("records")?)
                    .map_err(|e| format!("recode records do not decode: {e}"))?,
            }),
            other => Err(format!("unknown decision kind `{other}`")),
        }
    }
}

/// The code and parameters of the variant `record` describes, from the
/// loaded `modules` (found by digest: its latest code change's, else its
/// birth code's); genes the record lacks take their defaults.
pub fn variant_of(
    record: &LineageRecord,
    modules: &[Arc<Module>],
) -> Result<(Arc<Module>, Vec<Param>), String> {
    // A deploy may have changed its code since its birth.
    let code = record
        .code_changes
        .last()
        .map_or(&record.component, |(_, digest)| digest);
    let module = modules
        .iter()
        .find(|m| m.digest() == *code)
        .ok_or_else(|| {
            format!(
                "variant {} runs code {code} that this daemon has not loaded; give every daemon the same pipeline",
                record.id
            )
        })?;
    let params = module
        .info()
        .genes
        .iter()
        .map(|g| Param {
            name: g.name.clone(),
            value: typed(
                g,
                record
                    .genes
                    .iter()
                    .find(|(n, _)| *n == g.name)
                    .map_or(g.default, |(_, v)| *v),
            ),
        })
        .collect();
    Ok((module.clone(), params))
}

/// A daemon's reading of the decision log: where it is, and every variant
/// born or retired by a decision so far.
#[derive(Debug, Default)]
pub struct Follower {
    /// The key that announced each term seen.
    leaders: HashMap<u64, KeyId>,
    refused: Vec<Refusal>,
    refused_total: u64,
    after: Option<String>,
    lineage: Vec<LineageRecord>,
    stepped: Option<usize>,
    term: Option<u64>,
    /// Records a decision touched since the last `take_changed`, with the
    /// decision's position in the log.
    changed: Vec<(i64, LineageRecord)>,
    /// Deploy requests a decision answered, in log order.
    answered: Vec<String>,
    /// Every deploy decided, in log order.
    deploys: Vec<DeployOrder>,
    /// Deploys (indices into `deploys`) whose code change the lineage
    /// notes already.
    recoded: Vec<usize>,
}

impl Follower {
    /// The decisions logged since the last call, oldest first. Entries that
    /// do not parse are skipped with a warning.
    pub fn poll(&mut self, m: &mut Membership) -> redis::RedisResult<Vec<Decision>> {
        let mut out = Vec::new();
        loop {
            let after = self.after.as_deref().unwrap_or("0-0");
            let batch = m.decisions(after, DECISIONS_PER_READ)?;
            let Some((last, _)) = batch.last() else {
                return Ok(out);
            };
            self.after = Some(last.clone());
            let purpose = super::decision_purpose(m.prefix());
            for (id, fields) in &batch {
                let decision = match m.peers().verify(&purpose, fields) {
                    Ok(signer) => Decision::parse(fields).map(|d| (d, signer)),
                    Err(reason) => {
                        self.refuse(id, reason);
                        continue;
                    }
                };
                let decision = decision.map(|(d, signer)| self.check_term(id, d, signer));
                match decision {
                    Ok(None) => {}
                    Ok(Some(d)) => {
                        self.note(i64::try_from(entry_position(id)).unwrap_or(i64::MAX), &d);
                        out.push(d);
                    }
                    Err(e) => tracing::warn!(entry = %id, "skipping a decision: {e}"),
                }
            }
        }
    }

    /// A term's decisions count only when signed by the key that announced
    /// the term; `None` when refused.
    fn check_term(&mut self, id: &str, d: Decision, signer: KeyId) -> Option<Decision> {
        let term = match &d {
            Decision::Leader { term, .. } => {
                self.leaders.entry(*term).or_insert(signer);
                *term
            }
            Decision::Birth { term, .. }
            | Decision::Retire { term, .. }
            | Decision::Stepped { term, .. }
            | Decision::Deploy { term, .. }
            | Decision::Recode { term, .. } => *term,
        };
        match self.leaders.get(&term) {
            Some(leader) if leader.matches(&signer) => Some(d),
            leader => {
                let reason = EntryRefused::NotTheLeader {
                    term,
                    signer: signer.to_string(),
                    leader: leader.map_or_else(|| "nobody".into(), |k| k.to_string()),
                };
                self.refuse(id, reason);
                None
            }
        }
    }

    fn refuse(&mut self, id: &str, reason: EntryRefused) {
        tracing::warn!(entry = %id, "refusing a decision: {reason}");
        self.refused_total += 1;
        self.refused.push(Refusal {
            entry: id.to_string(),
            kind: "decision",
            reason,
        });
    }

    /// Decisions refused since the last call, to count and audit.
    pub fn take_refused(&mut self) -> Vec<Refusal> {
        std::mem::take(&mut self.refused)
    }

    /// Decisions refused since this follower started.
    pub fn refused_total(&self) -> u64 {
        self.refused_total
    }

    fn note(&mut self, at: i64, d: &Decision) {
        if let Decision::Stepped { bar, .. } = d {
            self.stepped = self.stepped.max(Some(*bar));
        }
        if let Decision::Leader { term, .. } = d {
            self.term = self.term.max(Some(*term));
        }
        if let Decision::Deploy { order, .. } = d {
            self.answered.push(order.request.clone());
            self.deploys.push(order.clone());
        }
        let records = match d {
            Decision::Birth { record, .. } | Decision::Retire { record, .. } => {
                std::slice::from_ref(record)
            }
            Decision::Recode {
                deploy, records, ..
            } => {
                self.recoded.push(*deploy);
                records.as_slice()
            }
            _ => return,
        };
        for record in records {
            match self.lineage.iter_mut().find(|r| r.id == record.id) {
                Some(r) => *r = record.clone(),
                None => self.lineage.push(record.clone()),
            }
            self.changed.push((at, record.clone()));
        }
    }

    /// The lineage records decisions touched since the last call, each with
    /// its decision's position in the log (higher is newer), to persist.
    pub fn take_changed(&mut self) -> Vec<(i64, LineageRecord)> {
        std::mem::take(&mut self.changed)
    }

    /// Every variant a decision touched, in the order first touched, as
    /// last decided.
    pub fn lineage(&self) -> &[LineageRecord] {
        &self.lineage
    }

    /// The last bar a leader has acted on, if any has.
    pub fn stepped(&self) -> Option<usize> {
        self.stepped
    }

    /// The latest leadership term announced.
    pub fn term(&self) -> Option<u64> {
        self.term
    }

    /// Whether a logged deploy answers request `id` already.
    pub fn answered(&self, id: &str) -> bool {
        self.answered.iter().any(|a| a == id)
    }

    /// Every deploy decided so far, rollbacks included, in log order.
    pub fn deploys(&self) -> &[DeployOrder] {
        &self.deploys
    }

    /// The deploys (indices into [`Follower::deploys`]) whose code change
    /// a leader has noted in the lineage.
    pub fn recoded(&self) -> &[usize] {
        &self.recoded
    }

    /// The last deploy request a logged deploy answers, if any.
    pub fn last_answered(&self) -> Option<&str> {
        self.answered.last().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::BirthCause;

    fn record() -> LineageRecord {
        LineageRecord {
            id: "alpha.9".into(),
            parents: vec!["alpha.2".into()],
            component: "abc".into(),
            blob: "def".into(),
            genes: vec![("fast".into(), 7.0)],
            generation: 2,
            birth_bar: 500,
            death_bar: None,
            birth_cause: BirthCause::Generation,
            death_cause: None,
            fitness: Vec::new(),
            in_sample: None,
            out_of_sample: None,
            control: false,
            fitness_by_label: Vec::new(),
            code_changes: Vec::new(),
        }
    }

    fn logged(d: &Decision, term: u64) -> Fields {
        let mut f = vec![("term".to_string(), term.to_string())];
        f.extend(
            d.fields()
                .expect("encodes")
                .into_iter()
                .map(|(k, v)| (k.to_string(), v)),
        );
        f
    }

    #[test]
    fn decisions_read_back_as_written() {
        let birth = Decision::Birth {
            term: 3,
            record: record(),
        };
        assert_eq!(Decision::parse(&logged(&birth, 3)), Ok(birth));
        let mut dead = record();
        dead.death_bar = Some(900);
        dead.death_cause = Some("selection".into());
        let retire = Decision::Retire {
            term: 4,
            record: dead,
            time: 12,
        };
        assert_eq!(Decision::parse(&logged(&retire, 4)), Ok(retire));
        let deploy = Decision::Deploy {
            term: 5,
            order: DeployOrder {
                module: "alpha-ema".into(),
                digest: "ab".repeat(32),
                at: 1 << 40,
                request: "1700000000000-0".into(),
                by: "daemon-key".into(),
                reason: "deploy".into(),
                rollout: super::super::Rollout::Canary {
                    share: 10,
                    watch_bars: 500,
                },
                fitness: Some(super::super::FitnessRule {
                    watch_bars: 300,
                    margin: -0.25,
                }),
            },
        };
        assert_eq!(Decision::parse(&logged(&deploy, 5)), Ok(deploy));
        let mut moved = record();
        moved.code_changes.push((40, "cd".repeat(32)));
        let recode = Decision::Recode {
            term: 5,
            deploy: 2,
            records: vec![moved.clone(), moved],
        };
        assert_eq!(Decision::parse(&logged(&recode, 5)), Ok(recode));
        for r in ["replace", "compete", "compete 4", "canary 10% watch 500"] {
            let parsed: super::super::Rollout = r.parse().expect("a rollout");
            assert_eq!(parsed.to_string(), r);
        }
        for bad in [
            "canary 0% watch 5",
            "canary 100% watch 5",
            "compete x",
            "swap",
        ] {
            assert!(bad.parse::<super::super::Rollout>().is_err(), "{bad}");
        }
    }

    #[test]
    fn broken_decisions_say_what_is_wrong() {
        let mut f = logged(
            &Decision::Birth {
                term: 1,
                record: record(),
            },
            1,
        );
        f.retain(|(k, _)| k != "record");
        assert_eq!(
            Decision::parse(&f).unwrap_err(),
            "decision without `record`"
        );
        let garbage = vec![
            ("term".to_string(), "1".to_string()),
            ("kind".to_string(), "birth".to_string()),
            ("record".to_string(), "{".to_string()),
        ];
        assert!(
            Decision::parse(&garbage)
                .unwrap_err()
                .starts_with("decision record does not decode")
        );
        let unknown = vec![
            ("term".to_string(), "1".to_string()),
            ("kind".to_string(), "coup".to_string()),
        ];
        assert_eq!(
            Decision::parse(&unknown).unwrap_err(),
            "unknown decision kind `coup`"
        );
    }
}
