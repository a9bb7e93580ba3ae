//! Genes and parameters: a module's declared genes turned into parameter
//! values (defaults, random values within bounds, overrides from
//! configuration). A leaf: it depends on the WIT types only. Mutation and
//! crossover build on it in the replication engine.

use std::collections::BTreeMap;

use rand::RngExt;

use crate::bindings::types::{Gene, GeneKind, GeneValue, Param};

/// A parameter that cannot be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    /// The module has no such gene.
    #[error("module `{module}` has no gene `{name}`; its genes are: {known}")]
    UnknownGene {
        /// Module name.
        module: String,
        /// The unknown name.
        name: String,
        /// The genes it has, comma-separated.
        known: String,
    },
    /// The value is outside the gene's bounds.
    #[error("gene `{name}` of module `{module}` must lie in [{min}, {max}], got {value}")]
    OutOfBounds {
        /// Module name.
        module: String,
        /// Gene name.
        name: String,
        /// The value given.
        value: f64,
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
    },
}

/// The value of a gene as a number (booleans are 0 or 1).
pub fn value_f64(value: &GeneValue) -> f64 {
    match *value {
        GeneValue::Float(v) => v,
        GeneValue::Int(v) => v as f64,
        GeneValue::Boolean(b) => f64::from(u8::from(b)),
    }
}

/// A number as a value of `gene`'s kind: integers round, booleans are
/// true from 0.5 up. Always clamped to the gene's bounds.
pub fn typed(gene: &Gene, x: f64) -> GeneValue {
    let x = x.clamp(gene.min, gene.max);
    match gene.kind {
        GeneKind::Float => GeneValue::Float(x),
        GeneKind::Int => GeneValue::Int(x.round() as i64),
        GeneKind::Boolean => GeneValue::Boolean(x >= 0.5),
    }
}

/// Every gene at its default.
pub fn defaults(genes: &[Gene]) -> Vec<Param> {
    genes
        .iter()
        .map(|g| Param {
            name: g.name.clone(),
            value: typed(g, g.default),
        })
        .collect()
}

/// Every gene drawn uniformly within its bounds (booleans: a fair coin).
pub fn random(genes: &[Gene], rng: &mut impl RngExt) -> Vec<Param> {
    genes
        .iter()
        .map(|g| {
            let x = match g.kind {
                GeneKind::Boolean => f64::from(u8::from(rng.random_bool(0.5))),
                _ if g.max > g.min => rng.random_range(g.min..=g.max),
                _ => g.min,
            };
            Param {
                name: g.name.clone(),
                value: typed(g, x),
            }
        })
        .collect()
}

/// Replace values in `params` by `overrides`, refusing unknown genes and
/// out-of-bounds values.
pub fn apply_overrides(
    module: &str,
    genes: &[Gene],
    params: &mut [Param],
    overrides: &BTreeMap<String, f64>,
) -> Result<(), ParamError> {
    for (name, &value) in overrides {
        let Some(gene) = genes.iter().find(|g| &g.name == name) else {
            return Err(ParamError::UnknownGene {
                module: module.into(),
                name: name.clone(),
                known: genes
                    .iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        if !(gene.min..=gene.max).contains(&value) {
            return Err(ParamError::OutOfBounds {
                module: module.into(),
                name: name.clone(),
                value,
                min: gene.min,
                max: gene.max,
            });
        }
        if let Some(p) = params.iter_mut().find(|p| &p.name == name) {
            p.value = typed(gene, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn genes() -> Vec<Gene> {
        vec![
            Gene {
                name: "w".into(),
                kind: GeneKind::Int,
                min: 2.0,
                max: 50.0,
                default: 10.0,
                scale: 3.0,
            },
            Gene {
                name: "k".into(),
                kind: GeneKind::Float,
                min: 0.5,
                max: 5.0,
                default: 2.0,
                scale: 0.3,
            },
            Gene {
                name: "b".into(),
                kind: GeneKind::Boolean,
                min: 0.0,
                max: 1.0,
                default: 1.0,
                scale: 0.0,
            },
        ]
    }

    #[test]
    fn random_params_stay_in_bounds_with_the_right_kinds_and_repeat_per_seed() {
        let g = genes();
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..500 {
            let p = random(&g, &mut rng);
            assert!(matches!(p[0].value, GeneValue::Int(v) if (2..=50).contains(&v)));
            assert!(matches!(p[1].value, GeneValue::Float(v) if (0.5..=5.0).contains(&v)));
            assert!(matches!(p[2].value, GeneValue::Boolean(_)));
        }
        let a = random(&g, &mut rand::rngs::ChaCha8Rng::seed_from_u64(1));
        let b = random(&g, &mut rand::rngs::ChaCha8Rng::seed_from_u64(1));
        assert_eq!(a, b);
    }

    #[test]
    fn overrides_are_checked() {
        let g = genes();
        let mut p = defaults(&g);
        assert_eq!(p[0].value, GeneValue::Int(10));
        let ok: BTreeMap<String, f64> = [("w".to_string(), 20.0)].into();
        apply_overrides("m", &g, &mut p, &ok).unwrap();
        assert_eq!(p[0].value, GeneValue::Int(20));
        let unknown: BTreeMap<String, f64> = [("nope".to_string(), 1.0)].into();
        assert!(matches!(
            apply_overrides("m", &g, &mut p, &unknown),
            Err(ParamError::UnknownGene { .. })
        ));
        let out: BTreeMap<String, f64> = [("k".to_string(), 9.0)].into();
        let err = apply_overrides("m", &g, &mut p, &out).unwrap_err();
        assert!(err.to_string().contains("[0.5, 5]"), "{err}");
    }
}
