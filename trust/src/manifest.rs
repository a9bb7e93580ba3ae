//! The manifest: what a publisher states about a component and signs.
//!
//! A TOML file beside each module's source (`garden.toml`). `garden sign`
//! fills in `component` (the code's sha256) and `publisher` (the signing
//! key's id) and embeds the manifest, as text, in the signed component.

use serde::{Deserialize, Serialize};

use crate::{Digest, KeyId};

/// Why a manifest is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not valid TOML for a manifest.
    #[error("invalid manifest {origin}: {message}")]
    Parse {
        /// Where it came from.
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A field has an unusable value.
    #[error("invalid manifest {origin}: {message}")]
    Invalid {
        /// Where it came from.
        origin: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Topics a module may use.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Topics it may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Topics it may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
}

/// Limits the module asks for; the host refuses a module that asks for more
/// than its ceilings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedLimits {
    /// Linear memory, bytes.
    pub memory_bytes: Option<u64>,
    /// Fuel per call.
    pub fuel_per_call: Option<u64>,
}

/// One gene as the manifest declares it (must match the module's own
/// `describe()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneSpec {
    /// Gene name.
    pub name: String,
    /// `float`, `int` or `boolean`.
    pub kind: String,
    /// Lower bound.
    pub min: f64,
    /// Upper bound.
    pub max: f64,
    /// Default value.
    pub default: f64,
    /// Mutation scale.
    pub scale: f64,
}

/// A component's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Module name (as its `describe()` reports it).
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// Role (as its `describe()` reports it).
    pub role: String,
    /// WIT package it targets, e.g. `garden:pipeline@0.4.0`.
    pub wit_package: String,
    /// World it targets, e.g. `garden-module`.
    pub wit_world: String,
    /// Key id of the publisher; filled in by `garden sign`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<KeyId>,
    /// sha256 of the code; filled in by `garden sign`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// Topics it may use.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Limits it asks for.
    #[serde(default)]
    pub limits: RequestedLimits,
    /// Its genes.
    #[serde(default)]
    pub genes: Vec<GeneSpec>,
}

impl Manifest {
    /// Parse and check a manifest; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ManifestError> {
        let m: Manifest = toml::from_str(text).map_err(|e| ManifestError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        m.check(origin)?;
        Ok(m)
    }

    /// Check the fields [`Manifest::parse`] checks; `origin` names it in errors.
    pub fn check(&self, origin: &str) -> Result<(), ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            origin: origin.to_string(),
            message,
        };
        if self.name.trim().is_empty() {
            return Err(invalid("`name` is empty".into()));
        }
        semver::Version::parse(&self.version).map_err(|e| {
            invalid(format!(
                "`version` = {:?} is not semantic versioning (like 1.2.3): {e}",
                self.version
            ))
        })?;
        if let Some(c) = &self.component {
            c.parse::<Digest>()
                .map_err(|e| invalid(format!("`component`: {e}")))?;
        }
        let topics = self
            .capabilities
            .subscribe
            .iter()
            .map(|t| ("subscribe", t))
            .chain(self.capabilities.publish.iter().map(|t| ("publish", t)));
        for (list, topic) in topics {
            crate::topic::check(topic)
                .map_err(|e| invalid(format!("`capabilities.{list}`: {e}")))?;
        }
        for g in &self.genes {
            if !["float", "int", "boolean"].contains(&g.kind.as_str()) {
                return Err(invalid(format!(
                    "gene `{}`: kind must be float, int or boolean",
                    g.name
                )));
            }
        }
        Ok(())
    }

    /// The canonical text of the manifest: what is embedded and signed.
    pub fn to_canonical(&self) -> String {
        // Serialising a struct of strings, numbers and lists cannot fail.
        toml::to_string(self).unwrap_or_default()
    }

    /// `name@version`.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "alpha-ema"
version = "0.1.0"
role = "alpha"
wit_package = "garden:pipeline@0.4.0"
wit_world = "garden-module"

[capabilities]
subscribe = ["bar"]
publish = ["plan"]

[limits]
memory_bytes = 16777216

[[genes]]
name = "fast"
kind = "int"
min = 2.0
max = 50.0
default = 10.0
scale = 3.0
"#;

    #[test]
    fn parses_and_round_trips_canonically() {
        let m = Manifest::parse(GOOD, "garden.toml").unwrap();
        assert_eq!(m.reference(), "alpha-ema@0.1.0");
        let again = Manifest::parse(&m.to_canonical(), "canonical").unwrap();
        assert_eq!(again, m);
        assert_eq!(again.to_canonical(), m.to_canonical());
    }

    #[test]
    fn refuses_bad_manifests_with_reasons() {
        for (text, needle) in [
            (
                GOOD.replace("0.1.0\"\nrole", "one\"\nrole"),
                "semantic versioning",
            ),
            (
                GOOD.replace("kind = \"int\"", "kind = \"text\""),
                "kind must be",
            ),
            (GOOD.replace("role = ", "rolle = "), "rolle"),
            ("not toml at all [".to_string(), "invalid manifest"),
        ] {
            let err = Manifest::parse(&text, "garden.toml").unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
    }
}
