//! The instances a pipeline starts: ids, settings and genes for every
//! module of a pipeline, laid out the same way by `garden run` and by every
//! daemon of a garden.

use crate::genes::{ParamError, apply_overrides, defaults, random};

/// One instance a pipeline starts, as [`plan`] lays them out.
#[derive(Debug, Clone)]
pub struct Planned {
    /// What to spawn.
    pub spec: crate::InstanceSpec,
    /// Its module's name in the pipeline (the prefix of its id).
    pub name: String,
    /// Whether it belongs to the population.
    pub population: bool,
    /// Its index among its module's instances.
    pub index: u32,
    /// How many instances its module has.
    pub count: u32,
}

/// Every instance of `modules`, in start order: ids (`name`, or `name.N`
/// when a module has several or is the population), settings, and genes
/// (the population's variant 0 runs the defaults, the others random genes
/// drawn from `seed`). `variants` overrides the population's size. The same
/// arguments always give the same plan, so a replay repeats and daemons
/// agree on ids and genes.
pub fn plan(
    modules: &[(crate::config::ModuleConfig, std::sync::Arc<crate::Module>)],
    seed: u64,
    variants: Option<u32>,
) -> Result<Vec<Planned>, ParamError> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (mc, module) in modules {
        let genes = &module.info().genes;
        let count = if mc.population {
            variants.unwrap_or(mc.instances)
        } else {
            mc.instances
        };
        let settings: Vec<crate::types::Setting> = mc
            .settings_strings()
            .into_iter()
            .map(|(name, value)| crate::types::Setting { name, value })
            .collect();
        for n in 0..count {
            // Variant 0 is the module's own defaults; the rest explore.
            let mut params = if mc.population && n > 0 {
                random(genes, &mut rng)
            } else {
                defaults(genes)
            };
            apply_overrides(&mc.name, genes, &mut params, &mc.params)?;
            let id = if count == 1 && !mc.population {
                mc.name.clone()
            } else {
                format!("{}.{n}", mc.name)
            };
            out.push(Planned {
                spec: crate::InstanceSpec {
                    id,
                    module: module.clone(),
                    params,
                    settings: settings.clone(),
                    snapshot: None,
                },
                name: mc.name.clone(),
                population: mc.population,
                index: n,
                count,
            });
        }
    }
    Ok(out)
}
