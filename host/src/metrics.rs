//! What a garden measures about itself, in the Prometheus text format
//! (OpenMetrics), for `garden daemon --metrics ADDR` to serve at `/metrics`.
//! The names and labels are listed in `docs/metrics.md`.
//!
//! Invariants:
//! - names follow Prometheus's conventions: `garden_` first, counters end
//!   in `_total`, amounts in base units (`_seconds`), one label set per
//!   family;
//! - counters only grow: they are fed the runtime's and the bus's running
//!   totals, and add what grew since the last look; an instance that
//!   starts again (its totals back at zero) adds its new totals;
//! - gauges of instances (inbox depth, lag) list the instances running
//!   now: one that left is dropped, not left at its last value.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use crate::bus::BusStats;
use crate::costs::{Buckets, Costs, FUEL_BOUNDS, SECONDS_BOUNDS};
use crate::runtime::InstanceReport;

/// A histogram fed whole buckets at a time (the runtime counts, the
/// metrics add what grew), encoded as Prometheus histograms are.
#[derive(Clone, Debug)]
struct Tally<const N: usize> {
    bounds: &'static [f64],
    buckets: Arc<Mutex<Buckets<N>>>,
}

fn seconds_tally() -> Tally<{ SECONDS_BOUNDS.len() + 1 }> {
    Tally {
        bounds: &SECONDS_BOUNDS,
        buckets: Arc::default(),
    }
}

fn fuel_tally() -> Tally<{ FUEL_BOUNDS.len() + 1 }> {
    Tally {
        bounds: &FUEL_BOUNDS,
        buckets: Arc::default(),
    }
}

impl<const N: usize> Tally<N> {
    fn add_growth(&self, now: &Buckets<N>, before: &Buckets<N>) {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add_growth(now, before);
    }
}

impl<const N: usize> TypedMetric for Tally<N> {
    const TYPE: MetricType = MetricType::Histogram;
}

impl<const N: usize> EncodeMetric for Tally<N> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let b = *self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(b.counts.iter().copied())
            .collect();
        encoder.encode_histogram::<NoLabelSet>(b.sum, b.counts.iter().sum(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

type SecondsTally = Tally<{ SECONDS_BOUNDS.len() + 1 }>;
type FuelTally = Tally<{ FUEL_BOUNDS.len() + 1 }>;

/// A module's metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabel {
    module: String,
}

/// A module's failed calls, by cause (fuel, deadline, memory, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    module: String,
    cause: String,
}

/// One instance.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabel {
    module: String,
    instance: String,
}

/// A birth's or a retirement's cause.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseOnly {
    cause: String,
}

/// Upper bounds of the latency buckets, seconds: 100 µs to 10 s, with the
/// seed's targets (50 ms and 100 ms) among them.
pub const LATENCY_BOUNDS: [f64; 15] = [
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BOUNDS)
}

/// A named step between two messages (e.g. `plan_to_decision`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HopLabel {
    hop: String,
}

/// One metric a module reported about a subject.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReportLabel {
    subject: String,
    metric: String,
}

/// Instances in one state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// An instance's running totals as last seen.
#[derive(Default, Clone)]
struct Seen {
    received: u64,
    published: u64,
    refused: u64,
    restarts: u64,
    busy_micros: f64,
    fuel: u64,
    failures: HashMap<String, u64>,
    costs: Costs,
}

/// What one instance's row of the inbox table says.
pub struct InboxRow<'a> {
    /// The instance.
    pub instance: &'a str,
    /// Its module.
    pub module: &'a str,
    /// Messages waiting in its inbox.
    pub depth: usize,
    /// Messages read for it and not acknowledged.
    pub lag: usize,
}

