//! The book across every variant and symbol, and how much of it one more
//! plan may take.
//!
//! Every approved plan is in the [`Book`] from its approval (so plans
//! approved in the same bar see each other) until its exit or cancel
//! fill. Sizing is fractional Kelly on the fused confidence, capped by the
//! variant's own risk per plan; then the book's limits, each a multiple of
//! the book's equity (the `equity` setting plus every variant's realised
//! pnl): open risk to the stops, gross notional and |net| notional. A plan
//! that would pass a limit is resized to the room left (the reason names
//! the limit) or rejected when none is left.
//!
//! Invariants: after every approval, the book's risk, gross and |net| are
//! within their limits whenever they were before it; a plan with no edge
//! (Kelly fraction ≤ 0) is never approved while Kelly sizing is on.

use std::collections::BTreeMap;

use garden_sdk::Plan;

/// One approved plan until it closes.
#[derive(Debug, Clone, PartialEq)]
struct Open {
    origin: String,
    /// Size × entry, signed by side.
    notional: f64,
    /// Loss at the stop: size × |entry − stop|.
    risk: f64,
}

/// Every approved plan across variants and symbols, until it closes.
#[derive(Debug, Default)]
pub struct Book {
    open: BTreeMap<String, Open>,
}

impl Book {
    /// Take in an approved plan at `size`.
    pub fn approve(&mut self, plan: &Plan, size: f64) {
        self.open.insert(
            plan.id.clone(),
            Open {
                origin: plan.origin.clone(),
                notional: plan.side.sign() * size * plan.entry,
                risk: size * (plan.entry - plan.stop).abs(),
            },
        );
    }

    /// A plan closed or was cancelled.
    pub fn close(&mut self, plan_id: &str) {
        self.open.remove(plan_id);
    }

    /// Forget a retired variant's plans (the trader closes them).
    pub fn retire(&mut self, origin: &str) {
        self.open.retain(|_, o| o.origin != origin);
    }

    /// Open loss at the stops.
    pub fn risk(&self) -> f64 {
        self.open.values().map(|o| o.risk).sum()
    }

    /// Gross notional.
    pub fn gross(&self) -> f64 {
        self.open.values().map(|o| o.notional.abs()).sum()
    }

    /// Net notional (long minus short).
    pub fn net(&self) -> f64 {
        self.open.values().map(|o| o.notional).sum()
    }

