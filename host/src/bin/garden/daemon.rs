//! `garden daemon`: run a share of the pipeline's instances on a Redis bus,
//! until killed; and `garden status`: what the live daemons run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use garden_host::bus::{Bus, RedisBus};
use garden_host::cluster::{self, DaemonStatus, InstanceStatus, Membership};
use garden_host::outbox::StoreOutbox;
use garden_host::pipeline::PipelineConfig;
use garden_host::records::{RECORDED_TOPICS, Recorder};
use garden_host::runtime::InstanceState;
use garden_host::{Engine, InstanceSpec, Runtime, integrity, population};

/// Options of `garden daemon`.
#[derive(clap::Args)]
pub struct DaemonArgs {
    /// The shared Redis: redis://[user:password@]host:port (or `[bus] url`
    /// in the pipeline file).
    #[arg(long, value_name = "URL")]
    bus: Option<String>,
    /// Prefix of every Redis key; daemons with the same prefix form one garden.
    #[arg(long, default_value = "garden")]
    prefix: String,
    /// This daemon's name (default: hostname-pid). Keep it across restarts
    /// to take back its own unfinished messages at once.
    #[arg(long)]
    name: Option<String>,
    /// Pipeline configuration (default: the embedded pipeline.toml).
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
    /// Seed for the population's genes: every daemon must use the same.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How long a heartbeat lives; a daemon silent this long is dead and its
    /// instances move to the others.
    #[arg(long, default_value_t = 3000, value_name = "MS")]
    heartbeat_ttl_ms: u64,
    /// Messages a dead daemon left unfinished this long are taken over.
    #[arg(long, value_name = "MS")]
    claim_idle_ms: Option<u64>,
    /// Trust store (default: $GARDEN_TRUST or ~/.config/garden/trust.toml).
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
    /// Directory for compiled modules (default: ~/.cache/garden).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Record every message on the recorded topics in this store
    /// (postgres://...; also `store =` in the pipeline file), under run id
    /// = the prefix. The daemons share the work: each message is recorded
    /// once, whichever daemon reads it, even if it is delivered twice.
    /// Publishes made while Redis is unreachable wait in its outbox table.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
}

fn state_name(s: &InstanceState) -> String {
    match s {
        InstanceState::Running => "ok".into(),
        InstanceState::Restarting => "restarting".into(),
        InstanceState::Quarantined { reason } => format!("quarantined: {reason}"),
        InstanceState::Retiring => "retiring".into(),
        InstanceState::Retired => "retired".into(),
    }
}

