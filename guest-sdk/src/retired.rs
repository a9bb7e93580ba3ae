//! The variants the host has retired lately, so that a module holding
//! their messages for a while (in a [`crate::join::Join`]) does not act on
//! them after the variant is gone, nor bring back its account.
//!
//! Invariant: at most `cap` names are kept; the longest retired is
//! forgotten first (by then nothing of it is in flight).

use std::collections::{BTreeSet, VecDeque};

/// Names retired lately, at most `cap` of them.
#[derive(Debug, Clone, Default)]
pub struct Retired {
    names: BTreeSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl Retired {
    /// Keep at most `cap` names.
    pub fn new(cap: usize) -> Self {
        Retired {
            names: BTreeSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// `name` was retired.
    pub fn insert(&mut self, name: &str) {
        if self.names.insert(name.to_string()) {
            self.order.push_back(name.to_string());
        }
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.names.remove(&old);
            }
        }
    }

    /// Whether `name` was retired lately.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_retired_is_forgotten_first() {
        let mut r = Retired::new(2);
        r.insert("a");
        r.insert("b");
        r.insert("a");
        assert!(r.contains("a") && r.contains("b"));
        r.insert("c");
        assert!(!r.contains("a") && r.contains("b") && r.contains("c"));
    }
}
