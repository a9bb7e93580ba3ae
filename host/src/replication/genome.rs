//! Parameter blobs: canonical bytes of a variant's gene values, their
//! sha256, and the two ways to make new ones: Gaussian mutation within each
//! gene's bounds and uniform crossover between parents of the same code.

use rand::RngExt;
use sha2::{Digest, Sha256};

use crate::bindings::types::{Gene, GeneKind, GeneValue, Param};
use crate::config::Mutation;
use crate::genes::{typed, value_f64};

/// Why two parents cannot be crossed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenomeError {
    /// Crossover needs parents of the same component.
    #[error("crossover needs parents of the same code: {0} and {1} differ")]
    DifferentCode(String, String),
    /// The parents' genes do not line up.
    #[error("parents have different genes")]
    DifferentGenes,
}

/// Canonical bytes of `params` (in the module's gene order): per gene, its
/// name's length (u16, big-endian), the name, a kind tag (0 float, 1 int,
/// 2 boolean) and the value (f64 or i64 big-endian, or one byte).
pub fn blob(params: &[Param]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in params {
        let name = p.name.as_bytes();
        out.extend_from_slice(&(name.len().min(u16::MAX as usize) as u16).to_be_bytes());
        out.extend_from_slice(&name[..name.len().min(u16::MAX as usize)]);
        match p.value {
            GeneValue::Float(v) => {
                out.push(0);
                out.extend_from_slice(&v.to_be_bytes());
            }
            GeneValue::Int(v) => {
                out.push(1);
                out.extend_from_slice(&v.to_be_bytes());
            }
            GeneValue::Boolean(b) => {
                out.push(2);
                out.push(u8::from(b));
            }
        }
    }
    out
}

/// sha256 of [`blob`], hex.
pub fn blob_hash(params: &[Param]) -> String {
    hex::encode(Sha256::digest(blob(params)))
}

/// A standard normal draw (Box–Muller), from the run's seeded generator.
fn normal(rng: &mut impl RngExt) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Mutate `params` in place: each numeric gene with probability `rate` gets
/// Gaussian noise with the gene's scale (integers rounded), each boolean
/// flips with probability `flip`; every value stays within its bounds.
pub fn mutate(genes: &[Gene], params: &mut [Param], m: &Mutation, rng: &mut impl RngExt) {
    for p in params.iter_mut() {
        let Some(g) = genes.iter().find(|g| g.name == p.name) else {
            continue;
        };
        match g.kind {
            GeneKind::Boolean => {
                if rng.random_bool(m.flip.clamp(0.0, 1.0))
                    && let GeneValue::Boolean(b) = p.value
                {
                    p.value = GeneValue::Boolean(!b);
                }
            }
            GeneKind::Float | GeneKind::Int => {
                if rng.random_bool(m.rate.clamp(0.0, 1.0)) {
                    let x = value_f64(&p.value) + normal(rng) * g.scale * m.scale;
                    p.value = typed(g, x);
                }
            }
        }
    }
}

/// Uniform crossover: each gene from `a` or `b` with equal probability.
/// Only parents of the same code (`digest_a == digest_b`) may cross.
pub fn crossover(
    digest_a: &str,
    a: &[Param],
    digest_b: &str,
    b: &[Param],
    rng: &mut impl RngExt,
) -> Result<Vec<Param>, GenomeError> {
    if digest_a != digest_b {
        return Err(GenomeError::DifferentCode(digest_a.into(), digest_b.into()));
    }
    if a.len() != b.len() || a.iter().zip(b).any(|(x, y)| x.name != y.name) {
        return Err(GenomeError::DifferentGenes);
    }
    Ok(a.iter()
        .zip(b)
        .map(|(x, y)| {
            if rng.random_bool(0.5) {
                x.clone()
            } else {
                y.clone()
            }
        })
        .collect())
}

