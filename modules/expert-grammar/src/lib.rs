//! Micro-expert: named patterns over MicroTape tokens (`docs/tape.md`).
//!
//! A pattern is a sequence of token atoms separated by spaces; an atom
//! matches one token character by character, where `.` matches anything and
//! `[..]` one of a set (e.g. `-b.u.l.r.v.g.` is any bear bar,
//! `+b2u.l.r[12]v.g.` a big bull bar with a wide or middle range). An atom
//! may be followed by `?` (optional), `*` (any number) or `+` (one or more).
//! Each pattern is compiled to a small automaton that advances one token at
//! a time (a Thompson NFA: the set of active states moves on each token), so
//! a match is known the moment its last bar is tokenized, never earlier.
//!
//! The pattern set is configuration: the `patterns` setting holds
//! `name = direction weight : atoms` entries separated by `;`, where
//! direction is `long` or `short`. When a plan arrives, every pattern that
//! completed within the last `recent` bars of the plan's symbol adds its
//! weight to the log-likelihood ratio if it points the plan's way, and
//! subtracts it otherwise.

use std::collections::HashMap;

use garden_sdk::{
    Body, Envelope, Evidence, Gene, Info, InitContext, Module, Outbox, Plan, Side, Subscription,
};

/// The default pattern set.
pub const DEFAULT_PATTERNS: &str = "\
bullish-engulfing = long 0.3 : -b[01]u.l.r.v.g. +b2u.l.r[12]v.g.; \
bearish-engulfing = short 0.3 : +b[01]u.l.r.v.g. -b2u.l.r[12]v.g.; \
inside-bar-breakout-up = long 0.2 : .b.u.l.r0v.g. +b[12]u.l.r2v[12]g.; \
inside-bar-breakout-down = short 0.2 : .b.u.l.r0v.g. -b[12]u.l.r2v[12]g.; \
three-bar-reversal-up = long 0.25 : -b.u.l.r.v.g. -b.u.l.r.v.g.+ +b2u.l.r.v.g.; \
three-bar-reversal-down = short 0.25 : +b.u.l.r.v.g. +b.u.l.r.v.g.+ -b2u.l.r.v.g.";

/// One position of a token atom: any char, one char, or a set.
#[derive(Debug, Clone, PartialEq)]
enum CharClass {
    Any,
    One(char),
    Set(Vec<char>),
}

/// An atom matches one token.
#[derive(Debug, Clone, PartialEq)]
struct Atom(Vec<CharClass>);

impl Atom {
    fn parse(text: &str) -> Result<Atom, String> {
        let mut out = Vec::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '.' => out.push(CharClass::Any),
                '[' => {
                    let set: Vec<char> = chars.by_ref().take_while(|c| *c != ']').collect();
                    if set.is_empty() {
                        return Err(format!("empty set in atom `{text}`"));
                    }
                    out.push(CharClass::Set(set));
                }
                other => out.push(CharClass::One(other)),
            }
        }
        if out.is_empty() {
            return Err("empty atom".into());
        }
        Ok(Atom(out))
    }

    fn matches(&self, token: &str) -> bool {
        let mut n = 0;
        for (class, c) in self.0.iter().zip(token.chars()) {
            n += 1;
            let ok = match class {
                CharClass::Any => true,
                CharClass::One(x) => *x == c,
                CharClass::Set(s) => s.contains(&c),
            };
            if !ok {
                return false;
            }
        }
        n == self.0.len() && token.chars().count() == self.0.len()
    }
}

/// A compiled pattern: states 0..=n, state i consumes atom i; `accept` is n.
#[derive(Debug, Clone)]
pub struct Automaton {
    atoms: Vec<Atom>,
    /// Per state: may be skipped (`?`, `*`) and may repeat (`*`, `+`).
    skip: Vec<bool>,
    repeat: Vec<bool>,
    active: Vec<bool>,
}

impl Automaton {
    /// Compile space-separated atoms with optional `?`, `*`, `+`.
    pub fn compile(pattern: &str) -> Result<Automaton, String> {
        let (mut atoms, mut skip, mut repeat) = (Vec::new(), Vec::new(), Vec::new());
        for word in pattern.split_whitespace() {
            let (body, q) = match word.chars().last() {
                Some(c @ ('?' | '*' | '+')) => (&word[..word.len() - 1], Some(c)),
                _ => (word, None),
            };
            atoms.push(Atom::parse(body)?);
            skip.push(matches!(q, Some('?' | '*')));
            repeat.push(matches!(q, Some('*' | '+')));
        }
        if atoms.is_empty() {
            return Err("a pattern needs at least one atom".into());
        }
        let n = atoms.len();
        Ok(Automaton {
            atoms,
            skip,
            repeat,
            active: vec![false; n + 1],
        })
    }

