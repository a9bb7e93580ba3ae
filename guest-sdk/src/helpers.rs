//! Small constructors and accessors on the generated types, so that module
//! code reads as what it means rather than as record literals.

use crate::{Delivery, Gene, GeneKind, GeneValue, Info, InitContext, Param, Side, Subscription};

impl Info {
    /// A module with no topics and no genes yet.
    pub fn new(name: &str, version: &str, role: &str) -> Self {
        Info {
            name: name.to_string(),
            version: version.to_string(),
            role: role.to_string(),
            subscribes: Vec::new(),
            publishes: Vec::new(),
            genes: Vec::new(),
            cohort: 0,
        }
    }

    /// Let one instance carry up to `members` variants of this module (a
    /// cohort), each its own value of the module type with its own
    /// messages. Only for modules whose variants share nothing but code;
    /// the pipeline decides whether to use it (`cohort = N`).
    pub fn cohort(mut self, members: u32) -> Self {
        self.cohort = members;
        self
    }

    /// Add a subscription.
    pub fn subscribe(mut self, subscription: Subscription) -> Self {
        self.subscribes.push(subscription);
        self
    }

    /// Declare a topic this module publishes to; publishing to any other is refused.
    pub fn publishes(mut self, topic: &str) -> Self {
        self.publishes.push(topic.to_string());
        self
    }

    /// Declare a gene.
    pub fn gene(mut self, gene: Gene) -> Self {
        self.genes.push(gene);
        self
    }
}

impl Subscription {
    /// Every instance of the module receives every message on `topic`.
    pub fn broadcast(topic: &str) -> Self {
        Subscription {
            topic: topic.to_string(),
            delivery: Delivery::Broadcast,
            addressed: false,
        }
    }

    /// One instance of the module receives each message (chosen by key).
    pub fn shared(topic: &str) -> Self {
        Subscription {
            topic: topic.to_string(),
            delivery: Delivery::Shared,
            addressed: false,
        }
    }

    /// Only messages on `topic` whose key is this instance's id.
    pub fn addressed(topic: &str) -> Self {
        Subscription {
            topic: topic.to_string(),
            delivery: Delivery::Broadcast,
            addressed: true,
        }
    }
}

impl Gene {
    fn new(name: &str, kind: GeneKind, min: f64, max: f64, default: f64, scale: f64) -> Self {
        Gene {
            name: name.to_string(),
            kind,
            min,
            max,
            default,
            scale,
        }
    }

    /// A real-valued gene in `[min, max]`, mutated with standard deviation `scale`.
    pub fn float(name: &str, min: f64, max: f64, default: f64, scale: f64) -> Self {
        Self::new(name, GeneKind::Float, min, max, default, scale)
    }

    /// An integer gene in `[min, max]`; mutations are rounded.
    pub fn int(name: &str, min: f64, max: f64, default: f64, scale: f64) -> Self {
        Self::new(name, GeneKind::Int, min, max, default, scale)
    }

    /// A flag; mutation flips it with a probability.
    pub fn boolean(name: &str, default: bool) -> Self {
        let d = if default { 1.0 } else { 0.0 };
        Self::new(name, GeneKind::Boolean, 0.0, 1.0, d, 0.0)
    }
}

impl GeneValue {
    /// The value as a float, whatever its kind (booleans are 0 or 1).
    pub fn as_f64(&self) -> f64 {
        match *self {
            GeneValue::Float(v) => v,
            GeneValue::Int(v) => v as f64,
            GeneValue::Boolean(b) => f64::from(u8::from(b)),
        }
    }
}

impl InitContext {
    fn param(&self, name: &str) -> Result<&Param, String> {
        self.params
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| format!("parameter `{name}` is missing"))
    }

    /// A float parameter (ints are widened).
    pub fn float(&self, name: &str) -> Result<f64, String> {
        let value = self.param(name)?.value.as_f64();
        if value.is_finite() {
            Ok(value)
        } else {
            Err(format!("parameter `{name}` is not a finite number"))
        }
    }

    /// An integer parameter (floats must be whole).
    pub fn int(&self, name: &str) -> Result<i64, String> {
        match self.param(name)?.value {
            GeneValue::Int(v) => Ok(v),
            GeneValue::Float(v) if v.fract() == 0.0 && v.is_finite() => Ok(v as i64),
            ref other => Err(format!("parameter `{name}` is not an integer: {other:?}")),
        }
    }

    /// A boolean parameter.
    pub fn boolean(&self, name: &str) -> Result<bool, String> {
        match self.param(name)?.value {
            GeneValue::Boolean(b) => Ok(b),
            GeneValue::Int(v) => Ok(v != 0),
            GeneValue::Float(v) => Ok(v != 0.0),
        }
    }

    /// A free-form setting, if present.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value.as_str())
    }

    /// A number setting in `range` (`default` when absent), or an error
    /// naming the setting and the range.
    pub fn setting_in(
        &self,
        name: &str,
        default: f64,
        range: std::ops::RangeInclusive<f64>,
    ) -> Result<f64, String> {
        let v = self.setting_f64(name, default)?;
        if !range.contains(&v) {
            return Err(format!(
                "{name} must be in {}..={}, got {v}",
                range.start(),
                range.end()
            ));
        }
        Ok(v)
    }

    /// A whole-number setting in `range` (`default` when absent), or an
    /// error naming the setting and the range.
    pub fn setting_whole(
        &self,
        name: &str,
        default: f64,
        range: std::ops::RangeInclusive<f64>,
    ) -> Result<u64, String> {
        let v = self.setting_f64(name, default)?;
        if !range.contains(&v) || v.fract() != 0.0 {
            return Err(format!(
                "{name} must be a whole number in {}..={}, got {v}",
                range.start(),
                range.end()
            ));
        }
        Ok(v as u64)
    }

    /// A setting parsed as a number, or `default` when absent.
    pub fn setting_f64(&self, name: &str, default: f64) -> Result<f64, String> {
        match self.setting(name) {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("setting `{name}` = `{text}` is not a number")),
        }
    }
}

impl Side {
    /// +1 for long, -1 for short: multiply a price move by it to get profit.
    pub fn sign(self) -> f64 {
        match self {
            Side::Long => 1.0,
            Side::Short => -1.0,
        }
    }
}
