//! Configuration: what a pipeline file says, as plain serde data. Nothing
//! here loads, connects or runs; the layers above read these types.
//!
//! * [`pipeline`]: the modules, their instances, parameters and settings;
//! * [`evolution`]: selection, breeding and the fitness formula;
//! * [`bus`]: which bus a run uses;
//! * [`ablation`]: arms of `garden run --ablate`;
//! * the limits of every instance are [`crate::limits::Limits`].
//!
//! Invariant: this module imports nothing of the host but [`crate::limits`]
//! and the topic grammar, so every layer may read configuration.

pub mod ablation;
pub mod bus;
pub mod evolution;
pub mod pipeline;

pub use crate::limits::Limits;
pub use ablation::AblationConfig;
pub use bus::BusConfig;
pub use evolution::{EvolutionConfig, FitnessConfig, Mutation};
pub use pipeline::{
    ConfigError, DEFAULT_PIPELINE, DeployConfig, ModuleConfig, PipelineConfig, RollbackConfig,
    Strategy,
};
