//! The one wasmtime engine, its compiled-artifact cache and the loader that
//! turns component bytes into a [`Module`] ready to instantiate.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::Info;
use crate::bindings::types::GeneKind;
use crate::bindings::{GardenModule, GardenModulePre};
use crate::limits::Limits;
use crate::sandbox::{CallError, HostState, Sandbox, SandboxSpec};

/// How often the epoch ticks; call deadlines are counted in ticks.
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Why the engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime refused the configuration (often: not enough virtual memory
    /// for the pooling allocator).
    #[error(
        "cannot configure the wasm engine: {0}; try lowering limits.max_instances or limits.memory_bytes"
    )]
    Config(String),
    /// The WASI or host functions could not be linked.
    #[error("cannot link host functions: {0}")]
    Link(String),
    /// The artifact cache directory cannot be used.
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
}

/// Why a component could not be loaded. Nothing is loaded when any of these
/// is returned.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error(
        "not a WebAssembly binary (it does not start with \\0asm); pass a .wasm component built for wasm32-wasip2"
    )]
    NotWasm,
    /// A core module where a component was expected.
    #[error(
        "this is a core WebAssembly module, not a component; build it for the wasm32-wasip2 target (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    /// The component does not validate or compile.
    #[error("the component is invalid: {0}")]
    Invalid(String),
    /// The component's imports or exports do not match the garden world.
    #[error("the component does not target the garden:pipeline/garden-module world: {0}")]
    WrongWorld(String),
    /// `describe` failed.
    #[error("describe() failed: {0}")]
    Describe(CallError),
    /// `describe` returned something unusable.
    #[error("describe() returned an invalid description: {0}")]
    BadInfo(String),
    /// The signature, its key or the code's integrity is not accepted.
    #[error("refused: {0}")]
    Refused(#[from] garden_trust::TrustError),
    /// The manifest asks for more than the host allows.
    #[error(
        "the manifest asks for {what} = {requested}, above this host's ceiling of {ceiling}; lower it in the manifest and sign again, or raise the host's limit"
    )]
    AboveCeiling {
        /// Which limit.
        what: &'static str,
        /// What the manifest asks for.
        requested: u64,
        /// The host's ceiling.
        ceiling: u64,
    },
    /// The component imports an interface the host does not grant.
    #[error(
        "the component imports `{import}`, which this host does not grant (modules get the garden host interface and a WASI that cannot wait, open files or reach the network); build the module without it"
    )]
    NotGranted {
        /// The import's name, as the component gives it.
        import: String,
    },
    /// The component would create more core instances, memories or tables
    /// than one instance may hold.
    #[error(
        "the component defines {count} {what}, above this host's ceiling of {ceiling} per instance (limits.{limit}); build it with fewer, or raise the host's limit"
    )]
    TooManyParts {
        /// Which part.
        what: &'static str,
        /// How many the component defines.
        count: u32,
        /// The host's ceiling.
        ceiling: u32,
        /// The limit's name in `[limits]`.
        limit: &'static str,
    },
    /// What the module declares does not match what was signed.
    #[error("the module's describe() does not match its signed manifest: {0}")]
    ManifestMismatch(String),
    /// The memory the module may hold is less than it starts with.
    #[error(
        "the module may hold {allowed} bytes of linear memory but starts with {initial}: raise `[limits] memory_bytes` in its manifest (or the host's limits.memory_bytes) to at least {initial}; a language runtime such as CPython needs its initial memory before it runs a line"
    )]
    MemoryBelowInitial {
        /// Bytes it may hold (its manifest's figure, or the host's ceiling).
        allowed: u64,
        /// Bytes its memories start with.
        initial: u64,
    },
    /// The pipeline asked for larger cohorts than the module allows.
    #[error(transparent)]
    Cohort(#[from] CohortError),
}

/// The WIT package and world every module must target.
pub const WIT_PACKAGE: &str = "garden:pipeline@0.4.0";
/// See [`WIT_PACKAGE`].
pub const WIT_WORLD: &str = "garden-module";

