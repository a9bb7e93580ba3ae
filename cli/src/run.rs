//! `garden run`: replay data through the pipeline and report.

use std::cell::{Cell, RefCell};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use garden_host::bus::{MemoryBus, RedisBus};
use garden_host::config::PipelineConfig;
use garden_host::feed;
use garden_host::integrity;
use garden_host::records::{RECORDED_TOPICS, Recorder};
use garden_host::replay::{ReplayOptions, replay_timeline_with};
use garden_host::{Engine, render};
use garden_report::latency::Latency;
use indicatif::{ProgressBar, ProgressStyle};

/// Longest the recorder keeps trying to write what is left when a run ends.
const RECORDS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);
/// How often a run with `--metrics` rebuilds its page.
const METRICS_EVERY: Duration = Duration::from_secs(1);
/// A run whose page was not rebuilt for this long is not ready (stuck).
const METRICS_STALE: Duration = Duration::from_secs(30);

/// Options of `garden run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// OHLCV CSV file to replay (default: the bundled EURUSD_H1 sample).
    /// Repeat it to replay several instruments on one timeline, merged by
    /// time, each bar published under its own symbol.
    #[arg(long, value_name = "FILE.csv")]
    data: Vec<PathBuf>,
    /// Symbol for the data (default: the file name up to the first `_` or
    /// `.`). With several `--data`, repeat it: the first names the first
    /// file, and so on.
    #[arg(long)]
    symbol: Vec<String>,
    /// Pipeline configuration (default: the embedded pipeline.toml).
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
    /// Seed for random genes; the same seed repeats the run. Default: from the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// Number of variants in the population.
    #[arg(long)]
    variants: Option<u32>,
    /// Let one instance carry up to N variants of the population (a
    /// cohort; the module must allow it, see docs/cohorts.md). Overrides
    /// `cohort` in the pipeline file.
    #[arg(long, value_name = "N")]
    cohort: Option<u32>,
    /// Threads to run instances on (default: 1; results are the same for any number).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Serve the run's metrics (`/metrics`) and health (`/healthz`,
    /// `/readyz`) on this address while it runs, e.g. 127.0.0.1:9464
    /// (`docs/metrics.md`).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Trust store (default: $GARDEN_TRUST or ~/.config/garden/trust.toml);
    /// the development key is trusted too unless the store revokes it.
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
    /// Store for the audit log (default: sqlite://~/.local/share/garden/garden.db;
    /// postgres://... also works; or $GARDEN_STORE_URL).
    #[arg(
        long,
        value_name = "URL",
        env = "GARDEN_STORE_URL",
        hide_env_values = true
    )]
    store: Option<String>,
    /// The bus: `memory` (default) or `redis://[user:password@]host:port`
    /// (overrides `[bus] url` in the pipeline file; or $GARDEN_BUS_URL).
    #[arg(
        long,
        value_name = "URL",
        env = "GARDEN_BUS_URL",
        hide_env_values = true
    )]
    bus: Option<String>,
    #[command(flatten)]
    passwords: crate::secrets::PasswordFiles,
    /// Prefix of the Redis keys (default: `garden:run:<seed>-<ms>`, one per run).
    #[arg(long, value_name = "PREFIX")]
    bus_prefix: Option<String>,
    /// Record every bar, plan, evidence, scored plan, decision, fill and
    /// feedback message (and the fitness and regime reports) in the store,
    /// written in batches off the hot path; `garden run` prints the run id.
    #[arg(long)]
    records: bool,
    /// Write the run's report (`garden report`) to FILE.html when the replay
    /// ends; implies `--records`.
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Print every message published on TOPIC as it passes, one line each
    /// (time, topic, publisher, key, body); repeat for more topics.
    #[arg(long, value_name = "TOPIC")]
    show: Vec<String>,
    /// Directory for compiled modules (default: ~/.cache/garden).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile modules every time instead of caching them.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
    /// Run a module older than one this host ran before, on purpose.
    #[arg(long)]
    allow_downgrade: bool,
    /// Also replay with the pipeline's ablation NAME (`[ablation.NAME]`:
    /// modules dropped, settings changed), on the same bars and seed, and
    /// print each arm's out-of-sample figures side by side; repeat for
    /// more arms (the embedded pipeline has `curators` and `sharing`).
    #[arg(long, value_name = "NAME")]
    ablate: Vec<String>,
}