    /// Follow the free moves over skippable atoms.
    fn closure(&self, set: &mut [bool]) {
        for i in 0..self.atoms.len() {
            if set[i] && self.skip[i] {
                set[i + 1] = true;
            }
        }
    }

    /// Advance on one token; true if the pattern completes on it.
    pub fn step(&mut self, token: &str) -> bool {
        let n = self.atoms.len();
        let mut current = self.active.clone();
        // A match may start at any token.
        current[0] = true;
        self.closure(&mut current);
        let mut next = vec![false; n + 1];
        for i in 0..n {
            if current[i] && self.atoms[i].matches(token) {
                next[i + 1] = true;
                if self.repeat[i] {
                    next[i] = true;
                }
            }
        }
        self.closure(&mut next);
        let done = next[n];
        next[n] = false;
        self.active = next;
        done
    }
}

struct Pattern {
    name: String,
    side: Side,
    weight: f64,
    automaton: Automaton,
}

/// Parse the `patterns` setting.
fn parse_patterns(text: &str) -> Result<Vec<Pattern>, String> {
    let mut out = Vec::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (head, atoms) = entry
            .split_once(':')
            .ok_or_else(|| format!("`{entry}`: expected `name = direction weight : atoms`"))?;
        let (name, spec) = head
            .split_once('=')
            .ok_or_else(|| format!("`{entry}`: expected `name = ...`"))?;
        let mut spec = spec.split_whitespace();
        let side = match spec.next() {
            Some("long") => Side::Long,
            Some("short") => Side::Short,
            other => {
                return Err(format!(
                    "pattern `{}`: direction must be long or short, got {other:?}",
                    name.trim()
                ));
            }
        };
        let weight: f64 = spec
            .next()
            .and_then(|w| w.parse().ok())
            .filter(|w: &f64| w.is_finite())
            .ok_or_else(|| format!("pattern `{}`: weight must be a number", name.trim()))?;
        out.push(Pattern {
            name: name.trim().to_string(),
            side,
            weight,
            automaton: Automaton::compile(atoms)
                .map_err(|e| format!("pattern `{}`: {e}", name.trim()))?,
        });
    }
    Ok(out)
}

/// The expert's state.
pub struct Grammar {
    patterns: Vec<Pattern>,
    recent: u32,
    /// Per symbol: per pattern, bars since it last completed.
    since: HashMap<String, Vec<Option<u32>>>,
    automata: HashMap<String, Vec<Automaton>>,
}

impl Grammar {
    fn on_token(&mut self, symbol: &str, token: &str) {
        let n = self.patterns.len();
        let automata = self
            .automata
            .entry(symbol.to_string())
            .or_insert_with(|| self.patterns.iter().map(|p| p.automaton.clone()).collect());
        let since = self
            .since
            .entry(symbol.to_string())
            .or_insert_with(|| vec![None; n]);
        for (k, a) in automata.iter_mut().enumerate() {
            since[k] = since[k].map(|s| s.saturating_add(1));
            if a.step(token) {
                since[k] = Some(0);
            }
        }
    }

    /// The evidence about `plan` from patterns completed recently.
    pub fn judge(&self, plan: &Plan) -> Evidence {
        let mut llr = 0.0;
        let mut reasons = Vec::new();
        if let Some(since) = self.since.get(&plan.symbol) {
            for (p, s) in self.patterns.iter().zip(since) {
                if s.is_some_and(|s| s < self.recent) {
                    let agrees = p.side == plan.side;
                    llr += if agrees { p.weight } else { -p.weight };
                    reasons.push(format!(
                        "{} {}",
                        p.name,
                        if agrees { "supports" } else { "opposes" }
                    ));
                }
            }
        }
        Evidence {
            plan_id: plan.id.clone(),
            expert: "expert-grammar".into(),
            llr,
            reason: if reasons.is_empty() {
                "no pattern".into()
            } else {
                reasons.join(", ")
            },
        }
    }
}

impl Module for Grammar {
    fn describe() -> Info {
        Info::new("expert-grammar", env!("CARGO_PKG_VERSION"), "expert")
            .subscribe(Subscription::broadcast("tape"))
            .subscribe(Subscription::shared("plan"))
            .publishes("evidence")
            .gene(Gene::int("recent", 1.0, 20.0, 3.0, 1.0))
    }