/// Why a module cannot be packed in cohorts of the size asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "module `{module}` cannot carry {asked} variants per instance: it allows {allowed} (its describe() declares `cohort`, capped by limits.max_cohort); lower `cohort` in the pipeline file"
)]
pub struct CohortError {
    /// The module.
    pub module: String,
    /// The size asked for.
    pub asked: u32,
    /// The most it allows.
    pub allowed: u32,
}

/// A component compiled, linked against the host and described: ready to
/// instantiate as many times as needed without compiling again.
#[derive(Clone)]
pub struct Module {
    digest: String,
    info: Info,
    pre: GardenModulePre<HostState>,
    publishes: Arc<HashSet<String>>,
    manifest: Option<garden_trust::Manifest>,
    signer: Option<(garden_trust::KeyId, String)>,
    /// The host's limits, lowered where the manifest asks for less: every
    /// instance and every call of this module runs under these.
    limits: Limits,
    /// Most variants one instance carries (1: one per instance).
    cohort: u32,
}

impl Module {
    /// The signed manifest.
    pub fn manifest(&self) -> Option<&garden_trust::Manifest> {
        self.manifest.as_ref()
    }

    /// Who signed it: key id and the trust store's name for the key.
    pub fn signer(&self) -> Option<&(garden_trust::KeyId, String)> {
        self.signer.as_ref()
    }

    /// What the module says about itself.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// `name@version sha256:PREFIX`: which code this is, in one line.
    pub fn label(&self) -> String {
        let name = self.manifest.as_ref().map_or_else(
            || format!("{}@{}", self.info.name, self.info.version),
            garden_trust::Manifest::reference,
        );
        format!(
            "{name} sha256:{}",
            &self.digest()[..12.min(self.digest().len())]
        )
    }

    /// Whether it takes shared deliveries (a subscription that gives each
    /// message to one member of the module's group), which a canary splits.
    pub fn takes_shared(&self) -> bool {
        self.info
            .subscribes
            .iter()
            .any(|s| !s.addressed && matches!(s.delivery, crate::bindings::types::Delivery::Shared))
    }

    /// Most variants one instance of this module carries: 1 (each variant
    /// alone) unless [`Module::in_cohorts_of`] asked for more.
    pub fn cohort(&self) -> u32 {
        self.cohort
    }

    /// Most variants this module lets one instance carry: what its
    /// `describe` declares, within `limits.max_cohort`, and at least 1.
    pub fn cohort_allowed(&self) -> u32 {
        self.info.cohort.min(self.limits.max_cohort).max(1)
    }

    /// This module with its instances packed in cohorts of up to `size`
    /// variants (a population then shares instances: see
    /// `runtime`). Refused above [`Module::cohort_allowed`].
    pub fn in_cohorts_of(self: Arc<Self>, size: u32) -> Result<Arc<Self>, CohortError> {
        let allowed = self.cohort_allowed();
        if size > allowed {
            return Err(CohortError {
                module: self.info.name.clone(),
                asked: size,
                allowed,
            });
        }
        let mut module = Arc::unwrap_or_clone(self);
        module.cohort = size.max(1);
        Ok(Arc::new(module))
    }

    /// The hex sha256 of the component's bytes: its identity.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The limits its instances run under: the host's, lowered where the
    /// signed manifest asks for less.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("name", &self.info.name)
            .field("digest", &self.digest)
            .finish()
    }
}

