//! The in-process bus: the embedded default. Deterministic: the same
//! publishes in the same order give the same deliveries.

use std::collections::VecDeque;
use std::sync::Arc;

// Lookups by topic and instance name are on the hot path of every message;
// a fast non-cryptographic hash is enough for names the host chose.
use rustc_hash::FxHashMap as HashMap;

use super::{Bus, BusError, BusStats, DeadLetter, Delivery, RecentDeadLetters, Subscriber, fnv1a};
use crate::Envelope;

struct Route {
    group: String,
    delivery: Delivery,
    addressed: bool,
    members: Vec<usize>,
}

#[derive(Default)]
struct Topic {
    seq: u64,
    routes: Vec<Route>,
}

struct Inbox {
    name: String,
    queue: VecDeque<Arc<Envelope>>,
}

/// The in-process bus with bounded inboxes.
pub struct MemoryBus {
    capacity: usize,
    topics: HashMap<String, Topic>,
    inboxes: Vec<Inbox>,
    index: HashMap<String, usize>,
    dead: RecentDeadLetters,
    stats: BusStats,
    /// Reused between publishes to avoid an allocation per message.
    targets: Vec<usize>,
    /// Rosters set by [`Bus::set_roster`], as inboxes, by group.
    rosters: HashMap<String, Vec<usize>>,
}

impl MemoryBus {
    /// A bus whose inboxes hold at most `capacity` messages each.
    pub fn new(capacity: usize) -> Self {
        MemoryBus {
            capacity: capacity.max(1),
            topics: HashMap::default(),
            inboxes: Vec::new(),
            index: HashMap::default(),
            dead: RecentDeadLetters::default(),
            stats: BusStats::default(),
            targets: Vec::new(),
            rosters: HashMap::default(),
        }
    }

    fn inbox(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.inboxes.len();
        self.inboxes.push(Inbox {
            name: name.to_string(),
            queue: VecDeque::new(),
        });
        self.index.insert(name.to_string(), i);
        i
    }

    /// Fill `self.targets` with the inboxes `message` goes to.
    fn route(&mut self, message: &Envelope) {
        self.targets.clear();
        let Some(topic) = self.topics.get(&message.topic) else {
            return;
        };
        for route in &topic.routes {
            if route.members.is_empty() {
                continue;
            }
            if route.addressed {
                if let Some(&i) = self.index.get(&message.key)
                    && route.members.contains(&i)
                {
                    self.targets.push(i);
                }
                continue;
            }
            match route.delivery {
                Delivery::Broadcast => self.targets.extend_from_slice(&route.members),
                Delivery::Shared => {
                    let roster = self
                        .rosters
                        .get(&route.group)
                        .map_or(&route.members[..], |r| &r[..]);
                    let pick = (fnv1a(message.key.as_bytes()) % roster.len() as u64) as usize;
                    self.targets.push(roster[pick]);
                }
            }
        }
        // One copy per inbox even if two routes lead there.
        self.targets.sort_unstable();
        self.targets.dedup();
    }

    fn deliver(&mut self, mut message: Envelope) {
        let topic = self.topics.entry(message.topic.clone()).or_default();
        topic.seq += 1;
        message.seq = topic.seq;
        let message = Arc::new(message);
        self.stats.published += 1;
        for &i in &self.targets {
            self.inboxes[i].queue.push_back(message.clone());
            self.stats.delivered += 1;
        }
    }
}

impl Bus for MemoryBus {
    fn set_roster(&mut self, group: &str, members: Vec<String>) {
        if members.is_empty() {
            self.rosters.remove(group);
            return;
        }
        let inboxes = members.iter().map(|m| self.inbox(m)).collect();
        self.rosters.insert(group.to_string(), inboxes);
    }

    fn subscribe(&mut self, s: &Subscriber) {
        let member = self.inbox(&s.instance);
        let topic = self.topics.entry(s.topic.clone()).or_default();
        let route = match topic.routes.iter_mut().position(|r| {
            r.group == s.group && r.delivery == s.delivery && r.addressed == s.addressed
        }) {
            Some(i) => &mut topic.routes[i],
            None => {
                topic.routes.push(Route {
                    group: s.group.clone(),
                    delivery: s.delivery,
                    addressed: s.addressed,
                    members: Vec::new(),
                });
                let last = topic.routes.len() - 1;
                &mut topic.routes[last]
            }
        };
        if !route.members.contains(&member) {
            route.members.push(member);
        }
    }