/// How spread out a population's genes are: for every numeric gene, the
/// standard deviation of its values rescaled to [0, 1] by its bounds;
/// the mean over genes. 0 means every variant has the same genes; a uniform
/// spread gives about 0.29.
pub fn diversity(genes: &[Gene], population: &[&[Param]]) -> f64 {
    if population.len() < 2 {
        return 0.0;
    }
    let mut spreads = Vec::new();
    for g in genes
        .iter()
        .filter(|g| g.max > g.min && g.kind != GeneKind::Boolean)
    {
        let xs: Vec<f64> = population
            .iter()
            .filter_map(|ps| ps.iter().find(|p| p.name == g.name))
            .map(|p| (value_f64(&p.value) - g.min) / (g.max - g.min))
            .collect();
        let n = xs.len() as f64;
        if n < 2.0 {
            continue;
        }
        let mean = xs.iter().sum::<f64>() / n;
        spreads.push((xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt());
    }
    if spreads.is_empty() {
        return 0.0;
    }
    spreads.iter().sum::<f64>() / spreads.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn genes() -> Vec<Gene> {
        vec![
            Gene {
                name: "w".into(),
                kind: GeneKind::Int,
                min: 2.0,
                max: 50.0,
                default: 10.0,
                scale: 30.0,
            },
            Gene {
                name: "k".into(),
                kind: GeneKind::Float,
                min: 0.5,
                max: 5.0,
                default: 2.0,
                scale: 10.0,
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

    proptest! {
        #[test]
        fn mutation_stays_within_bounds_and_kinds(seed in any::<u64>(), rounds in 1usize..20) {
            let g = genes();
            let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(seed);
            let mut p = crate::genes::random(&g, &mut rng);
            let m = Mutation { rate: 1.0, flip: 0.5, scale: 1.0 };
            for _ in 0..rounds {
                mutate(&g, &mut p, &m, &mut rng);
                prop_assert!(matches!(p[0].value, GeneValue::Int(v) if (2..=50).contains(&v)));
                prop_assert!(matches!(p[1].value, GeneValue::Float(v) if (0.5..=5.0).contains(&v)));
                prop_assert!(matches!(p[2].value, GeneValue::Boolean(_)));
            }
        }

        #[test]
        fn crossover_takes_every_gene_from_a_parent(seed in any::<u64>()) {
            let g = genes();
            let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(seed);
            let a = crate::genes::random(&g, &mut rng);
            let b = crate::genes::random(&g, &mut rng);
            let c = crossover("x", &a, "x", &b, &mut rng).unwrap();
            for i in 0..3 {
                prop_assert!(c[i] == a[i] || c[i] == b[i]);
            }
        }
    }

    #[test]
    fn crossover_refuses_parents_of_different_code() {
        let g = genes();
        let p = crate::genes::defaults(&g);
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(1);
        assert!(matches!(
            crossover("a", &p, "b", &p, &mut rng),
            Err(GenomeError::DifferentCode(..))
        ));
    }

    #[test]
    fn blob_is_canonical_and_hash_tells_params_apart() {
        let g = genes();
        let p = crate::genes::defaults(&g);
        assert_eq!(blob(&p), blob(&p.clone()));
        let mut q = p.clone();
        q[1].value = GeneValue::Float(2.5);
        assert_ne!(blob_hash(&p), blob_hash(&q));
        assert_eq!(blob_hash(&p).len(), 64);
    }

    #[test]
    fn diversity_is_zero_for_clones_and_positive_for_a_spread() {
        let g = genes();
        let p = crate::genes::defaults(&g);
        assert_eq!(diversity(&g, &[&p, &p, &p]), 0.0);
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(3);
        let pop: Vec<Vec<Param>> = (0..50)
            .map(|_| crate::genes::random(&g, &mut rng))
            .collect();
        let refs: Vec<&[Param]> = pop.iter().map(|v| v.as_slice()).collect();
        let d = diversity(&g, &refs);
        assert!(d > 0.2 && d < 0.35, "{d}");
    }
}