/// Ticks the engine's epoch from one background thread (not one per call).
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: wasmtime::Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("garden-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .ok();
        EpochTicker { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The wasmtime engine with the component model, the pooling allocator, fuel
/// and epoch interruption, plus the linker holding the host functions.
pub struct Engine {
    engine: wasmtime::Engine,
    linker: Linker<HostState>,
    limits: Limits,
    cache: Option<crate::cache::ArtifactCache>,
    deadline_ticks: u64,
    /// Told before a component is compiled (not found in the cache).
    on_compile: Option<CompileNotice>,
    _ticker: EpochTicker,
}

/// Called with a component's sha256 and size before the engine compiles
/// it: compiling a Python or JavaScript component takes seconds, and a
/// command should say why it waits.
pub type CompileNotice = Box<dyn Fn(&str, usize) + Send + Sync>;

impl Engine {
    /// Build the engine. `cache` is a directory for precompiled artifacts
    /// (created if missing); `None` compiles every time.
    pub fn new(limits: Limits, cache: Option<PathBuf>) -> Result<Self, EngineError> {
        let mut pool = PoolingAllocationConfig::default();
        let instances = limits.max_instances.max(1);
        // Every instance may hold up to the per-component ceilings; the pool
        // has room for that many of each, so what is loaded (a Python
        // component holds about 14 core instances) fits without a guess.
        pool.total_component_instances(instances)
            .max_core_instances_per_component(limits.max_core_instances)
            .max_memories_per_component(limits.max_memories)
            .max_tables_per_component(limits.max_tables)
            .total_core_instances(instances.saturating_mul(limits.max_core_instances))
            .total_memories(instances.saturating_mul(limits.max_memories))
            .total_tables(instances.saturating_mul(limits.max_tables))
            .max_memory_size(limits.memory_bytes);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if std::env::var_os("GARDEN_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine =
            wasmtime::Engine::new(&config).map_err(|e| EngineError::Config(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        crate::wasi::add_to_linker(&mut linker).map_err(|e| EngineError::Link(format!("{e:#}")))?;
        GardenModule::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| EngineError::Link(format!("{e:#}")))?;
        let cache = match cache {
            Some(dir) => Some(crate::cache::ArtifactCache::open(&dir)?),
            None => None,
        };
        let tick = EPOCH_TICK.as_millis().max(1);
        let deadline_ticks = u64::try_from(limits.deadline.as_millis().div_ceil(tick))
            .unwrap_or(u64::MAX)
            .max(1)
            + 1;
        Ok(Engine {
            on_compile: None,
            _ticker: EpochTicker::start(engine.clone()),
            engine,
            linker,
            limits,
            cache,
            deadline_ticks,
        })
    }

    /// The limits every instance runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Load a signed component: verify its signature against `trust`,
    /// check its manifest against the host's ceilings, compile its code (or
    /// reuse the cached artifact), link it against the host, ask it to
    /// describe itself and check that against the manifest. Unsigned code is
    /// never loaded.
    #[tracing::instrument(name = "load", skip_all, fields(bytes = bytes.len(), module = tracing::field::Empty))]
    pub fn load(
        &self,
        bytes: &[u8],
        trust: &garden_trust::TrustStore,
    ) -> Result<Arc<Module>, LoadError> {
        check_header(bytes)?;
        let verified = trust.verify(bytes)?;
        let manifest = verified.manifest().clone();
        tracing::Span::current().record("module", manifest.name.as_str());
        if manifest.wit_package != WIT_PACKAGE || manifest.wit_world != WIT_WORLD {
            return Err(LoadError::WrongWorld(format!(
                "the manifest targets {}/{}, this host runs {WIT_PACKAGE}/{WIT_WORLD}",
                manifest.wit_package, manifest.wit_world
            )));
        }
        let memory_ceiling = self.limits.memory_bytes as u64;
        let memory = manifest.limits.memory_bytes.unwrap_or(memory_ceiling);
        if memory > memory_ceiling {
            return Err(LoadError::AboveCeiling {
                what: "memory_bytes",
                requested: memory,
                ceiling: memory_ceiling,
            });
        }
        let fuel = manifest
            .limits
            .fuel_per_call
            .unwrap_or(self.limits.fuel_per_call);
        if fuel > self.limits.fuel_per_call {
            return Err(LoadError::AboveCeiling {
                what: "fuel_per_call",
                requested: fuel,
                ceiling: self.limits.fuel_per_call,
            });
        }
        let signer = (verified.component.key_id, verified.signer_name.clone());
        let mut module = self.load_code(verified.component.code, memory)?;
        check_against_manifest(&module.info, &manifest).map_err(LoadError::ManifestMismatch)?;
        // At run time the host enforces what was signed, not what the code says.
        module.publishes = Arc::new(manifest.capabilities.publish.iter().cloned().collect());
        module.limits.memory_bytes = usize::try_from(memory).unwrap_or(usize::MAX);
        module.limits.fuel_per_call = fuel;
        module.manifest = Some(manifest);
        module.signer = Some(signer);
        Ok(Arc::new(module))
    }

    /// Refuse, before compiling, a component that imports what the host
    /// does not grant or would create more than the host's ceilings.
    /// `memory` is what the module may hold: it must cover what its
    /// memories start with.
    fn check_shape(&self, bytes: &[u8], memory: u64) -> Result<(), LoadError> {
        let shape = crate::shape::of(bytes).map_err(|e| LoadError::Invalid(e.to_string()))?;
        if shape.initial_memory_bytes > memory {
            return Err(LoadError::MemoryBelowInitial {
                allowed: memory,
                initial: shape.initial_memory_bytes,
            });
        }
        if let Some(import) = crate::wasi::ungranted(shape.imports.iter().map(String::as_str)) {
            return Err(LoadError::NotGranted {
                import: import.to_string(),
            });
        }
        let parts = [
            (
                "core instances",
                shape.core_instances,
                self.limits.max_core_instances,
                "max_core_instances",
            ),
            (
                "memories",
                shape.memories,
                self.limits.max_memories,
                "max_memories",
            ),
            ("tables", shape.tables, self.limits.max_tables, "max_tables"),
        ];
        for (what, count, ceiling, limit) in parts {
            if count > ceiling {
                return Err(LoadError::TooManyParts {
                    what,
                    count,
                    ceiling,
                    limit,
                });
            }
        }
        Ok(())
    }

    /// Compile an unsigned component and call its `describe()`: what an
    /// author writes into its manifest (`garden manifest`). The code runs
    /// in the sandbox under this engine's limits; use an engine without a
    /// cache, so unsigned code never lands in one.
    pub fn describe_unsigned(&self, bytes: &[u8]) -> Result<Info, LoadError> {
        Ok(self.load_code(bytes, self.limits.memory_bytes as u64)?.info)
    }

    /// Compile, link and describe code whose integrity was checked.
    fn load_code(&self, bytes: &[u8], memory: u64) -> Result<Module, LoadError> {
        check_header(bytes)?;
        self.check_shape(bytes, memory)?;
        let digest = garden_trust::Digest::of(bytes).to_hex();
        let component = self.compile(bytes, &digest)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let pre = GardenModulePre::new(instance_pre)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let mut module = Module {
            digest,
            info: Info {
                name: String::new(),
                version: String::new(),
                role: String::new(),
                subscribes: Vec::new(),
                publishes: Vec::new(),
                genes: Vec::new(),
                cohort: 0,
            },
            pre,
            publishes: Arc::new(HashSet::new()),
            manifest: None,
            signer: None,
            limits: self.limits.clone(),
            cohort: 1,
        };
        let mut sandbox = self
            .instantiate(&module, "describe", 0)
            .map_err(LoadError::Describe)?;
        let info = sandbox.describe().map_err(LoadError::Describe)?;
        validate_info(&info, &self.limits).map_err(LoadError::BadInfo)?;
        module.info = info;
        Ok(module)
    }

    /// A new instance of `module` (not yet initialised), named `instance`.
    #[tracing::instrument(name = "instantiate", skip(self, module, random_seed), fields(module = %module.info().name))]
    pub fn instantiate(
        &self,
        module: &Module,
        instance: &str,
        random_seed: u64,
    ) -> Result<Sandbox, CallError> {
        let spec = SandboxSpec {
            instance,
            publishes: module.publishes.clone(),
            limits: &module.limits,
            deadline_ticks: self.deadline_ticks,
            random_seed,
        };
        let mut store = Sandbox::store(&self.engine, &spec).map_err(|e| CallError::Trap {
            detail: format!("{e:#}"),
        })?;
        match module.pre.instantiate(&mut store) {
            Ok(bindings) => Ok(Sandbox::new(store, bindings, &spec)),
            Err(e) => Err(CallError::Trap {
                detail: format!("instantiation failed: {e:#}"),
            }),
        }
    }

    /// Tell `notice` before compiling a component the cache does not hold.
    pub fn on_compile(mut self, notice: CompileNotice) -> Self {
        self.on_compile = Some(notice);
        self
    }

    /// An artifact's name in the cache: the component's digest and this
    /// engine's compatibility hash.
    fn artifact_name(&self, digest: &str) -> String {
        let mut h = std::hash::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{digest}-{:016x}", h.finish())
    }

    /// Whether the code with sha256 `digest` is compiled in the cache, so
    /// loading it takes milliseconds, not a compile.
    pub fn is_compiled(&self, digest: &str) -> bool {
        self.cache
            .as_ref()
            .is_some_and(|c| c.holds(&self.artifact_name(digest)))
    }

    fn compile(&self, bytes: &[u8], digest: &str) -> Result<Component, LoadError> {
        let invalid = |e: wasmtime::Error| LoadError::Invalid(format!("{e:#}"));
        let notice = || {
            if let Some(notice) = &self.on_compile {
                notice(digest, bytes.len());
            }
        };
        let Some(cache) = &self.cache else {
            notice();
            return Component::new(&self.engine, bytes).map_err(invalid);
        };
        let name = self.artifact_name(digest);
        if let Some(artifact) = cache.get(&name) {
            // SAFETY: `ArtifactCache::get` returns only bytes carrying this
            // cache's HMAC over this name, so this host wrote them from
            // `precompile_component` output for this component on an engine
            // with this compatibility hash (part of the name).
            match unsafe { Component::deserialize(&self.engine, &artifact) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!("cached artifact {name} does not load ({e:#}); recompiling")
                }
            }
        }
        notice();
        let compiled = self.engine.precompile_component(bytes).map_err(invalid)?;
        // SAFETY: the bytes were produced by `precompile_component` on this
        // very engine a moment ago.
        let component =
            unsafe { Component::deserialize(&self.engine, &compiled) }.map_err(invalid)?;
        if let Err(e) = cache.put(&name, &compiled) {
            tracing::warn!("could not cache compiled component {name}: {e}");
        }
        Ok(component)
    }
}

/// Tell a component from a core module or from something else entirely
/// before handing the bytes to the compiler, so the error says which.
fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm);
    }
    // Version field: core modules are 1.0 (01 00 00 00); components are
    // layer 1 (xx 00 01 00).
    match bytes[4..8] {
        [1, 0, 0, 0] => Err(LoadError::CoreModule),
        [_, _, 1, 0] => Ok(()),
        _ => Err(LoadError::Invalid(
            "unknown WebAssembly binary version".into(),
        )),
    }
}