    fn unsubscribe(&mut self, instance: &str) {
        let Some(&i) = self.index.get(instance) else {
            return;
        };
        for topic in self.topics.values_mut() {
            for route in &mut topic.routes {
                route.members.retain(|m| *m != i);
            }
        }
    }

    fn publish(&mut self, message: Envelope) -> Result<(), BusError> {
        self.route(&message);
        if let Some(&full) = self
            .targets
            .iter()
            .find(|&&i| self.inboxes[i].queue.len() >= self.capacity)
        {
            return Err(BusError::Full {
                instance: self.inboxes[full].name.clone(),
                capacity: self.capacity,
                message: Box::new(message),
            });
        }
        self.deliver(message);
        Ok(())
    }

    fn publish_overflowing(&mut self, message: Envelope) {
        self.route(&message);
        self.stats.overflowed += 1;
        self.deliver(message);
    }

    fn release(&mut self, instance: &str) {
        self.unsubscribe(instance);
        if let Some(&i) = self.index.get(instance) {
            self.inboxes[i].queue.clear();
        }
    }

    fn poll(&mut self, instance: &str) -> Option<Arc<Envelope>> {
        let &i = self.index.get(instance)?;
        self.inboxes[i].queue.pop_front()
    }

    fn depth(&self, instance: &str) -> usize {
        self.index
            .get(instance)
            .map_or(0, |&i| self.inboxes[i].queue.len())
    }

    fn dead_letter(&mut self, letter: DeadLetter) {
        self.stats.dead_letters += 1;
        self.dead.push(letter);
    }

    fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead.list()
    }

    fn stats(&self) -> BusStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::types::Body;

    fn sub(
        instance: &str,
        group: &str,
        topic: &str,
        delivery: Delivery,
        addressed: bool,
    ) -> Subscriber {
        Subscriber {
            instance: instance.into(),
            group: group.into(),
            topic: topic.into(),
            delivery,
            addressed,
        }
    }

    fn msg(topic: &str, key: &str, n: u8) -> Envelope {
        Envelope {
            topic: topic.into(),
            key: key.into(),
            seq: 0,
            time: 0,
            source: "test".into(),
            body: Body::Custom(vec![n]),
            trace: crate::message::Trace::default(),
        }
    }

    fn drain(bus: &mut MemoryBus, who: &str) -> Vec<(String, u8)> {
        let mut out = Vec::new();
        while let Some(m) = bus.poll(who) {
            let Body::Custom(b) = &m.body else {
                panic!("unexpected body")
            };
            out.push((m.key.clone(), b[0]));
        }
        out
    }

    #[test]
    fn broadcast_reaches_every_member_and_shared_exactly_one() {
        let mut bus = MemoryBus::new(100);
        for who in ["a1", "a2", "a3"] {
            bus.subscribe(&sub(who, "a", "t", Delivery::Broadcast, false));
        }
        for who in ["s1", "s2"] {
            bus.subscribe(&sub(who, "s", "t", Delivery::Shared, false));
        }
        for n in 0..20 {
            bus.publish(msg("t", &format!("k{n}"), n)).unwrap();
        }
        for who in ["a1", "a2", "a3"] {
            assert_eq!(drain(&mut bus, who).len(), 20, "{who} gets everything");
        }
        let s1 = drain(&mut bus, "s1");
        let s2 = drain(&mut bus, "s2");
        assert_eq!(
            s1.len() + s2.len(),
            20,
            "each message to exactly one of the group"
        );
        assert!(!s1.is_empty() && !s2.is_empty(), "load is spread");
        assert_eq!(bus.stats().published, 20);
        assert_eq!(bus.stats().delivered, 80);
    }

    #[test]
    fn shared_delivery_keeps_per_key_order() {
        let mut bus = MemoryBus::new(1000);
        for who in ["s1", "s2", "s3"] {
            bus.subscribe(&sub(who, "s", "t", Delivery::Shared, false));
        }
        for n in 0..100u8 {
            bus.publish(msg("t", &format!("k{}", n % 7), n)).unwrap();
        }
        let mut seen: HashMap<String, (String, Vec<u8>)> = HashMap::default();
        for who in ["s1", "s2", "s3"] {
            for (key, n) in drain(&mut bus, who) {
                let entry = seen
                    .entry(key.clone())
                    .or_insert_with(|| (who.to_string(), Vec::new()));
                assert_eq!(entry.0, who, "key {key} went to two members");
                entry.1.push(n);
            }
        }
        assert_eq!(seen.len(), 7);
        for (key, (_, ns)) in seen {
            assert!(
                ns.windows(2).all(|w| w[0] < w[1]),
                "key {key} out of order: {ns:?}"
            );
        }
    }

    #[test]
    fn addressed_subscription_gets_only_its_own_key() {
        let mut bus = MemoryBus::new(10);
        bus.subscribe(&sub("v1", "v", "reply", Delivery::Broadcast, true));
        bus.subscribe(&sub("v2", "v", "reply", Delivery::Broadcast, true));
        bus.publish(msg("reply", "v2", 1)).unwrap();
        bus.publish(msg("reply", "nobody", 2)).unwrap();
        assert!(drain(&mut bus, "v1").is_empty());
        assert_eq!(drain(&mut bus, "v2"), vec![("v2".to_string(), 1)]);
    }

    #[test]
    fn full_inbox_refuses_whole_publish_and_hands_message_back() {
        let mut bus = MemoryBus::new(2);
        bus.subscribe(&sub("fast", "f", "t", Delivery::Broadcast, false));
        bus.subscribe(&sub("slow", "s", "t", Delivery::Broadcast, false));
        bus.publish(msg("t", "k", 1)).unwrap();
        bus.publish(msg("t", "k", 2)).unwrap();
        drain(&mut bus, "fast");
        let err = bus.publish(msg("t", "k", 3)).unwrap_err();
        let BusError::Full {
            instance, message, ..
        } = err
        else {
            panic!("expected a full inbox, got {err}");
        };
        assert_eq!(instance, "slow");
        assert_eq!(bus.depth("fast"), 0, "nobody got a partial delivery");
        drain(&mut bus, "slow");
        bus.publish(*message).unwrap();
        assert_eq!(drain(&mut bus, "fast"), vec![("k".to_string(), 3)]);
        bus.publish_overflowing(msg("t", "k", 4));
        bus.publish_overflowing(msg("t", "k", 5));
        bus.publish_overflowing(msg("t", "k", 6));
        assert_eq!(bus.depth("slow"), 4);
        assert_eq!(bus.stats().overflowed, 3);
    }

    #[test]
    fn sequence_numbers_count_per_topic_and_unsubscribe_stops_delivery() {
        let mut bus = MemoryBus::new(10);
        bus.subscribe(&sub("x", "x", "a", Delivery::Broadcast, false));
        bus.subscribe(&sub("x", "x", "b", Delivery::Broadcast, false));
        bus.publish(msg("a", "k", 1)).unwrap();
        bus.publish(msg("a", "k", 2)).unwrap();
        bus.publish(msg("b", "k", 3)).unwrap();
        let seqs: Vec<(String, u64)> = std::iter::from_fn(|| bus.poll("x"))
            .map(|m| (m.topic.clone(), m.seq))
            .collect();
        assert_eq!(
            seqs,
            vec![("a".into(), 1), ("a".into(), 2), ("b".into(), 1)]
        );
        bus.unsubscribe("x");
        bus.publish(msg("a", "k", 4)).unwrap();
        assert_eq!(bus.depth("x"), 0);
    }

    #[test]
    fn dead_letters_are_kept_with_reason() {
        let mut bus = MemoryBus::new(10);
        bus.dead_letter(DeadLetter {
            instance: "x".into(),
            envelope: Arc::new(msg("t", "k", 1)),
            reason: "boom".into(),
        });
        assert_eq!(bus.stats().dead_letters, 1);
        assert_eq!(bus.dead_letters()[0].reason, "boom");
    }
}