pub(crate) fn default_cache_dir() -> Option<PathBuf> {
    garden_host::paths::cache_dir()
}

/// What a pipeline runs on: the engine, the audit log and the pipeline's
/// modules.
pub(crate) struct Loaded {
    pub engine: Arc<Engine>,
    pub trust: integrity::Trust,
    pub audit: garden_host::audit::Audit,
    pub modules: Vec<(garden_host::config::ModuleConfig, Arc<garden_host::Module>)>,
}

/// The trust store given with `--trust` (which must exist), else the
/// default one (which may be absent).
pub(crate) fn read_trust(path: Option<&PathBuf>) -> Result<integrity::Trust> {
    Ok(match path {
        Some(path) => integrity::Trust::read(path, true)?,
        None => integrity::Trust::read(&integrity::default_trust_path(), false)?,
    })
}

/// Start the engine, open the audit log in the store at `store_url`, and
/// load the pipeline's modules, each checked against the trust store
/// (default: $GARDEN_TRUST or ~/.config/garden/trust.toml) and its load
/// audited. Shared by `garden run` and `garden daemon`.
pub(crate) fn load(
    config: &PipelineConfig,
    cache: Option<PathBuf>,
    trust: Option<&PathBuf>,
    store_url: &str,
    allow_downgrade: bool,
) -> Result<Loaded> {
    let engine = Engine::new(config.limits.clone(), cache)
        .context("starting the wasm engine")?
        .on_compile(Box::new(|digest, size| {
            eprintln!(
                "compiling a component of {:.1} MB (sha256 {}…), once: the cache keeps it",
                size as f64 / 1e6,
                digest.get(..12).unwrap_or(digest)
            )
        }));
    let engine = Arc::new(engine);
    let trust = read_trust(trust)?;
    let audit = garden_host::audit::Audit::open(store_url)?;
    let modules = config.load_audited(&engine, &trust, Some(&audit))?;
    let mut versions = integrity::Versions::read(audit.data_dir())?;
    for (_, module) in &modules {
        let Some(m) = module.manifest() else { continue };
        if let Err(e) = versions.admit(&m.name, &m.version, allow_downgrade) {
            audit.record("refusal", &m.reference(), "host", &e.to_string());
            return Err(e.into());
        }
    }
    versions.write()?;
    Ok(Loaded {
        engine,
        trust,
        audit,
        modules,
    })
}