/// The manifest that `info` calls for: its name, role, topics and genes as
/// it declares them, for this host's WIT, and `memory_bytes` if given.
pub fn manifest_for(info: &Info, memory_bytes: Option<u64>) -> garden_trust::Manifest {
    garden_trust::Manifest {
        name: info.name.clone(),
        version: info.version.clone(),
        role: info.role.clone(),
        wit_package: WIT_PACKAGE.into(),
        wit_world: WIT_WORLD.into(),
        publisher: None,
        component: None,
        capabilities: garden_trust::manifest::Capabilities {
            subscribe: info.subscribes.iter().map(|s| s.topic.clone()).collect(),
            publish: info.publishes.clone(),
        },
        limits: garden_trust::manifest::RequestedLimits {
            memory_bytes,
            fuel_per_call: None,
        },
        genes: info
            .genes
            .iter()
            .map(|g| garden_trust::manifest::GeneSpec {
                name: g.name.clone(),
                kind: gene_kind(g.kind).into(),
                min: g.min,
                max: g.max,
                default: g.default,
                scale: g.scale,
            })
            .collect(),
    }
}

/// Why `info` does not fit `manifest`, if it does not (what loading would
/// refuse): for `garden manifest --check`.
pub fn manifest_mismatch(info: &Info, manifest: &garden_trust::Manifest) -> Option<String> {
    check_against_manifest(info, manifest).err()
}

