//! Waiting for named answers about an item, with a deadline in bars.
//!
//! Fusion waits for its experts' evidence about a plan, and every governed
//! module waits for its curators' verdicts: the same shape, one mechanism.
//! An item is known by an id (a plan id); answers come from named
//! responders, in any order, before or after their item. The item is
//! released as soon as every expected responder has answered, or once
//! `deadline_bars` bars of its symbol have passed since it arrived, with the
//! names that had not answered. So nothing is waited on forever.
//!
//! Invariants:
//! - An item is released exactly once; answers that come after are kept as
//!   orphans and expire at the deadline without effect.
//! - A responder's first answer counts; a second one about the same item is
//!   ignored, so a responder cannot change its word once given.
//! - Answers from names not expected are ignored.
//! - Release order is deterministic: by id when several are due on one bar.

use std::collections::BTreeMap;

/// An item that is ready: every answer that came, and who was missing.
#[derive(Debug, Clone, PartialEq)]
pub struct Ready<T, A> {
    /// The item's id.
    pub id: String,
    /// The item.
    pub item: T,
    /// Answers by responder name.
    pub answers: BTreeMap<String, A>,
    /// Expected responders that had not answered, in the expected order.
    pub missing: Vec<String>,
}

struct Waiting<T, A> {
    item: Option<(T, String)>,
    answers: BTreeMap<String, A>,
    /// Bars of the item's symbol (of any symbol while only orphan answers
    /// are known) seen since the first of it arrived.
    bars: u32,
}

/// Items waiting for their answers. See the module documentation.
pub struct Join<T, A> {
    expected: Vec<String>,
    deadline_bars: u32,
    waiting: BTreeMap<String, Waiting<T, A>>,
}

impl<T, A> Join<T, A> {
    /// Wait for `expected` responders, at most `deadline_bars` bars.
    pub fn new(expected: Vec<String>, deadline_bars: u32) -> Self {
        Join {
            expected,
            deadline_bars,
            waiting: BTreeMap::new(),
        }
    }

    /// The responders waited for.
    pub fn expected(&self) -> &[String] {
        &self.expected
    }

    /// Whether `name` is one of the responders waited for.
    pub fn expects(&self, name: &str) -> bool {
        self.expected.iter().any(|e| e == name)
    }

    /// Items and orphan answers waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    fn waiting(&mut self, id: &str) -> &mut Waiting<T, A> {
        // Most answers find their item waiting: no key to allocate then.
        if !self.waiting.contains_key(id) {
            self.waiting.insert(
                id.to_string(),
                Waiting {
                    item: None,
                    answers: BTreeMap::new(),
                    bars: 0,
                },
            );
        }
        self.waiting
            .get_mut(id)
            .expect("inserted above when missing")
    }

    fn complete(&self, id: &str) -> bool {
        self.waiting.get(id).is_some_and(|w| {
            w.item.is_some() && self.expected.iter().all(|e| w.answers.contains_key(e))
        })
    }

    fn release(&mut self, id: &str) -> Option<Ready<T, A>> {
        let w = self.waiting.remove(id)?;
        let (item, _) = w.item?;
        let missing = self
            .expected
            .iter()
            .filter(|e| !w.answers.contains_key(*e))
            .cloned()
            .collect();
        Some(Ready {
            id: id.to_string(),
            item,
            answers: w.answers,
            missing,
        })
    }

    /// The item `id` of `symbol` arrived: ready now if every answer is in
    /// (at once when no responder is expected). A second item under an id
    /// already waiting replaces nothing and is dropped.
    pub fn item(&mut self, id: &str, symbol: &str, item: T) -> Option<Ready<T, A>> {
        let w = self.waiting(id);
        if w.item.is_some() {
            return None;
        }
        w.item = Some((item, symbol.to_string()));
        if self.complete(id) {
            self.release(id)
        } else {
            None
        }
    }

    /// `name` answered about `id`: the item, if this was the last answer.
    pub fn answer(&mut self, id: &str, name: &str, answer: A) -> Option<Ready<T, A>> {
        if !self.expects(name) {
            return None;
        }
        let w = self.waiting(id);
        if !w.answers.contains_key(name) {
            w.answers.insert(name.to_string(), answer);
        }
        if self.complete(id) {
            self.release(id)
        } else {
            None
        }
    }

    /// A bar of `symbol`: the items whose deadline it reaches, by id.
    /// Orphan answers whose deadline passes are dropped.
    pub fn bar(&mut self, symbol: &str) -> Vec<Ready<T, A>> {
        let mut due = Vec::new();
        for (id, w) in self.waiting.iter_mut() {
            if w.item.as_ref().is_none_or(|(_, s)| s == symbol) {
                w.bars += 1;
            }
            if w.bars >= self.deadline_bars {
                due.push(id.clone());
            }
        }
        due.iter().filter_map(|id| self.release(id)).collect()
    }

    /// Everything waiting, as it is (at the end of the stream), by id.
    pub fn drain(&mut self) -> Vec<Ready<T, A>> {
        let ids: Vec<String> = self.waiting.keys().cloned().collect();
        ids.iter().filter_map(|id| self.release(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ready_when_every_answer_is_in_whatever_the_order() {
        let mut j: Join<u8, f64> = Join::new(names(&["a", "b"]), 3);
        assert!(j.answer("p", "a", 1.0).is_none(), "answer before its item");
        assert!(j.item("p", "X", 7).is_none());
        let r = j.answer("p", "b", 2.0).expect("last answer releases");
        assert_eq!((r.item, r.answers.len()), (7, 2));
        assert!(r.missing.is_empty());
        assert!(j.is_empty());
        // Late answers are orphans that expire without effect.
        assert!(j.answer("p", "a", 1.0).is_none());
        for _ in 0..3 {
            assert!(j.bar("X").is_empty());
        }
        assert!(j.is_empty());
    }

    #[test]
    fn the_deadline_releases_with_the_missing_names() {
        let mut j: Join<u8, f64> = Join::new(names(&["a", "b"]), 2);
        j.item("p", "X", 1);
        j.answer("p", "b", 0.5);
        assert!(j.bar("Y").is_empty(), "bars of other symbols do not count");
        assert!(j.bar("X").is_empty());
        let due = j.bar("X");
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].missing, names(&["a"]));
        assert_eq!(due[0].answers.keys().collect::<Vec<_>>(), vec!["b"]);
    }

    #[test]
    fn nobody_expected_means_ready_at_once_and_strangers_are_ignored() {
        let mut j: Join<u8, f64> = Join::new(vec![], 1);
        assert!(j.item("p", "X", 1).is_some());
        let mut j: Join<u8, f64> = Join::new(names(&["a"]), 1);
        j.item("p", "X", 1);
        assert!(j.answer("p", "stranger", 9.0).is_none());
        let first = j.answer("p", "a", 1.0);
        assert_eq!(first.map(|r| r.answers["a"]), Some(1.0));
    }

    #[test]
    fn the_first_word_counts_and_a_second_item_is_dropped() {
        let mut j: Join<u8, f64> = Join::new(names(&["a", "b"]), 5);
        j.item("p", "X", 1);
        assert!(j.item("p", "X", 2).is_none());
        j.answer("p", "a", 1.0);
        j.answer("p", "a", -1.0);
        let r = j.drain();
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].item, r[0].answers["a"]), (1, 1.0));
    }
}