/// Run `garden run`.
pub fn run(args: RunArgs) -> Result<()> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    eprintln!("seed: {seed}");
    let mut config = match &args.config {
        Some(path) => PipelineConfig::read(path)?,
        None => PipelineConfig::embedded()?,
    };
    if let Some(url) = &args.bus {
        config.bus.url = Some(url.clone());
    }
    if let Some(size) = args.cohort {
        for m in config.modules.iter_mut().filter(|m| m.population) {
            m.cohort = size;
        }
    }
    if let Some(prefix) = &args.bus_prefix {
        config.bus.prefix = Some(prefix.clone());
    }
    if let Some(url) = config.bus.url.take() {
        config.bus.url = Some(args.passwords.bus(url)?);
    }
    let (timeline, data_name) = read_data(&args)?;
    let symbol = timeline.symbol(0).to_string();
    let cache = if args.no_cache {
        None
    } else {
        args.cache_dir.clone().or_else(default_cache_dir)
    };
    let store_url = args.passwords.store(
        args.store
            .clone()
            .or_else(|| config.store.clone())
            .unwrap_or_else(garden_host::audit::default_store_url),
    )?;
    let Loaded {
        engine,
        trust,
        audit,
        modules,
    } = load(
        &config,
        cache,
        args.trust.as_ref(),
        &store_url,
        args.allow_downgrade,
    )?;
    let bar = progress_bar(timeline.len());
    let options = ReplayOptions {
        seed,
        variants: args.variants,
        symbol,
        data_name,
        threads: args.threads,
        total_bars: 0,
        steps_per_year: 0.0,
        per_call: 0,
        // Read, verified and compiled from now on, off the message path.
        deploys: garden_host::loader::deploy::start_all(&engine, &trust, &config),
    };
    if !args.ablate.is_empty() {
        if args.records
            || args.report.is_some()
            || config.bus.url.is_some()
            || args.metrics.is_some()
        {
            anyhow::bail!(
                "--ablate runs every arm on the memory bus and keeps no records: drop --records, --report, --metrics and --bus"
            );
        }
        for name in &args.ablate {
            config.ablated(name)?;
        }
        return crate::ablate::run(
            &args.ablate,
            &config,
            &engine,
            &modules,
            &timeline,
            &options,
            args.json,
        );
    }
    let watched = args.metrics.map(Watched::serve).transpose()?;
    let progress = |n: usize, view: &dyn garden_host::replay::View| {
        if let Some(bar) = &bar
            && n.is_multiple_of(64)
        {
            bar.set_position(n as u64);
        }
        if let Some(w) = &watched {
            w.progress(view);
        }
    };
    // A replay's keys are its own unless a prefix is given, so it never
    // picks up an earlier run's entries.
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let started = garden_host::integrity::now_rfc3339();
    let run_id = format!("{started}-{seed}");
    let mut recorder = (args.records || args.report.is_some()).then(|| {
        eprintln!(
            "recording run {run_id} into {}",
            garden_host::bus::redis::redacted(&store_url)
        );
        Recorder::start(&store_url, &run_id)
    });
    for topic in &args.show {
        garden_registry::topic::check(topic)
            .with_context(|| format!("--show {topic}: not a topic name"))?;
    }
    let mut taps: Vec<&str> = args.show.iter().map(String::as_str).collect();
    if recorder.is_some() {
        taps.extend(RECORDED_TOPICS);
    }
    if watched.is_some() {
        taps.extend(garden_report::latency::TOPICS);
    }
    taps.sort_unstable();
    taps.dedup();
    // Topics tapped only because --show asked: the host reads the fitness
    // and context topics itself, and those are recorded with a run.
    let show_only: Vec<&str> = args
        .show
        .iter()
        .map(String::as_str)
        .filter(|t| {
            !RECORDED_TOPICS.contains(t)
                && *t != config.fitness_topic
                && Some(*t) != config.context_topic.as_deref()
        })
        .collect();
    let record = |m: &[Arc<garden_host::Envelope>]| {
        if let Some(w) = &watched {
            w.tapped(m);
        }
        for shown in m.iter().filter(|m| args.show.contains(&m.topic)) {
            let line = render::message_line(shown);
            match &bar {
                Some(bar) => bar.suspend(|| println!("{line}")),
                None => println!("{line}"),
            }
        }
        if let Some(r) = recorder.as_mut() {
            // What is tapped for --show alone is not recorded.
            let recorded: Vec<_> = m
                .iter()
                .filter(|m| !show_only.contains(&m.topic.as_str()))
                .cloned()
                .collect();
            r.record(&recorded);
        }
    };
    let summary = match config.bus.redis(&format!("garden:run:{seed}-{millis}"))? {
        Some(redis) => {
            eprintln!(
                "bus: Redis at {} (prefix {})",
                garden_host::bus::redis::redacted(&redis.url),
                redis.prefix
            );
            let bus = RedisBus::connect(redis)?;
            replay_timeline_with(
                bus, engine, &config, &modules, &timeline, options, &taps, record, progress,
            )?
        }
        None => {
            let bus = MemoryBus::new(config.limits.inbox_capacity);
            replay_timeline_with(
                bus, engine, &config, &modules, &timeline, options, &taps, record, progress,
            )?
        }
    };
    if let Some(r) = recorder.take() {
        finish_records(r);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut watch = garden_host::audit::Watch::new(audit, "host");
    watch.note(&summary.instances);
    for d in &summary.deploys {
        let touched: Vec<String> = d
            .instances
            .iter()
            .map(|(id, what)| format!("{id}: {what}"))
            .collect();
        watch.audit().record(
            "deploy",
            &d.code,
            d.signer.as_deref().unwrap_or("-"),
            &format!(
                "bar {} module {} sha256:{} strategy {}: {} [{}]",
                d.bar,
                d.module,
                d.digest,
                d.strategy,
                d.outcome,
                touched.join(", ")
            ),
        );
        if let Some(r) = &d.settled {
            let back: Vec<String> = r
                .instances
                .iter()
                .map(|(id, what)| format!("{id}: {what}"))
                .collect();
            watch.audit().record(
                r.outcome,
                &d.code,
                d.signer.as_deref().unwrap_or("-"),
                &format!(
                    "bar {} module {} sha256:{} {}: {} [{}]",
                    r.bar,
                    d.module,
                    d.digest,
                    r.outcome,
                    r.why,
                    back.join(", ")
                ),
            );
        }
    }
    save_run(watch.audit(), &run_id, &started, seed, &summary)?;
    if let Some(out) = &args.report {
        let options = garden_report::ReportOptions::default();
        crate::report_cmd::write(watch.audit(), &run_id, None, &options, out)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", render::table(&summary));
    }
    never_started(&summary.instances)
}