fn gene_kind(k: GeneKind) -> &'static str {
    match k {
        GeneKind::Float => "float",
        GeneKind::Int => "int",
        GeneKind::Boolean => "boolean",
    }
}

/// What the code declares must lie within what was signed.
fn check_against_manifest(info: &Info, m: &garden_trust::Manifest) -> Result<(), String> {
    if info.name != m.name {
        return Err(format!(
            "it calls itself `{}`, the manifest `{}`",
            info.name, m.name
        ));
    }
    if info.role != m.role {
        return Err(format!(
            "its role is `{}`, the manifest says `{}`",
            info.role, m.role
        ));
    }
    for s in &info.subscribes {
        if !m.capabilities.subscribe.contains(&s.topic) {
            return Err(format!(
                "it subscribes to `{}`, outside the manifest's capabilities.subscribe {:?}",
                s.topic, m.capabilities.subscribe
            ));
        }
    }
    for t in &info.publishes {
        if !m.capabilities.publish.contains(t) {
            return Err(format!(
                "it declares publishing to `{t}`, outside the manifest's capabilities.publish {:?}",
                m.capabilities.publish
            ));
        }
    }
    let kind = gene_kind;
    let same = info.genes.len() == m.genes.len()
        && info.genes.iter().zip(&m.genes).all(|(g, s)| {
            g.name == s.name
                && kind(g.kind) == s.kind
                && g.min == s.min
                && g.max == s.max
                && g.default == s.default
                && g.scale == s.scale
        });
    if !same {
        let names = |v: Vec<&str>| v.join(", ");
        return Err(format!(
            "its genes [{}] differ from the manifest's [{}] (names, kinds, bounds, defaults and scales must match)",
            names(info.genes.iter().map(|g| g.name.as_str()).collect()),
            names(m.genes.iter().map(|g| g.name.as_str()).collect())
        ));
    }
    Ok(())
}

