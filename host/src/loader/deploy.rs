//! New code loaded while a pipeline runs (`[[deploy]]` in a pipeline file):
//! each component is read, verified against the trust store and compiled
//! on a thread of its own from the start, off the message path, so the
//! instances go on handling messages meanwhile; the switch waits for it
//! only if it is not ready by its bar.
//!
//! Invariant: a deploy whose component cannot be read, is not trusted or
//! does not compile yields its error, and the old code goes on.

use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use crate::config::{DeployConfig, PipelineConfig};
use crate::engine::{Engine, Module};
use crate::integrity::Trust;

/// One scheduled deploy and its code, loading or loaded.
#[derive(Clone)]
pub struct Deploy {
    /// What the pipeline file asked for.
    pub config: DeployConfig,
    code: Arc<Code>,
}

/// The new code, or why it cannot be had.
type Loaded = Result<Arc<Module>, String>;

/// The load's thread until it is joined, then what it gave.
struct Code {
    loading: Mutex<Option<JoinHandle<Loaded>>>,
    loaded: OnceLock<Loaded>,
}

impl std::fmt::Debug for Deploy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deploy")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Deploy {
    /// Start loading `config`'s component (in cohorts of `cohort`, as the
    /// module it replaces runs).
    pub fn start(engine: Arc<Engine>, trust: Trust, config: DeployConfig, cohort: u32) -> Deploy {
        let path = config.path.clone();
        let read = move || {
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        Self::load(engine, trust, config, cohort, read, None)
    }

    /// Start loading `bytes`, a component pulled from elsewhere (a garden
    /// of daemons keeps it in Redis): refused unless its code's sha256 is
    /// `digest`.
    pub fn start_bytes(
        engine: Arc<Engine>,
        trust: Trust,
        config: DeployConfig,
        cohort: u32,
        bytes: Vec<u8>,
        digest: String,
    ) -> Deploy {
        Self::load(
            engine,
            trust,
            config,
            cohort,
            move || Ok(bytes),
            Some(digest),
        )
    }

    fn load(
        engine: Arc<Engine>,
        trust: Trust,
        config: DeployConfig,
        cohort: u32,
        read: impl FnOnce() -> Result<Vec<u8>, String> + Send + 'static,
        digest: Option<String>,
    ) -> Deploy {
        let name = config.path.display().to_string();
        let handle = std::thread::spawn(move || {
            let bytes = read()?;
            let module = engine
                .load(&bytes, trust.store_for(&bytes))
                .map_err(|e| format!("{name}: {e}"))?;
            if let Some(want) = digest
                && module.digest() != want
            {
                return Err(format!(
                    "{name}: its code is sha256:{}, not sha256:{want} as the deploy says",
                    module.digest()
                ));
            }
            match cohort {
                0 | 1 => Ok(module),
                size => module
                    .in_cohorts_of(size)
                    .map_err(|e| format!("{name}: {e}")),
            }
        });
        Deploy {
            config,
            code: Arc::new(Code {
                loading: Mutex::new(Some(handle)),
                loaded: OnceLock::new(),
            }),
        }
    }

    /// Whether the load is over (so [`Deploy::code`] does not wait).
    pub fn ready(&self) -> bool {
        self.code.loaded.get().is_some()
            || self
                .code
                .loading
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_none_or(JoinHandle::is_finished)
    }

    /// The new code, waiting for its load if it is still going; or why it
    /// cannot be had.
    pub fn code(&self) -> Loaded {
        self.code
            .loaded
            .get_or_init(|| {
                let handle = self
                    .code
                    .loading
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                match handle {
                    Some(h) => h.join().unwrap_or_else(|_| Err("the load panicked".into())),
                    None => Err("the load was lost".into()),
                }
            })
            .clone()
    }
}

/// Start loading every deploy of `pipeline` (a replay applies them in bar
/// order).
pub fn start_all(engine: &Arc<Engine>, trust: &Trust, pipeline: &PipelineConfig) -> Vec<Deploy> {
    pipeline
        .deploys
        .iter()
        .map(|d| {
            let cohort = pipeline
                .modules
                .iter()
                .find(|m| m.name == d.module)
                .map_or(1, |m| m.cohort);
            Deploy::start(engine.clone(), trust.clone(), d.clone(), cohort)
        })
        .collect()
}