/// A run's metrics page while it runs: rebuilt from the replay's view every
/// [`METRICS_EVERY`], and the path's latency timed from the tapped messages.
struct Watched {
    metrics: RefCell<garden_host::metrics::Metrics>,
    monitor: crate::monitor::Monitor,
    last: Cell<Instant>,
    latency: RefCell<Latency>,
}

impl Watched {
    fn serve(addr: std::net::SocketAddr) -> Result<Watched> {
        let monitor = crate::monitor::Monitor::serve(addr, METRICS_STALE)?;
        eprintln!("metrics on http://{}/metrics", monitor.addr());
        monitor.update(String::new(), None);
        Ok(Watched {
            metrics: RefCell::new(garden_host::metrics::Metrics::new()),
            monitor,
            last: Cell::new(Instant::now()),
            latency: RefCell::new(Latency::new(garden_report::latency::PENDING)),
        })
    }

    fn progress(&self, view: &dyn garden_host::replay::View) {
        if self.last.get().elapsed() < METRICS_EVERY {
            return;
        }
        self.last.set(Instant::now());
        let mut metrics = self.metrics.borrow_mut();
        metrics.observe_instances(&view.reports());
        metrics.observe_bus(view.bus_totals());
        metrics.observe_lineage(&view.lineage());
        metrics.observe_diversity(view.diversity());
        metrics.observe_reported(&view.reported());
        self.monitor.update(metrics.encode(), None);
    }

    fn tapped(&self, messages: &[Arc<garden_host::Envelope>]) {
        let mut latency = self.latency.borrow_mut();
        let mut metrics = self.metrics.borrow_mut();
        for m in messages {
            if let Some((hop, took)) = latency.observe(m) {
                metrics.observe_latency(hop.name(), took.as_secs_f64());
            }
        }
    }
}

/// An error naming every module none of whose instances ever handled a
/// message because they could not start (refused parameters, too little
/// memory, a trap in init): the run reported them, but it did not do what
/// was asked, so it must not exit 0.
fn never_started(instances: &[garden_host::runtime::InstanceReport]) -> Result<()> {
    let mut modules: std::collections::BTreeMap<&str, (bool, Option<&str>)> = Default::default();
    for i in instances {
        let entry = modules.entry(i.module.as_str()).or_insert((true, None));
        let dead = i.calls == 0
            && matches!(
                i.state,
                garden_host::runtime::InstanceState::Quarantined { .. }
            );
        entry.0 &= dead;
        if dead && entry.1.is_none() {
            entry.1 = i.last_error.as_deref();
        }
    }
    let dead: Vec<String> = modules
        .into_iter()
        .filter(|(_, (dead, _))| *dead)
        .map(|(name, (_, why))| format!("`{name}` ({})", why.unwrap_or("no reason recorded")))
        .collect();
    if dead.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "module(s) that could not start at all: {}; see the instance table above, and check the module's limits (memory_bytes, max_core_instances) and parameters",
        dead.join(", ")
    )
}