fn validate_info(info: &Info, limits: &Limits) -> Result<(), String> {
    if info.name.trim().is_empty() {
        return Err("the module name is empty".into());
    }
    let lists = [
        ("genes", info.genes.len()),
        ("subscriptions", info.subscribes.len()),
        ("published topics", info.publishes.len()),
    ];
    for (what, count) in lists {
        if count > limits.max_describe_items {
            return Err(format!(
                "it lists {count} {what}, above this host's ceiling of {} (limits.max_describe_items)",
                limits.max_describe_items
            ));
        }
    }
    let names = [&info.name, &info.version, &info.role]
        .into_iter()
        .chain(info.genes.iter().map(|g| &g.name));
    for name in names {
        if name.len() > limits.max_name_bytes {
            return Err(format!(
                "a name of {} bytes, above this host's ceiling of {} (limits.max_name_bytes)",
                name.len(),
                limits.max_name_bytes
            ));
        }
    }
    for s in &info.subscribes {
        garden_trust::topic::check(&s.topic).map_err(|e| format!("subscription: {e}"))?;
    }
    for t in &info.publishes {
        garden_trust::topic::check(t).map_err(|e| format!("publishes: {e}"))?;
    }
    let mut names = HashSet::new();
    for g in &info.genes {
        if !names.insert(g.name.as_str()) {
            return Err(format!("gene `{}` is declared twice", g.name));
        }
        let finite =
            g.min.is_finite() && g.max.is_finite() && g.default.is_finite() && g.scale.is_finite();
        if !finite || g.min > g.max || g.default < g.min || g.default > g.max || g.scale < 0.0 {
            return Err(format!(
                "gene `{}` needs finite min <= default <= max and scale >= 0 (min {}, default {}, max {}, scale {})",
                g.name, g.min, g.default, g.max, g.scale
            ));
        }
        if g.kind == GeneKind::Int && (g.min.fract() != 0.0 || g.max.fract() != 0.0) {
            return Err(format!("integer gene `{}` has non-integer bounds", g.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::HostTrap;

    #[test]
    fn header_check_tells_core_modules_components_and_junk_apart() {
        assert!(matches!(
            check_header(b"hello world"),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(check_header(b"\0asm"), Err(LoadError::NotWasm)));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(matches!(
            check_header(b"\0asm\x09\x09\x09\x09"),
            Err(LoadError::Invalid(_))
        ));
    }

    /// `n` core modules of `pages` 64 KiB pages of memory each, each
    /// instantiated once: no garden exports, just memory.
    fn memories(n: usize, pages: u32) -> Vec<u8> {
        let mut wat = String::from("(component\n");
        for i in 0..n {
            wat.push_str(&format!(
                "  (core module $m{i} (memory {pages}))\n  (core instance (instantiate $m{i}))\n"
            ));
        }
        wat.push(')');
        wat::parse_str(&wat).expect("valid WAT")
    }

    /// An engine with the default limits and a small pool.
    fn small_engine() -> Engine {
        Engine::new(
            Limits {
                max_instances: 4,
                ..Limits::default()
            },
            None,
        )
        .expect("engine")
    }

    /// Instantiates `bytes` under `engine`'s limits as a sandbox would.
    fn instantiate_raw(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<()> {
        let component = Component::new(&engine.engine, bytes)?;
        let spec = SandboxSpec {
            instance: "hostile",
            publishes: Arc::new(HashSet::new()),
            limits: &engine.limits,
            deadline_ticks: engine.deadline_ticks,
            random_seed: 0,
        };
        let mut store = Sandbox::store(&engine.engine, &spec)?;
        engine
            .linker
            .instantiate(&mut store, &component)
            .map(|_| ())
    }

    #[test]
    fn the_memory_cap_counts_every_memory_of_an_instance() {
        let limits = Limits {
            memory_bytes: 64 << 20,
            max_instances: 4,
            ..Limits::default()
        };
        let engine = Engine::new(limits, None).expect("engine");
        // 30 MiB each: one memory alone is well under the 64 MiB cap, three
        // together are not.
        let error = instantiate_raw(&engine, &memories(3, 480)).expect_err("90 MiB > 64 MiB");
        match error.downcast_ref::<HostTrap>() {
            Some(HostTrap::Memory { requested, cap }) => {
                assert_eq!(*cap, 64 << 20);
                assert_eq!(*requested, 90 << 20);
            }
            _ => panic!("expected the memory cap, got {error:#}"),
        }
        instantiate_raw(&engine, &memories(2, 480)).expect("60 MiB fits");
    }

    #[test]
    fn a_component_of_many_memories_is_refused_at_load_with_the_numbers() {
        let engine = small_engine();
        // A dozen core instances, each with its own 1-page memory.
        match engine.load_code(&memories(12, 1), u64::MAX) {
            Err(LoadError::TooManyParts {
                what,
                count,
                ceiling,
                ..
            }) => {
                assert_eq!((what, count, ceiling), ("memories", 12, 4));
            }
            other => panic!("expected TooManyParts, got {other:?}"),
        }
        // The pool refuses them too, should a component hide its parts.
        assert!(instantiate_raw(&engine, &memories(12, 1)).is_err());
    }

    #[test]
    fn an_import_the_host_does_not_grant_is_refused_at_load_by_name() {
        let engine = small_engine();
        let bytes = wat::parse_str(
            r#"(component
                (import "wasi:sockets/tcp-create-socket@0.2.0" (instance))
                (import "wasi:io/poll@0.2.0" (instance))
            )"#,
        )
        .expect("valid WAT");
        match engine.load_code(&bytes, u64::MAX) {
            Err(LoadError::NotGranted { import }) => {
                assert_eq!(import, "wasi:sockets/tcp-create-socket@0.2.0");
            }
            other => panic!("expected NotGranted, got {other:?}"),
        }
    }
}
