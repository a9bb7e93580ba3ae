//! `garden daemon`: run a share of a garden's instances on a Redis bus,
//! until killed: heartbeats, leadership, the decision log, snapshots and
//! acknowledgements at checkpoints, records and audit.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use garden_host::bus::{Bus, RedisBus};
use garden_host::cluster::{
    self, DaemonStatus, Decision, Follower, InstanceStatus, Leader, LeaderTopics, Membership,
};
use garden_host::config::PipelineConfig;
use garden_host::parking::StoreParking;
use garden_host::records::{RECORDED_TOPICS, Recorder};
use garden_host::runtime::{InstanceState, Restarts, RuntimeOptions};
use garden_host::types::Snapshot;
use garden_host::{Module, Runtime, integrity};

mod garden;

use garden::{Garden, persist_lineage};

/// How often the leader reads the streams and acts.
const LEADER_POLL: Duration = Duration::from_millis(100);

/// Options of `garden daemon`.
#[derive(clap::Args)]
pub struct DaemonArgs {
    /// The shared Redis: `redis://[user:password@]host:port` (or `[bus] url`
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
    /// Publishes made while Redis is unreachable are parked in it.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Run a module older than one this host ran before, on purpose.
    #[arg(long)]
    allow_downgrade: bool,
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
    let store = args.store.clone().or_else(|| config.store.clone());
    // Loads, refusals, quarantines and refused publishes go to the audit
    // log, in the shared store if there is one, as `garden run` does.
    let crate::run::Loaded {
        engine,
        audit,
        modules,
    } = crate::run::load(
        &config,
        cache,
        args.trust.as_ref(),
        &store
            .clone()
            .unwrap_or_else(garden_host::audit::default_store_url),
        args.allow_downgrade,
    )?;
    let loaded: Vec<Arc<Module>> = modules.iter().map(|(_, m)| m.clone()).collect();
    // Every daemon computes the same plan: same ids, and for the same seed
    // the same genes. Births and retirements come from the leader's log.
    let plan = garden_host::loader::plan(&modules, args.seed, None)?;
    let mut garden = Garden {
        wanted: plan.iter().map(|p| (p.spec.clone(), None)).collect(),
        retired: HashSet::new(),
        settings: plan
            .iter()
            .find(|p| p.population)
            .map(|p| p.spec.settings.clone())
            .unwrap_or_default(),
        modules: loaded.clone(),
        follower: Follower::default(),
    };
    let topics = LeaderTopics {
        bars: config.feed_topic.clone(),
        fitness: config.fitness_topic.clone(),
        context: config.context_topic.clone(),
    };
    let mut bus = RedisBus::connect(options)?;
    // Acknowledged at each heartbeat, once the snapshots are saved.
    bus.hold_acks();
    if let Some(url) = &store {
        // Publishes made while Redis is down wait in the store, and survive
        // this process.
        bus.set_parking(Box::new(StoreParking::new(url, &name)));
    }
    // A failing instance waits out its backoff aside, never stalling the
    // others (a replay waits in turn instead, to repeat exactly).
    let mut runtime = Runtime::new(engine, bus, args.seed).with_options(RuntimeOptions {
        restarts: Restarts::Aside,
        ..RuntimeOptions::default()
    });
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
        let recorder = Recorder::start(&url, &args.prefix);
        // The garden is one run, for `garden lineage --run PREFIX`.
        recorder.open_run(&integrity::now_rfc3339(), args.seed, "redis");
        recorder
    });
    let mut membership = Membership::connect(
        &url,
        &args.prefix,
        &name,
        Duration::from_millis(args.heartbeat_ttl_ms.max(30)),
    )?;
    eprintln!(
        "garden daemon {name}: {} instances in the pipeline, prefix {}",
        plan.len(),
        args.prefix
    );
    let mut status = DaemonStatus {
        name: name.clone(),
        host: garden_host::bus::redis::hostname(),
        pid: std::process::id(),
        started: integrity::now_rfc3339(),
        plan: cluster::plan_fingerprint(plan.iter().map(|p| {
            (
                p.spec.id.as_str(),
                p.spec.module.digest(),
                format!("{:?}", p.spec.params),
            )
        })),
        ..DaemonStatus::default()
    };
    let mut warned_plans = false;
    let mut live: Vec<String> = vec![name.clone()];
    let mut quarantined: HashMap<String, String> = HashMap::new();
    let mut leader: Option<Leader> = None;
    let mut auditor = Auditor {
        audit,
        daemon: name.clone(),
        quarantines: HashSet::new(),
        refusals: HashMap::new(),
    };
    let mut next_beat = Instant::now();
    let mut next_leader_poll = Instant::now();
    loop {
        if Instant::now() >= next_beat {
            next_beat = Instant::now() + membership.interval();
            status.beats += 1;
            status.bus_error = runtime.bus().last_error().map(str::to_string);
            let reports = runtime.instances();
            auditor.note(&reports);
            status.instances = reports
                .into_iter()
                .map(|i| InstanceStatus {
                    depth: runtime.bus().depth(&i.id),
                    lag: runtime.bus().unacked(&i.id),
                    state: i.state.to_string(),
                    id: i.id,
                    module: i.module,
                    received: i.received,
                    last_error: i.last_error,
                })
                .collect();
            // The population as decided so far, before leading: a new
            // leader starts from all of it.
            garden.follow(&mut membership, &mut runtime);
            persist_lineage(&mut garden.follower, recorder.as_ref());
            // Leadership: take or keep the lease; a new term is announced
            // as the leader's first (fenced) decision.
            match membership.lead() {
                Ok(Some(t)) => {
                    // A new term (whether or not the pipeline has a
                    // population to breed) is announced once.
                    if status.leader_term != Some(t) {
                        eprintln!("leading, term {t}");
                        let _ = membership.log(
                            t,
                            &Decision::Leader {
                                term: t,
                                daemon: name.clone(),
                            },
                        );
                        leader = Leader::new(
                            t,
                            config.evolution.clone(),
                            args.seed,
                            &plan,
                            loaded.clone(),
                            garden.follower.lineage(),
                            garden.follower.stepped(),
                            topics.clone(),
                        );
                    }
                    status.leader_term = Some(t);
                }
                Ok(None) => {
                    leader = None;
                    status.leader_term = None;
                }
                Err(e) => {
                    eprintln!("leader lease check failed ({e}); not leading");
                    leader = None;
                    status.leader_term = None;
                }
            }
            match membership.beat(&status) {
                Ok(now) => {
                    let names: Vec<String> = now.iter().map(|d| d.name.clone()).collect();
                    if names != live {
                        eprintln!("live daemons: {}", names.join(", "));
                    }
                    live = names;
                    match cluster::plan_warning(&now) {
                        Some(warning) if !warned_plans => {
                            warned_plans = true;
                            eprintln!("{warning}");
                        }
                        None => warned_plans = false,
                        Some(_) => {}
                    }
                    quarantined = now
                        .iter()
                        .flat_map(|d| &d.instances)
                        .filter_map(|i| {
                            i.state
                                .strip_prefix("quarantined: ")
                                .map(|why| (i.id.clone(), why.to_string()))
                        })
                        .collect();
                }
                Err(e) => eprintln!("heartbeat failed ({e}); keeping the last view"),
            }
            checkpoint(&mut runtime, &mut membership);
            garden.place(&name, &live, &mut runtime, &mut membership);
        }
        if let Some(l) = leader.as_mut()
            && Instant::now() >= next_leader_poll
        {
            next_leader_poll = Instant::now() + LEADER_POLL;
            l.set_quarantined(quarantined.clone());
            match l.poll(&mut membership) {
                Ok(0) => {}
                Ok(n) => {
                    eprintln!("{n} population decisions at bar {}", l.bars());
                    garden.follow(&mut membership, &mut runtime);
                    persist_lineage(&mut garden.follower, recorder.as_ref());
                    garden.place(&name, &live, &mut runtime, &mut membership);
                }
                Err(e) => eprintln!("leader could not read or decide ({e})"),
            }
            if !l.leading() {
                eprintln!("a newer leader exists; no longer leading");
                leader = None;
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
        // Idle: block until an entry may be waiting, or the next beat or
        // leader poll is due; a busy daemon does not wait.
        let mut due = if leader.is_some() {
            next_beat.min(next_leader_poll)
        } else {
            next_beat
        };
        if let Some(restart) = runtime.next_restart() {
            due = due.min(restart);
        }
        let idle_for = due.saturating_duration_since(Instant::now());
        runtime.bus_mut().wait(idle_for);
    }
}

/// Save a snapshot of every running instance, so that each one's latest
/// state goes with it wherever it is started next (and to its children);
/// then acknowledge what those snapshots include, and no more: what is
/// handled after them is handled again wherever the instance restarts.
fn checkpoint(runtime: &mut Runtime<RedisBus>, membership: &mut Membership) {
    let snapshots: Vec<(String, Snapshot)> = runtime
        .instances()
        .into_iter()
        .filter(|i| matches!(i.state, InstanceState::Running))
        .filter_map(|i| runtime.snapshot_of(&i.id).map(|s| (i.id, s)))
        .collect();
    match membership.save_snapshots(&snapshots) {
        Ok(()) => runtime.bus_mut().release_acks(),
        Err(e) => eprintln!("could not keep snapshots ({e}); acknowledgements wait"),
    }
}

/// Writes what happens to this daemon's instances to the audit log, once
/// each: quarantines, and publishes refused since the last look.
struct Auditor {
    audit: garden_host::audit::Audit,
    daemon: String,
    quarantines: HashSet<String>,
    refusals: HashMap<String, u64>,
}

impl Auditor {
    fn note(&mut self, reports: &[garden_host::runtime::InstanceReport]) {
        for i in reports {
            if let InstanceState::Quarantined { reason } = &i.state
                && self.quarantines.insert(i.id.clone())
            {
                self.audit.record("quarantine", &i.id, &self.daemon, reason);
            }
            let before = self
                .refusals
                .insert(i.id.clone(), i.refused_publishes)
                .unwrap_or(0);
            if i.refused_publishes > before {
                self.audit.record(
                    "publish-refused",
                    &i.id,
                    &self.daemon,
                    &format!(
                        "{} publishes refused (undeclared topic or too large)",
                        i.refused_publishes - before
                    ),
                );
            }
        }
    }
}
