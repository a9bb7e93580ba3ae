//! Every resource limit the host enforces, in one place.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits applied to every module instance, and the supervision policy for
/// instances that break them.
///
/// Memory, fuel, deadline, publish count and message size bound one call;
/// the failure window and backoff decide what happens after a failed call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most bytes of linear memory one instance may hold, summed over every
    /// memory of every core instance inside its component.
    pub memory_bytes: usize,
    /// Most core instances one component may create (a Rust component has
    /// a few, a Python one about 14). Components above it are refused at load.
    pub max_core_instances: u32,
    /// Most linear memories one component may define. Refused at load above it.
    pub max_memories: u32,
    /// Most tables one component may define. Refused at load above it.
    pub max_tables: u32,
    /// Most elements one table may grow to.
    pub max_table_elements: usize,
    /// Fuel (roughly, Wasm instructions) one call may burn: a deterministic
    /// CPU bound.
    pub fuel_per_call: u64,
    /// Wall-clock bound on one call, enforced by epoch interruption.
    #[serde(with = "millis")]
    pub deadline: Duration,
    /// Most `publish` calls one call may make (refused ones count too).
    pub max_publishes_per_call: u32,
    /// Largest encoded message a module may publish, in bytes.
    pub max_message_bytes: u32,
    /// Most `log` lines one call may write; later ones are counted, not written.
    pub max_logs_per_call: u32,
    /// Longest log line kept, bytes; the rest is cut (a panic message is
    /// kept to a quarter of this).
    pub max_log_bytes: usize,
    /// Most genes, subscriptions or published topics `describe()` may list.
    pub max_describe_items: usize,
    /// Longest name `describe()` may give (module, version, role, gene), bytes.
    pub max_name_bytes: usize,
    /// Most messages waiting in one instance's inbox before its producers wait.
    pub inbox_capacity: usize,
    /// Most instances alive at once (sizes the pooling allocator).
    pub max_instances: u32,
    /// Failures within this window that quarantine an instance.
    pub max_failures: u32,
    /// The window for `max_failures`.
    #[serde(with = "millis")]
    pub failure_window: Duration,
    /// Wait before the first re-instantiation after a failure; doubles per
    /// consecutive failure up to `backoff_max`.
    #[serde(with = "millis")]
    pub backoff_initial: Duration,
    /// Longest wait before a re-instantiation.
    #[serde(with = "millis")]
    pub backoff_max: Duration,
    /// Take an instance's snapshot every this many successful calls (it
    /// restarts from the last one after a trap); 0 never.
    pub snapshot_every: u64,
    /// Largest snapshot kept, bytes; larger ones are refused and counted.
    pub max_snapshot_bytes: usize,
    /// Most names (topics, publishers) one instance's name table holds
    /// before the host starts it again from empty: it bounds what a long
    /// run with many births costs a module's memory.
    pub max_names: usize,
    /// Most variants one instance may carry as a cohort, whatever the
    /// module or the pipeline asks for.
    pub max_cohort: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            max_core_instances: 20,
            max_memories: 4,
            max_tables: 20,
            max_table_elements: 20_000,
            fuel_per_call: 200_000_000,
            deadline: Duration::from_millis(1_000),
            max_publishes_per_call: 1_024,
            max_message_bytes: 64 << 10,
            max_logs_per_call: 64,
            max_log_bytes: 4_096,
            max_describe_items: 256,
            max_name_bytes: 256,
            inbox_capacity: 4_096,
            max_instances: 1_000,
            max_failures: 5,
            failure_window: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(250),
            snapshot_every: 500,
            max_snapshot_bytes: 1 << 20,
            max_names: 4_096,
            max_cohort: 1_024,
        }
    }
}

impl Limits {
    /// The backoff before re-instantiation attempt `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let l = Limits {
            backoff_initial: Duration::from_millis(2),
            backoff_max: Duration::from_millis(10),
            ..Limits::default()
        };
        assert_eq!(l.backoff(1), Duration::from_millis(2));
        assert_eq!(l.backoff(2), Duration::from_millis(4));
        assert_eq!(l.backoff(3), Duration::from_millis(8));
        assert_eq!(l.backoff(4), Duration::from_millis(10));
        assert_eq!(l.backoff(200), Duration::from_millis(10));
    }

    #[test]
    fn limits_read_from_toml_with_defaults_for_the_rest() {
        let l: Limits = toml::from_str("memory_bytes = 1048576\ndeadline = 50").expect("valid");
        assert_eq!(l.memory_bytes, 1 << 20);
        assert_eq!(l.deadline, Duration::from_millis(50));
        assert_eq!(l.fuel_per_call, Limits::default().fuel_per_call);
        assert!(
            toml::from_str::<Limits>("memroy_bytes = 1").is_err(),
            "typos are refused"
        );
    }
}
