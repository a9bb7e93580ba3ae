//! Records a module's native unit tests hand it: an [`InitContext`] from
//! settings, an [`Envelope`] around a body, a plan. What every module's
//! tests would otherwise build by hand, written once.

use crate::{Body, Envelope, InitContext, Plan, Setting, Side};

/// The context of instance `instance` with these settings and no
/// parameters or snapshot.
pub fn context(instance: &str, settings: &[(&str, &str)]) -> InitContext {
    InitContext {
        instance: instance.into(),
        member: 0,
        params: vec![],
        settings: settings
            .iter()
            .map(|(name, value)| Setting {
                name: (*name).into(),
                value: (*value).into(),
            })
            .collect(),
        snapshot: None,
    }
}

/// `body` as published by `source` under `key`, at event time 0.
pub fn message(source: &str, key: &str, body: Body) -> Envelope {
    Envelope {
        topic: "test".into(),
        key: key.into(),
        seq: 0,
        time: 0,
        source: source.into(),
        body,
    }
}

/// Plan `id` of variant `a` on symbol `X`: size 1, horizon 5, confidence
/// 0.5, written at time 0.
pub fn plan(id: &str, side: Side, entry: f64, stop: f64, target: f64) -> Plan {
    Plan {
        id: id.into(),
        origin: "a".into(),
        symbol: "X".into(),
        side,
        entry,
        stop,
        target,
        size: 1.0,
        horizon: 5,
        confidence: 0.5,
        time: 0,
    }
}
