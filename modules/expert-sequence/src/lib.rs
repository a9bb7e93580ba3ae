//! Micro-expert: a tiny sequence classifier over the last `k` MicroTape
//! tokens (`docs/tape.md`), learning online from realised outcomes.
//!
//! Features of a plan: each of the last `k` tokens by position (`t-1=...`,
//! `t-2=...`) and the whole `k`-gram. For every feature the model counts the
//! plans that won and lost (a plan "won" when its feedback pnl was
//! positive). Its evidence is a smoothed naive-Bayes log-likelihood ratio,
//! averaged over the features so more features do not mean more certainty:
//!
//! ```text
//! llr = (1 / F) · Σ_f ln((wins_f + 1) / (losses_f + 1))
//! ```
//!
//! A feature never seen gives 0. The counts are the model's weights; they
//! are exported as its snapshot (version 1), so a child starts with what its
//! parent learned, and capped at `max-features` (least-seen first out).

use std::collections::{BTreeMap, HashMap, VecDeque};

use garden_sdk::{
    Body, Envelope, Evidence, Gene, Info, InitContext, Module, Outbox, Plan, Snapshot, Subscription,
};

/// Snapshot format version.
const SNAPSHOT_VERSION: u32 = 1;
/// Plans remembered while waiting for their outcome.
const OPEN_CAP: usize = 10_000;

/// The expert's state.
pub struct Sequence {
    k: usize,
    max_features: usize,
    /// Last k tokens per symbol, oldest first.
    recent: HashMap<String, VecDeque<String>>,
    /// Feature -> (wins, losses). BTreeMap: snapshots are canonical.
    counts: BTreeMap<String, (u32, u32)>,
    /// Plan id -> its features, until its feedback arrives.
    open: BTreeMap<String, Vec<String>>,
}

impl Sequence {
    fn features(&self, symbol: &str) -> Vec<String> {
        let Some(tokens) = self.recent.get(symbol) else {
            return Vec::new();
        };
        let mut out: Vec<String> = tokens
            .iter()
            .rev()
            .enumerate()
            .map(|(i, t)| format!("t-{}={t}", i + 1))
            .collect();
        if tokens.len() == self.k && self.k > 1 {
            out.push(format!(
                "gram={}",
                tokens.iter().cloned().collect::<Vec<_>>().join(" ")
            ));
        }
        out
    }

    /// The evidence about `plan` and the features it was judged on.
    pub fn judge(&self, plan: &Plan) -> (Evidence, Vec<String>) {
        let features = self.features(&plan.symbol);
        let (mut sum, mut seen) = (0.0, 0u32);
        for f in &features {
            if let Some((w, l)) = self.counts.get(f) {
                sum += ((f64::from(*w) + 1.0) / (f64::from(*l) + 1.0)).ln();
                seen += w + l;
            }
        }
        let llr = if features.is_empty() {
            0.0
        } else {
            sum / features.len() as f64
        };
        let reason = if seen == 0 {
            "sequence not seen before".to_string()
        } else {
            format!("{} outcomes seen after these tokens", seen)
        };
        (
            Evidence {
                plan_id: plan.id.clone(),
                expert: "expert-sequence".into(),
                llr,
                reason,
            },
            features,
        )
    }

    fn learn(&mut self, plan_id: &str, won: bool) {
        let Some(features) = self.open.remove(plan_id) else {
            return;
        };
        for f in features {
            let c = self.counts.entry(f).or_insert((0, 0));
            if won {
                c.0 = c.0.saturating_add(1);
            } else {
                c.1 = c.1.saturating_add(1);
            }
        }
        while self.counts.len() > self.max_features {
            // Forget the least-seen feature (ties: the first in order).
            let Some(victim) = self
                .counts
                .iter()
                .min_by_key(|(_, (w, l))| w + l)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.counts.remove(&victim);
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (f, (w, l)) in &self.counts {
            let bytes = f.as_bytes();
            out.extend_from_slice(&(bytes.len().min(u16::MAX as usize) as u16).to_le_bytes());
            out.extend_from_slice(&bytes[..bytes.len().min(u16::MAX as usize)]);
            out.extend_from_slice(&w.to_le_bytes());
            out.extend_from_slice(&l.to_le_bytes());
        }
        out
    }

    fn decode(data: &[u8]) -> Result<BTreeMap<String, (u32, u32)>, String> {
        let mut counts = BTreeMap::new();
        let mut i = 0;
        let take = |i: &mut usize, n: usize| -> Result<&[u8], String> {
            let s = data.get(*i..*i + n).ok_or("snapshot is truncated")?;
            *i += n;
            Ok(s)
        };
        while i < data.len() {
            let len =
                u16::from_le_bytes(take(&mut i, 2)?.try_into().map_err(|_| "bad length")?) as usize;
            let name = std::str::from_utf8(take(&mut i, len)?)
                .map_err(|_| "feature is not UTF-8")?
                .to_string();
            let w = u32::from_le_bytes(take(&mut i, 4)?.try_into().map_err(|_| "bad count")?);
            let l = u32::from_le_bytes(take(&mut i, 4)?.try_into().map_err(|_| "bad count")?);
            counts.insert(name, (w, l));
        }
        Ok(counts)
    }
}

impl Module for Sequence {
    fn describe() -> Info {
        Info::new("expert-sequence", env!("CARGO_PKG_VERSION"), "expert")
            .subscribe(Subscription::broadcast("tape"))
            .subscribe(Subscription::shared("plan"))
            .subscribe(Subscription::broadcast("feedback"))
            .publishes("evidence")
            .gene(Gene::int("k", 1.0, 5.0, 2.0, 1.0))
            .gene(Gene::int("max-features", 100.0, 100000.0, 20000.0, 1000.0))
    }