/// Run `garden daemon`.
pub fn daemon(args: DaemonArgs) -> Result<()> {
    let config = match &args.config {
        Some(path) => PipelineConfig::read(path)?,
        None => PipelineConfig::embedded()?,
    };
    let mut bus_config = config.bus.clone();
    if let Some(url) = &args.bus {
        bus_config.url = Some(url.clone());
    }
    bus_config.prefix = Some(args.prefix.clone());
    if let Some(name) = &args.name {
        bus_config.consumer = Some(name.clone());
    }
    if let Some(ms) = args.claim_idle_ms {
        bus_config.claim_idle_ms = Some(ms);
    }
    let Some(mut options) = bus_config.redis(&args.prefix)? else {
        bail!("garden daemon needs a shared Redis: give --bus redis://host:port");
    };
    options.bar_topic = Some(config.feed_topic.clone());
    let name = options.consumer.clone();
    let url = options.url.clone();
    let cache = args
        .cache_dir
        .clone()
        .or_else(crate::run::default_cache_dir);
    let engine =
        Arc::new(Engine::new(config.limits.clone(), cache).context("starting the wasm engine")?);
    let trust_path = args
        .trust
        .clone()
        .unwrap_or_else(integrity::default_trust_path);
    let trust = integrity::run_trust(&trust_path)?;
    let modules = config.load(&engine, &trust)?;
    // Every daemon computes the same plan: same ids, and for the same seed
    // the same genes.
    let all: Vec<InstanceSpec> = population::plan(&modules, args.seed, None)?
        .into_iter()
        .map(|p| p.spec)
        .collect();
    let store = args.store.clone().or_else(|| config.store.clone());
    let mut bus = RedisBus::connect(options)?;
    if let Some(url) = &store {
        // Publishes made while Redis is down wait in the store, and survive
        // this process.
        bus.set_outbox(Box::new(
            StoreOutbox::new(url, &name).map_err(anyhow::Error::msg)?,
        ));
    }
    let mut runtime = Runtime::new(engine, bus, args.seed);
    let mut recorder = store.map(|url| {
        // One host subscriber group per topic for all daemons: each
        // message is read, and recorded, by one of them.
        for t in RECORDED_TOPICS {
            runtime.host_subscribe(t);
        }
        // Acknowledged only once recorded: a daemon killed before its
        // records are written leaves the messages for another to record.
        runtime.manual_host_acks();
        eprintln!(
            "recording into {} as run {}",
            garden_host::bus::redis::redacted(&url),
            args.prefix
        );
        Recorder::start(&url, &args.prefix)
    });
    let mut membership = Membership::connect(
        &url,
        &args.prefix,
        &name,
        Duration::from_millis(args.heartbeat_ttl_ms.max(30)),
    )?;
    eprintln!(
        "garden daemon {name}: {} instances in the pipeline, prefix {}",
        all.len(),
        args.prefix
    );
    let mut status = DaemonStatus {
        name: name.clone(),
        host: garden_host::bus::redis::hostname(),
        pid: std::process::id(),
        started: integrity::now_rfc3339(),
        ..DaemonStatus::default()
    };
    let mut live: Vec<String> = vec![name.clone()];
    let mut next_beat = Instant::now();
    loop {
        if Instant::now() >= next_beat {
            next_beat = Instant::now() + membership.interval();
            status.beats += 1;
            status.bus_error = runtime.bus().last_error().map(str::to_string);
            status.instances = runtime
                .instances()
                .into_iter()
                .map(|i| InstanceStatus {
                    depth: runtime.bus().depth(&i.id),
                    lag: runtime.bus().unacked(&i.id),
                    state: state_name(&i.state),
                    id: i.id,
                    module: i.module,
                    received: i.received,
                    last_error: i.last_error,
                })
                .collect();
            // Leadership: take or keep the lease; a new term is announced
            // as the leader's first (fenced) decision.
            match membership.lead() {
                Ok(term) => {
                    if let Some(t) = term
                        && term != status.leader_term
                    {
                        eprintln!("leading, term {t}");
                        let _ = membership.decide(t, &[("kind", "leader"), ("daemon", &name)]);
                    }
                    status.leader_term = term;
                }
                Err(e) => {
                    eprintln!("leader lease check failed ({e}); not leading");
                    status.leader_term = None;
                }
            }
            match membership.beat(&status) {
                Ok(now) => {
                    if now != live {
                        eprintln!("live daemons: {}", now.join(", "));
                    }
                    live = now;
                }
                Err(e) => eprintln!("heartbeat failed ({e}); keeping the last view"),
            }
            let running: Vec<String> = runtime.instances().into_iter().map(|i| i.id).collect();
            for spec in &all {
                let mine = cluster::owner(&spec.id, &live) == Some(name.as_str());
                let here = running.contains(&spec.id);
                if mine && !here {
                    eprintln!("starting {}", spec.id);
                    if let Err(e) = runtime.spawn(spec.clone()) {
                        eprintln!("could not start {}: {e}", spec.id);
                    }
                } else if !mine && here {
                    eprintln!("handing {} over", spec.id);
                    runtime.remove(&spec.id);
                }
            }
        }
        runtime.run_until_idle();
        let seen = runtime.take_host_messages();
        if let Some(r) = recorder.as_mut()
            && !seen.is_empty()
        {
            r.record_by_seq(&seen);
            // A short wait: a slow or absent database must not stop the
            // heartbeat. What is not yet written stays unacknowledged and
            // is acknowledged with a later batch.
            if r.flush(Duration::from_millis(200)) {
                runtime.ack_host_messages();
            }
        }
        // Idle: wait a little before asking Redis again.
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Options of `garden status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// The shared Redis: redis://[user:password@]host:port.
    #[arg(long, value_name = "URL")]
    bus: String,
    /// Prefix of the garden's Redis keys.
    #[arg(long, default_value = "garden")]
    prefix: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Run `garden status`.
pub fn status(args: StatusArgs) -> Result<()> {
    let daemons = cluster::status(&args.bus, &args.prefix)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&daemons)?);
        return Ok(());
    }
    if daemons.is_empty() {
        println!("no live daemons under prefix {}", args.prefix);
        return Ok(());
    }
    for d in &daemons {
        println!(
            "{}{} (pid {} on {}, up since {}, {} heartbeats){}",
            d.name,
            d.leader_term
                .map(|t| format!(" [leader, term {t}]"))
                .unwrap_or_default(),
            d.pid,
            d.host,
            d.started,
            d.beats,
            d.bus_error
                .as_deref()
                .map(|e| format!("; bus error: {e}"))
                .unwrap_or_default()
        );
        println!(
            "  {:<22} {:<12} {:>9} {:>6} {:>6}  last error",
            "instance", "state", "handled", "depth", "lag"
        );
        for i in &d.instances {
            println!(
                "  {:<22} {:<12} {:>9} {:>6} {:>6}  {}",
                i.id,
                i.state,
                i.received,
                i.depth,
                i.lag,
                i.last_error.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(())
}