    /// Approved plans still open.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Nothing open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// The book's limits and the Kelly fraction (settings).
#[derive(Debug, Clone, PartialEq)]
pub struct PortfolioLimits {
    /// Share of the full Kelly stake to risk (0: no Kelly sizing).
    pub kelly_fraction: f64,
    /// Most open loss at the stops, as a multiple of the book's equity.
    pub max_risk: f64,
    /// Most gross notional, as a multiple of the book's equity.
    pub max_gross: f64,
    /// Most |net| notional, as a multiple of the book's equity.
    pub max_net: f64,
}

/// Full Kelly fraction of a plan won with probability `p`: `p − (1 − p)/b`
/// with `b` the reward-to-risk ratio |target − entry| / |entry − stop|.
/// NaN for a plan without a stop distance.
pub fn kelly(plan: &Plan, p: f64) -> f64 {
    let risk = (plan.entry - plan.stop).abs();
    let reward = (plan.target - plan.entry).abs();
    if risk <= 0.0 || !risk.is_finite() || !reward.is_finite() || !p.is_finite() {
        return f64::NAN;
    }
    p - (1.0 - p) * risk / reward
}

/// The largest size up to `size` that keeps the book within `limits`, and
/// the limit that bound it (none when `size` fits).
pub fn allocate(
    plan: &Plan,
    size: f64,
    book: &Book,
    equity: f64,
    limits: &PortfolioLimits,
) -> (f64, Option<&'static str>) {
    let equity = equity.max(0.0);
    let s = plan.side.sign();
    let unit_risk = (plan.entry - plan.stop).abs();
    let unit_notional = plan.entry.abs();
    let mut room = size;
    let mut binding = None;
    let mut bind = |cap: f64, name: &'static str| {
        let cap = cap.max(0.0);
        if cap < room {
            room = cap;
            binding = Some(name);
        }
    };
    if unit_risk > 0.0 {
        bind(
            (limits.max_risk * equity - book.risk()) / unit_risk,
            "portfolio risk",
        );
    }
    if unit_notional > 0.0 {
        bind(
            (limits.max_gross * equity - book.gross()) / unit_notional,
            "portfolio gross",
        );
        // A plan against the book's net may cross it to the cap the other way.
        let net = book.net();
        let toward = if net * s >= 0.0 {
            -net.abs()
        } else {
            net.abs()
        };
        bind(
            (limits.max_net * equity + toward) / unit_notional,
            "portfolio net",
        );
    }
    (room, binding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use garden_sdk::Side;
    use garden_sdk::testing::plan;

    fn limits() -> PortfolioLimits {
        PortfolioLimits {
            kelly_fraction: 0.5,
            max_risk: 0.1,
            max_gross: 10.0,
            max_net: 5.0,
        }
    }

    #[test]
    fn kelly_is_the_edge_over_the_odds() {
        // Target twice the stop distance: b = 2.
        let p = plan("p", Side::Long, 1.0, 0.99, 1.02);
        assert!((kelly(&p, 0.5) - 0.25).abs() < 1e-9);
        assert!(kelly(&p, 1.0 / 3.0).abs() < 1e-9, "break-even");
        assert!(kelly(&p, 0.3) < 0.0, "no edge");
        assert!(kelly(&plan("p", Side::Long, 1.0, 1.0, 1.02), 0.5).is_nan());
    }

    #[test]
    fn each_limit_binds_alone_and_concurrent_plans_share_the_room() {
        let l = limits();
        // Distances exact in binary, so sizes compare exactly.
        let long = plan("p", Side::Long, 1.0, 0.875, 1.25);
        // Equity 1,000: risk cap 100 at 0.125 a unit = 800 units; gross cap
        // 10,000; net cap 5,000.
        let empty = Book::default();
        assert_eq!(allocate(&long, 500.0, &empty, 1000.0, &l), (500.0, None));
        assert_eq!(
            allocate(&long, 2000.0, &empty, 1000.0, &l),
            (800.0, Some("portfolio risk"))
        );
        // A tight stop lets the notional limits bind: 1/1024 a unit.
        let tight = plan("t", Side::Long, 1.0, 1.0 - 1.0 / 1024.0, 1.25);
        assert_eq!(
            allocate(&tight, 20_000.0, &empty, 1000.0, &l),
            (5_000.0, Some("portfolio net"))
        );
        let mut hedged = Book::default();
        hedged.approve(
            &plan("s", Side::Short, 1.0, 1.0 + 1.0 / 1024.0, 0.75),
            5_000.0,
        );
        let (size, why) = allocate(&tight, 20_000.0, &hedged, 1000.0, &l);
        assert_eq!((size, why), (5_000.0, Some("portfolio gross")));
        // A short against a long book is not held back by net.
        let mut long_book = Book::default();
        long_book.approve(&tight, 4_000.0);
        let short = plan("s2", Side::Short, 1.0, 1.0 + 1.0 / 1024.0, 0.75);
        assert_eq!(
            allocate(&short, 3_000.0, &long_book, 1000.0, &l),
            (3_000.0, None)
        );
        // Plans one after another share the risk room.
        let mut book = Book::default();
        let (first, _) = allocate(&long, 600.0, &book, 1000.0, &l);
        book.approve(&long, first);
        let second = plan("q", Side::Long, 1.0, 0.875, 1.25);
        let (room, why) = allocate(&second, 600.0, &book, 1000.0, &l);
        assert_eq!((room, why), (200.0, Some("portfolio risk")));
        assert_eq!(book.risk() + room * 0.125, 100.0, "exactly at the cap");
        // Closing frees it; retiring forgets a variant's plans.
        book.close("p");
        assert!(book.is_empty());
        book.approve(&long, 10.0);
        book.retire("a");
        assert_eq!(book.len(), 0);
    }
}