/// The bars to replay and their name: every `--data` file under its
/// symbol (`--symbol` in the same order, or from the file name), merged
/// by time; or the bundled file.
fn read_data(args: &RunArgs) -> Result<(feed::Timeline, String)> {
    if args.data.is_empty() {
        let rows = feed::csv::read(feed::BUNDLED_CSV.as_bytes(), feed::BUNDLED_NAME)?;
        let symbol = args
            .symbol
            .first()
            .cloned()
            .unwrap_or_else(|| feed::BUNDLED_SYMBOL.to_string());
        return Ok((
            feed::Timeline::single(&symbol, &rows),
            feed::BUNDLED_NAME.to_string(),
        ));
    }
    if args.symbol.len() > args.data.len() {
        anyhow::bail!(
            "{} --symbol for {} --data: give at most one symbol per file, in the same order",
            args.symbol.len(),
            args.data.len()
        );
    }
    let mut series = Vec::with_capacity(args.data.len());
    for (i, path) in args.data.iter().enumerate() {
        let symbol = args
            .symbol
            .get(i)
            .cloned()
            .unwrap_or_else(|| feed::symbol_from_path(path));
        if series.iter().any(|(s, _)| *s == symbol) {
            anyhow::bail!("symbol {symbol} is given to two files; name them apart with --symbol");
        }
        series.push((symbol, feed::csv::read_path(path)?));
    }
    let name = args
        .data
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ");
    Ok((feed::Timeline::merge(series), name))
}

/// A progress bar over `bars` bars, on a terminal only.
fn progress_bar(bars: usize) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(bars as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} bars ({per_sec})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    Some(bar)
}

/// Write what is left of the records (for at most [`RECORDS_DEADLINE`])
/// and say how it went.
fn finish_records(recorder: Recorder) {
    let report = recorder.finish(RECORDS_DEADLINE);
    let lost = if report.lost > 0 {
        format!(
            ", {} NOT written: {}",
            report.lost,
            report.last_error.unwrap_or_default()
        )
    } else {
        String::new()
    };
    eprintln!(
        "records: {} written, {} retries{lost}",
        report.written, report.retries
    );
}

/// Store the run and its lineage, for `garden lineage`; a store that fails
/// is a warning, not a failed run.
fn save_run(
    audit: &garden_host::audit::Audit,
    run_id: &str,
    started: &str,
    seed: u64,
    summary: &garden_host::replay::RunSummary,
) -> Result<()> {
    let lineage: Vec<(String, String)> = summary
        .lineage
        .iter()
        .map(|r| Ok((r.id.clone(), serde_json::to_string(r)?)))
        .collect::<Result<_, serde_json::Error>>()?;
    let summary_json = serde_json::to_string(summary)?;
    if let Err(e) = audit.store().run(async |s| {
        s.save_run(
            run_id,
            started,
            seed,
            &summary.data,
            &summary_json,
            &lineage,
        )
        .await
    }) {
        eprintln!("warning: the run's lineage was not stored: {e}");
    }
    Ok(())
}

/// Options of `garden precompile`.
#[derive(clap::Args)]
pub struct PrecompileArgs {
    /// Pipeline whose modules to compile (default: the embedded one).
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
    /// Directory for compiled modules (default: ~/.cache/garden).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Trust store (default: $GARDEN_TRUST or ~/.config/garden/trust.toml).
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
    /// Store for the audit log (default: sqlite://~/.local/share/garden/garden.db).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
}

/// `garden precompile`: verify and compile a pipeline's modules into the
/// cache, so that the first run starts at once (a Python component takes
/// seconds to compile).
pub fn precompile(args: PrecompileArgs) -> Result<()> {
    let config = match &args.config {
        Some(path) => PipelineConfig::read(path)?,
        None => PipelineConfig::embedded()?,
    };
    let Some(cache) = args.cache_dir.or_else(default_cache_dir) else {
        anyhow::bail!("no cache directory: pass --cache-dir DIR");
    };
    let store_url = args
        .store
        .clone()
        .or_else(|| config.store.clone())
        .unwrap_or_else(garden_host::audit::default_store_url);
    let loaded = load(
        &config,
        Some(cache.clone()),
        args.trust.as_ref(),
        &store_url,
        false,
    )?;
    println!(
        "{} modules verified and compiled into {}",
        loaded.modules.len(),
        cache.display()
    );
    Ok(())
}