    fn init(ctx: InitContext) -> Result<Self, String> {
        let patterns = parse_patterns(ctx.setting("patterns").unwrap_or(DEFAULT_PATTERNS))?;
        Ok(Grammar {
            patterns,
            recent: u32::try_from(ctx.int("recent")?)
                .map_err(|e| e.to_string())?
                .max(1),
            since: HashMap::new(),
            automata: HashMap::new(),
        })
    }

    fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String> {
        match &msg.body {
            Body::Tape(t) => self.on_token(&t.symbol, &t.token),
            Body::Plan(plan) => {
                let ev = self.judge(plan);
                out.publish("evidence", &plan.id, Body::Evidence(ev));
            }
            _ => {}
        }
        Ok(())
    }
}

garden_sdk::export_module!(Grammar);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pattern: &str, tokens: &[&str]) -> Vec<bool> {
        let mut a = Automaton::compile(pattern).unwrap();
        tokens.iter().map(|t| a.step(t)).collect()
    }

    const BEAR: &str = "-b1u0l0r1v1gn";
    const BULL_BIG: &str = "+b2u0l0r2v1gn";
    const SMALL: &str = "=b0u1l1r0v0gn";

    #[test]
    fn engulfing_is_found_on_its_last_bar_and_not_before() {
        let p = "-b[01]u.l.r.v.g. +b2u.l.r[12]v.g.";
        assert_eq!(
            run(p, &[SMALL, BEAR, BULL_BIG, SMALL]),
            vec![false, false, true, false]
        );
        assert_eq!(
            run(p, &[BULL_BIG, BEAR, SMALL]),
            vec![false, false, false],
            "not found"
        );
    }

    #[test]
    fn quantifiers_repeat_and_skip() {
        let three = "-b.u.l.r.v.g. -b.u.l.r.v.g.+ +b2u.l.r.v.g.";
        assert_eq!(
            run(three, &[BEAR, BEAR, BULL_BIG]),
            vec![false, false, true]
        );
        assert_eq!(
            run(three, &[BEAR, BEAR, BEAR, BEAR, BULL_BIG]),
            vec![false, false, false, false, true]
        );
        assert_eq!(
            run(three, &[BEAR, BULL_BIG]),
            vec![false, false],
            "`+` needs one at least"
        );
        let optional = "-b.u.l.r.v.g. =b.u.l.r.v.g.? +b2u.l.r.v.g.";
        assert_eq!(run(optional, &[BEAR, BULL_BIG]), vec![false, true]);
        assert_eq!(
            run(optional, &[BEAR, SMALL, BULL_BIG]),
            vec![false, false, true]
        );
        assert_eq!(
            run(optional, &[BEAR, SMALL, SMALL, BULL_BIG]),
            vec![false, false, false, false]
        );
    }

    #[test]
    fn atoms_match_whole_tokens_only() {
        assert!(
            Atom::parse("+b2").unwrap().matches("+b2")
                && !Atom::parse("+b2").unwrap().matches(BULL_BIG)
        );
        assert!(Atom::parse("[+-]b.u.l.r.v.g.").unwrap().matches(BEAR));
        assert!(Automaton::compile("").is_err());
        assert!(parse_patterns("x = sideways 1 : .").is_err());
        assert!(parse_patterns("x = long many : .").is_err());
    }

    #[test]
    fn evidence_supports_the_pattern_side_and_opposes_the_other() {
        let mut g = Grammar {
            patterns: parse_patterns(DEFAULT_PATTERNS).unwrap(),
            recent: 2,
            since: HashMap::new(),
            automata: HashMap::new(),
        };
        for t in [SMALL, BEAR, BULL_BIG] {
            g.on_token("X", t);
        }
        let plan = |side| Plan {
            id: "p".into(),
            origin: "a".into(),
            symbol: "X".into(),
            side,
            entry: 1.0,
            stop: 0.9,
            target: 1.2,
            size: 1.0,
            horizon: 5,
            confidence: 0.5,
            time: 0,
        };
        let long = g.judge(&plan(Side::Long));
        assert!(
            long.llr > 0.0 && long.reason.contains("bullish-engulfing supports"),
            "{long:?}"
        );
        let short = g.judge(&plan(Side::Short));
        assert!(short.llr < 0.0, "{short:?}");
        for t in [SMALL, SMALL, SMALL] {
            g.on_token("X", t);
        }
        assert_eq!(g.judge(&plan(Side::Long)).llr, 0.0, "too long ago");
    }
}