/// The garden's metrics.
pub struct Metrics {
    registry: Registry,
    received: Family<ModuleLabel, Counter>,
    published: Family<ModuleLabel, Counter>,
    refused_publishes: Family<ModuleLabel, Counter>,
    failures: Family<CauseLabel, Counter>,
    restarts: Family<ModuleLabel, Counter>,
    handler_seconds: Family<ModuleLabel, Counter<f64, AtomicU64>>,
    fuel: Family<ModuleLabel, Counter>,
    seconds_per_message: Family<ModuleLabel, SecondsTally, fn() -> SecondsTally>,
    fuel_per_message: Family<ModuleLabel, FuelTally, fn() -> FuelTally>,
    instances: Family<StateLabel, Gauge>,
    depth: Family<InstanceLabel, Gauge>,
    lag: Family<InstanceLabel, Gauge>,
    bus_published: Counter,
    bus_delivered: Counter,
    bus_dead_letters: Counter,
    bus_refused: Counter,
    bus_deduplicated: Counter,
    round_trips: Counter,
    round_trip_seconds: SecondsTally,
    audit_failures: Counter,
    audit_failures_seen: u64,
    entries_refused: Counter,
    heartbeats: Counter,
    leader_term: Gauge,
    leading: Gauge,
    live_daemons: Gauge,
    births: Family<CauseOnly, Counter>,
    retirements: Family<CauseOnly, Counter>,
    population: Gauge,
    generation: Gauge,
    best_fitness: Gauge<f64, AtomicU64>,
    diversity: Gauge<f64, AtomicU64>,
    reported: Family<ReportLabel, Gauge<f64, AtomicU64>>,
    lease_age: Gauge<f64, AtomicU64>,
    latency: Family<HopLabel, Histogram, fn() -> Histogram>,
    /// Births and retirements counted, by cause.
    lineage_seen: HashMap<(bool, String), u64>,
    seen: HashMap<String, Seen>,
    bus_seen: BusStats,
    refused_seen: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every family registered, all at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let mut m = Metrics {
            registry: Registry::default(),
            received: Family::default(),
            published: Family::default(),
            refused_publishes: Family::default(),
            failures: Family::default(),
            restarts: Family::default(),
            handler_seconds: Family::default(),
            fuel: Family::default(),
            seconds_per_message: Family::new_with_constructor(seconds_tally),
            fuel_per_message: Family::new_with_constructor(fuel_tally),
            instances: Family::default(),
            depth: Family::default(),
            lag: Family::default(),
            bus_published: Counter::default(),
            bus_delivered: Counter::default(),
            bus_dead_letters: Counter::default(),
            bus_refused: Counter::default(),
            bus_deduplicated: Counter::default(),
            round_trips: Counter::default(),
            round_trip_seconds: seconds_tally(),
            audit_failures: Counter::default(),
            audit_failures_seen: 0,
            entries_refused: Counter::default(),
            heartbeats: Counter::default(),
            leader_term: Gauge::default(),
            leading: Gauge::default(),
            live_daemons: Gauge::default(),
            births: Family::default(),
            retirements: Family::default(),
            population: Gauge::default(),
            generation: Gauge::default(),
            best_fitness: Gauge::default(),
            diversity: Gauge::default(),
            reported: Family::default(),
            lease_age: Gauge::default(),
            latency: Family::new_with_constructor(latency_histogram),
            lineage_seen: HashMap::new(),
            seen: HashMap::new(),
            bus_seen: BusStats::default(),
            refused_seen: 0,
        };
        let r = &mut registry;
        r.register(
            "garden_messages_received",
            "Messages instances took from their inboxes (handled, failed or dead-lettered)",
            m.received.clone(),
        );
        r.register(
            "garden_messages_published",
            "Messages instances published",
            m.published.clone(),
        );
        r.register(
            "garden_publishes_refused",
            "Publishes the host refused (undeclared topic, too large)",
            m.refused_publishes.clone(),
        );
        r.register(
            "garden_call_failures",
            "Failed calls into modules, by cause (fuel, deadline, memory, panic, ...)",
            m.failures.clone(),
        );
        r.register(
            "garden_restarts",
            "Instances started again after a trap",
            m.restarts.clone(),
        );
        r.register_with_unit(
            "garden_handler",
            "Wall time spent in message handlers",
            Unit::Seconds,
            m.handler_seconds.clone(),
        );
        r.register(
            "garden_fuel",
            "Fuel (about one unit per Wasm instruction) message handlers used",
            m.fuel.clone(),
        );
        r.register_with_unit(
            "garden_message_handler",
            "Handler time per message",
            Unit::Seconds,
            m.seconds_per_message.clone(),
        );
        r.register(
            "garden_message_fuel",
            "Fuel per message",
            m.fuel_per_message.clone(),
        );
        r.register(
            "garden_instances",
            "Instances on this host, by state",
            m.instances.clone(),
        );
        r.register(
            "garden_inbox_depth",
            "Messages waiting in an instance's inbox",
            m.depth.clone(),
        );
        r.register(
            "garden_consumer_lag",
            "Messages read for an instance and not acknowledged",
            m.lag.clone(),
        );
        r.register(
            "garden_bus_published",
            "Messages the bus accepted for publishing",
            m.bus_published.clone(),
        );
        r.register(
            "garden_bus_delivered",
            "Deliveries into inboxes",
            m.bus_delivered.clone(),
        );
        r.register(
            "garden_bus_dead_letters",
            "Dead letters recorded",
            m.bus_dead_letters.clone(),
        );
        r.register(
            "garden_bus_refused_entries",
            "Bus entries refused because no trusted daemon wrote them",
            m.bus_refused.clone(),
        );
        r.register(
            "garden_bus_deduplicated",
            "Handler outputs not written again: the same output of the same input was written before (a claim or a restart handled the input again)",
            m.bus_deduplicated.clone(),
        );
        r.register("garden_entries_refused", "Entries (messages, decisions, heartbeats, snapshots, leader input) refused as not written by a trusted daemon", m.entries_refused.clone());
        r.register(
            "garden_heartbeats",
            "Heartbeats this daemon wrote",
            m.heartbeats.clone(),
        );
        r.register(
            "garden_leader_term",
            "The leadership term this daemon holds (0: it does not lead)",
            m.leader_term.clone(),
        );
        r.register(
            "garden_leading",
            "1 while this daemon leads",
            m.leading.clone(),
        );
        r.register_with_unit(
            "garden_lease_age",
            "Time since this daemon last renewed the leader lease, while it leads (0 otherwise); near the lease's lifetime, leadership is about to pass",
            Unit::Seconds,
            m.lease_age.clone(),
        );
        r.register(
            "garden_live_daemons",
            "Daemons whose heartbeats this daemon sees",
            m.live_daemons.clone(),
        );
        r.register(
            "garden_bus_round_trips",
            "Pipelined exchanges with Redis",
            m.round_trips.clone(),
        );
        r.register_with_unit(
            "garden_bus_round_trip",
            "Time of each pipelined exchange with Redis; buckets from 1 µs to 1 s",
            Unit::Seconds,
            m.round_trip_seconds.clone(),
        );
        r.register(
            "garden_audit_write_failures",
            "Audit records this process failed to write (each is noted in audit-failures.log)",
            m.audit_failures.clone(),
        );
        m.register_population(r);
        m.registry = registry;
        m
    }

    /// The population's and the modules' reports: births, retirements,
    /// size, generation, fitness, diversity, and what modules report.
    fn register_population(&self, r: &mut Registry) {
        let m = self;
        r.register(
            "garden_births",
            "Variants born, by cause (initial, generation, threshold, diversity, recovery, regime)",
            m.births.clone(),
        );
        r.register(
            "garden_retirements",
            "Variants retired, by cause (selection, quarantined, failed birth)",
            m.retirements.clone(),
        );
        r.register(
            "garden_population",
            "Living variants of the population",
            m.population.clone(),
        );
        r.register(
            "garden_generation",
            "The highest generation among the living variants",
            m.generation.clone(),
        );
        r.register(
            "garden_best_fitness",
            "The best latest fitness among the living variants",
            m.best_fitness.clone(),
        );
        r.register(
            "garden_diversity",
            "The living population's spread of genes (mean normalised spread, 0: clones)",
            m.diversity.clone(),
        );
        r.register_with_unit(
            "garden_latency",
            "Wall time between two messages of one path, by hop (plan_to_decision, decision_to_fill: garden run --metrics)",
            Unit::Seconds,
            m.latency.clone(),
        );
        r.register(
            "garden_reported",
            "The latest metrics modules report about subjects outside the population (e.g. each expert's hit rate and Brier score, as fusion reports them)",
            m.reported.clone(),
        );
    }

    /// Take in the population's lineage as the decision log (or a replay)
    /// tells it: births and retirements by cause, the living population,
    /// its generation and its best latest fitness.
    pub fn observe_lineage(&mut self, lineage: &[crate::replication::LineageRecord]) {
        let mut totals: HashMap<(bool, String), u64> = HashMap::new();
        let (mut living, mut generation, mut best) = (0i64, 0i64, f64::NEG_INFINITY);
        for r in lineage {
            let born = serde_json::to_value(r.birth_cause)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "unknown".into());
            *totals.entry((true, born)).or_default() += 1;
            match &r.death_cause {
                Some(why) => *totals.entry((false, cause_class(why))).or_default() += 1,
                None => {
                    living += 1;
                    generation = generation.max(i64::from(r.generation));
                    if let Some((_, f)) = r.fitness.last() {
                        best = best.max(*f);
                    }
                }
            }
        }
        for (key, n) in totals {
            let was = self.lineage_seen.get(&key).copied().unwrap_or(0);
            let family = if key.0 {
                &self.births
            } else {
                &self.retirements
            };
            family
                .get_or_create(&CauseOnly {
                    cause: key.1.clone(),
                })
                .inc_by(n.saturating_sub(was));
            self.lineage_seen.insert(key, n.max(was));
        }
        self.population.set(living);
        self.generation.set(generation);
        if best.is_finite() {
            self.best_fitness.set(best);
        }
    }

    /// Take in the instances' running totals.
    pub fn observe_instances(&mut self, reports: &[InstanceReport]) {
        self.instances.clear();
        for r in reports {
            self.instances
                .get_or_create(&StateLabel {
                    state: r.state.label().to_string(),
                })
                .inc();
            let now = Seen {
                received: r.received,
                published: r.published,
                refused: r.refused_publishes,
                restarts: r.restarts,
                busy_micros: r.busy_micros,
                fuel: r.fuel,
                failures: r.failures.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                costs: r.costs,
            };
            let before = self.seen.get(&r.id).cloned().unwrap_or_default();
            // Totals that went down belong to a new start of the instance.
            let before = if now.received < before.received || now.fuel < before.fuel {
                Seen::default()
            } else {
                before
            };
            let module = ModuleLabel {
                module: r.module.clone(),
            };
            self.received
                .get_or_create(&module)
                .inc_by(now.received - before.received);
            self.published
                .get_or_create(&module)
                .inc_by(now.published.saturating_sub(before.published));
            self.refused_publishes
                .get_or_create(&module)
                .inc_by(now.refused.saturating_sub(before.refused));
            self.restarts
                .get_or_create(&module)
                .inc_by(now.restarts.saturating_sub(before.restarts));
            self.handler_seconds
                .get_or_create(&module)
                .inc_by((now.busy_micros - before.busy_micros).max(0.0) / 1e6);
            self.fuel
                .get_or_create(&module)
                .inc_by(now.fuel - before.fuel);
            self.seconds_per_message
                .get_or_create(&module)
                .add_growth(&now.costs.seconds, &before.costs.seconds);
            self.fuel_per_message
                .get_or_create(&module)
                .add_growth(&now.costs.fuel, &before.costs.fuel);
            for (cause, n) in &now.failures {
                let was = before.failures.get(cause).copied().unwrap_or(0);
                self.failures
                    .get_or_create(&CauseLabel {
                        module: r.module.clone(),
                        cause: cause.clone(),
                    })
                    .inc_by(n.saturating_sub(was));
            }
            self.seen.insert(r.id.clone(), now);
        }
    }

    /// Take in the inbox depth and lag of the instances running now.
    pub fn observe_inboxes<'a>(&mut self, rows: impl IntoIterator<Item = InboxRow<'a>>) {
        self.depth.clear();
        self.lag.clear();
        for row in rows {
            let label = InstanceLabel {
                module: row.module.to_string(),
                instance: row.instance.to_string(),
            };
            self.depth
                .get_or_create(&label)
                .set(i64::try_from(row.depth).unwrap_or(i64::MAX));
            self.lag
                .get_or_create(&label)
                .set(i64::try_from(row.lag).unwrap_or(i64::MAX));
        }
    }

    /// Take in the bus's running totals.
    pub fn observe_bus(&mut self, now: BusStats) {
        let was = std::mem::replace(&mut self.bus_seen, now);
        self.bus_published
            .inc_by(now.published.saturating_sub(was.published));
        self.bus_delivered
            .inc_by(now.delivered.saturating_sub(was.delivered));
        self.bus_dead_letters
            .inc_by(now.dead_letters.saturating_sub(was.dead_letters));
        self.bus_refused
            .inc_by(now.refused.saturating_sub(was.refused));
        self.bus_deduplicated
            .inc_by(now.deduplicated.saturating_sub(was.deduplicated));
        self.round_trips
            .inc_by(now.round_trips.saturating_sub(was.round_trips));
        self.round_trip_seconds
            .add_growth(&now.round_trip_seconds, &was.round_trip_seconds);
    }

    /// Take in the audit log's running total of failed writes.
    pub fn observe_audit_failures(&mut self, failures: u64) {
        self.audit_failures
            .inc_by(failures.saturating_sub(self.audit_failures_seen));
        self.audit_failures_seen = self.audit_failures_seen.max(failures);
    }

    /// Take in a heartbeat: the daemon's term if it leads, the live
    /// daemons it sees, and its running total of refused entries.
    pub fn observe_heartbeat(&mut self, leader_term: Option<u64>, live: usize, refused: u64) {
        self.heartbeats.inc();
        let term = leader_term.map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX));
        self.leader_term.set(term);
        self.leading.set(i64::from(leader_term.is_some()));
        self.live_daemons
            .set(i64::try_from(live).unwrap_or(i64::MAX));
        self.entries_refused
            .inc_by(refused.saturating_sub(self.refused_seen));
        self.refused_seen = self.refused_seen.max(refused);
    }

    /// Take in the living population's spread of genes.
    pub fn observe_diversity(&mut self, diversity: Option<f64>) {
        if let Some(d) = diversity.filter(|d| d.is_finite()) {
            self.diversity.set(d);
        }
    }

    /// Take in what modules last reported about subjects outside the
    /// population: (subject, [(metric, value)]).
    pub fn observe_reported(&mut self, reported: &[(String, Vec<(String, f64)>)]) {
        for (subject, metrics) in reported {
            for (metric, value) in metrics.iter().filter(|(_, v)| v.is_finite()) {
                self.reported
                    .get_or_create(&ReportLabel {
                        subject: subject.clone(),
                        metric: metric.clone(),
                    })
                    .set(*value);
            }
        }
    }

    /// Take in one timed hop between two messages (`hop` names it, e.g.
    /// `plan_to_decision`).
    pub fn observe_latency(&mut self, hop: &str, seconds: f64) {
        if seconds.is_finite() {
            self.latency
                .get_or_create(&HopLabel {
                    hop: hop.to_string(),
                })
                .observe(seconds);
        }
    }

    /// Take in the time since this daemon renewed the leader lease (none:
    /// it does not lead).
    pub fn observe_lease(&mut self, age: Option<std::time::Duration>) {
        self.lease_age.set(age.map_or(0.0, |a| a.as_secs_f64()));
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A retirement's cause as a label: the words before its detail
/// (`selection: fitness -0.2` is `selection`), so the label takes few
/// values.
fn cause_class(why: &str) -> String {
    why.split(':')
        .next()
        .unwrap_or(why)
        .trim()
        .chars()
        .take(32)
        .collect()
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::InstanceState;

    fn report(id: &str, received: u64, fuel: u64) -> InstanceReport {
        InstanceReport {
            id: id.into(),
            module: "alpha-ema".into(),
            role: "alpha".into(),
            cohort: id.into(),
            params: Vec::new(),
            state: InstanceState::Running,
            received,
            calls: received,
            busy_micros: received as f64 * 10.0,
            micros_per_message: 10.0,
            fuel,
            failures: [("fuel".to_string(), 1)].into_iter().collect(),
            restarts: 0,
            costs: {
                let mut c = Costs::default();
                for _ in 0..received {
                    c.observe(1e-5, 100);
                }
                c
            },
            published: received / 2,
            refused_publishes: 0,
            last_error: None,
        }
    }

    fn value(text: &str, name: &str) -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    }

    #[test]
    fn counters_grow_by_what_grew_and_a_restarted_instance_adds_its_new_totals() {
        let mut m = Metrics::new();
        m.observe_instances(&[report("a.0", 10, 1_000), report("a.1", 4, 400)]);
        m.observe_instances(&[report("a.0", 15, 1_500), report("a.1", 4, 400)]);
        let text = m.encode();
        assert_eq!(
            value(
                &text,
                "garden_messages_received_total{module=\"alpha-ema\"}"
            ),
            19.0
        );
        assert_eq!(
            value(&text, "garden_fuel_total{module=\"alpha-ema\"}"),
            1_900.0
        );
        assert_eq!(
            value(
                &text,
                "garden_call_failures_total{module=\"alpha-ema\",cause=\"fuel\"}"
            ),
            2.0
        );
        assert_eq!(value(&text, "garden_instances{state=\"ok\"}"), 2.0);
        assert!(
            text.contains("# UNIT garden_handler_seconds seconds"),
            "{text}"
        );
        // 19 messages of 10 µs and 100 fuel each, in their buckets.
        assert_eq!(
            value(
                &text,
                "garden_message_handler_seconds_bucket{le=\"0.00001\",module=\"alpha-ema\"}"
            ),
            19.0,
            "{text}"
        );
        assert_eq!(
            value(&text, "garden_message_fuel_count{module=\"alpha-ema\"}"),
            19.0
        );
        // a.0 started again: its 3 new messages count, nothing goes back.
        m.observe_instances(&[report("a.0", 3, 300)]);
        let text = m.encode();
        assert_eq!(
            value(
                &text,
                "garden_messages_received_total{module=\"alpha-ema\"}"
            ),
            22.0
        );
        assert!(text.ends_with("# EOF\n"));
        m.observe_inboxes([InboxRow {
            instance: "a.0",
            module: "alpha-ema",
            depth: 7,
            lag: 9,
        }]);
        m.observe_inboxes([InboxRow {
            instance: "a.1",
            module: "alpha-ema",
            depth: 1,
            lag: 1,
        }]);
        let text = m.encode();
        assert!(
            !text.contains("instance=\"a.0\""),
            "a.0's depth is dropped: {text}"
        );
        let record = |id: &str, death: Option<&str>, generation: u32, fitness: f64| {
            crate::replication::LineageRecord {
                id: id.into(),
                parents: Vec::new(),
                component: String::new(),
                blob: String::new(),
                genes: Vec::new(),
                generation,
                birth_bar: 0,
                death_bar: death.map(|_| 5),
                birth_cause: crate::replication::BirthCause::Initial,
                death_cause: death.map(str::to_string),
                fitness: vec![(4, fitness)],
                in_sample: None,
                out_of_sample: None,
                control: false,
                fitness_by_label: Vec::new(),
                code_changes: Vec::new(),
            }
        };
        m.observe_lineage(&[
            record("a.0", None, 0, 0.5),
            record("a.1", Some("selection: fitness -0.200"), 0, -0.2),
            record("a.2", None, 2, 1.5),
        ]);
        m.observe_lineage(&[
            record("a.0", None, 0, 0.5),
            record("a.1", Some("selection: fitness -0.200"), 0, -0.2),
            record("a.2", None, 2, 1.5),
        ]);
        let text = m.encode();
        assert_eq!(value(&text, "garden_births_total{cause=\"initial\"}"), 3.0);
        assert_eq!(
            value(&text, "garden_retirements_total{cause=\"selection\"}"),
            1.0
        );
        assert_eq!(value(&text, "garden_population "), 2.0);
        assert_eq!(value(&text, "garden_generation "), 2.0);
        assert_eq!(value(&text, "garden_best_fitness "), 1.5);
        m.observe_heartbeat(Some(3), 2, 5);
        m.observe_heartbeat(Some(3), 2, 5);
        let text = m.encode();
        assert_eq!(value(&text, "garden_leader_term "), 3.0);
        assert_eq!(value(&text, "garden_entries_refused_total "), 5.0);
        assert_eq!(value(&text, "garden_heartbeats_total "), 2.0);
    }
}