    fn init(ctx: InitContext) -> Result<Self, String> {
        let counts = match &ctx.snapshot {
            None => BTreeMap::new(),
            Some(s) if s.version == SNAPSHOT_VERSION => Self::decode(&s.data)?,
            Some(s) => {
                return Err(format!(
                    "snapshot version {} is not {SNAPSHOT_VERSION}",
                    s.version
                ));
            }
        };
        Ok(Sequence {
            k: usize::try_from(ctx.int("k")?)
                .map_err(|e| e.to_string())?
                .max(1),
            max_features: usize::try_from(ctx.int("max-features")?)
                .map_err(|e| e.to_string())?
                .max(1),
            recent: HashMap::new(),
            counts,
            open: BTreeMap::new(),
        })
    }

    fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String> {
        match &msg.body {
            Body::Tape(t) => {
                let k = self.k;
                if !self.recent.contains_key(&t.symbol) {
                    self.recent.insert(t.symbol.clone(), Default::default());
                }
                let Some(q) = self.recent.get_mut(&t.symbol) else {
                    return Ok(());
                };
                q.push_back(t.token.clone());
                while q.len() > k {
                    q.pop_front();
                }
            }
            Body::Plan(plan) => {
                let (ev, features) = self.judge(plan);
                if self.open.len() >= OPEN_CAP {
                    self.open.pop_first();
                }
                self.open.insert(plan.id.clone(), features);
                out.publish("evidence", &plan.id, Body::Evidence(ev));
            }
            Body::Feedback(fb) => self.learn(&fb.plan_id, fb.pnl > 0.0),
            _ => {}
        }
        Ok(())
    }

    fn snapshot(&self) -> Option<Snapshot> {
        Some(Snapshot {
            version: SNAPSHOT_VERSION,
            data: self.encode(),
        })
    }
}

garden_sdk::export_module!(Sequence);

#[cfg(test)]
mod tests {
    use super::*;
    use garden_sdk::{Feedback, FillKind, GeneValue, Param, Side, Tape};

    fn expert(snapshot: Option<Snapshot>) -> Sequence {
        let p = |n: &str, v: i64| Param {
            name: n.into(),
            value: GeneValue::Int(v),
        };
        Sequence::init(InitContext {
            member: 0,
            snapshot,
            instance: "s".into(),
            params: vec![p("k", 2), p("max-features", 1000)],
            settings: vec![],
        })
        .unwrap()
    }

    fn env(body: Body) -> Envelope {
        Envelope {
            topic: "t".into(),
            key: "k".into(),
            seq: 0,
            time: 0,
            source: "x".into(),
            body,
        }
    }

    fn tape(token: &str) -> Body {
        Body::Tape(Tape {
            symbol: "X".into(),
            time: 0,
            token: token.into(),
            features: vec![],
            extra: vec![],
        })
    }

    fn plan(id: &str) -> Plan {
        Plan {
            id: id.into(),
            origin: "a".into(),
            symbol: "X".into(),
            side: Side::Long,
            entry: 1.0,
            stop: 0.9,
            target: 1.2,
            size: 1.0,
            horizon: 5,
            confidence: 0.5,
            time: 0,
        }
    }

    fn feedback(id: &str, pnl: f64) -> Body {
        Body::Feedback(Feedback {
            plan_id: id.into(),
            origin: "a".into(),
            pnl,
            exit: FillKind::Target,
            bars_held: 1,
        })
    }

    /// "U" tokens precede winners, "D" tokens losers.
    fn train(e: &mut Sequence, n: usize) {
        let mut out = Outbox::new();
        for i in 0..n {
            let good = i % 2 == 0;
            let tok = if good { "U" } else { "D" };
            e.on_message(&env(tape(tok)), &mut out).unwrap();
            e.on_message(&env(tape(tok)), &mut out).unwrap();
            let id = format!("p{i}");
            e.on_message(&env(Body::Plan(plan(&id))), &mut out).unwrap();
            e.on_message(&env(feedback(&id, if good { 1.0 } else { -1.0 })), &mut out)
                .unwrap();
        }
    }

    #[test]
    fn learns_which_sequences_precede_winners() {
        let mut e = expert(None);
        let mut out = Outbox::new();
        e.on_message(&env(tape("U")), &mut out).unwrap();
        assert_eq!(e.judge(&plan("q")).0.llr, 0.0, "nothing learned yet");
        train(&mut e, 40);
        for tok in ["U", "U"] {
            e.on_message(&env(tape(tok)), &mut out).unwrap();
        }
        assert!(e.judge(&plan("q")).0.llr > 1.0, "after U U plans win");
        for tok in ["D", "D"] {
            e.on_message(&env(tape(tok)), &mut out).unwrap();
        }
        assert!(e.judge(&plan("q")).0.llr < -1.0, "after D D plans lose");
    }

    #[test]
    fn weights_travel_in_the_snapshot() {
        let mut e = expert(None);
        train(&mut e, 20);
        let snap = e.snapshot().unwrap();
        let child = expert(Some(snap));
        assert_eq!(child.counts, e.counts);
        assert!(
            Sequence::decode(&[1, 0]).is_err(),
            "truncated snapshots are refused"
        );
    }
}
