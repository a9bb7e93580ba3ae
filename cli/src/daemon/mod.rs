//! `garden daemon`: run a share of a garden's instances on a Redis bus,
//! until killed: heartbeats, leadership, the decision log, snapshots and
//! acknowledgements at checkpoints, records and audit.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use garden_host::bus::{Bus, RedisBus, RedisOptions};
use garden_host::cluster::{
    self, DaemonStatus, Decision, Follower, Identity, InstanceStatus, Leader, LeaderTopics,
    Membership, Peers,
};
use garden_host::config::PipelineConfig;
use garden_host::parking::StoreParking;
use garden_host::records::{RECORDED_TOPICS, Recorder};
use garden_host::runtime::{InstanceState, Restarts, RuntimeOptions};
use garden_host::types::Snapshot;
use garden_host::{Module, Runtime, integrity};

mod answers;
mod deploys;
mod garden;
mod keys;

use garden::{Garden, persist_lineage};
use keys::{BodyKeysFile, KeyFile, Rotation, TrustFile};

/// How often the leader reads the streams and acts.
const LEADER_POLL: Duration = Duration::from_millis(100);
/// How often the leader reads deploy requests: one short read, often, so
/// a deploy waits little for its answer.
const REQUEST_POLL: Duration = Duration::from_millis(20);
/// Longest wait for the recorder to write what was read, per turn; what is
/// not written by then is acknowledged with a later batch.
const RECORD_FLUSH_WAIT: Duration = Duration::from_millis(200);
/// Shortest heartbeat lifetime accepted, ms: below it a busy daemon would
/// be declared dead between two beats.
const HEARTBEAT_TTL_MIN_MS: u64 = 30;
/// Refused heartbeats remembered so each is audited once; past this many
/// the memory starts again (a repeat is audited again, nothing is lost).
const MAX_AUDITED_HEARTBEATS: usize = 4096;

/// Options of `garden daemon`.
#[derive(clap::Args)]
pub struct DaemonArgs {
    /// The shared Redis: `redis://[user:password@]host:port` (or `[bus] url`
    /// in the pipeline file; or $GARDEN_BUS_URL).
    #[arg(
        long,
        value_name = "URL",
        env = "GARDEN_BUS_URL",
        hide_env_values = true
    )]
    bus: Option<String>,
    #[command(flatten)]
    passwords: crate::secrets::PasswordFiles,
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
    /// Trust store (default: $GARDEN_TRUST or ~/.config/garden/trust.toml):
    /// the publishers whose components it runs, and the daemon keys whose
    /// entries it accepts (`garden trust add --role daemon`).
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
    /// This daemon's private key, which signs its heartbeats and decisions
    /// (default: $GARDEN_DATA/daemons/NAME.key.pem, made on first start,
    /// mode 0600). Its public half must be trusted with
    /// `garden trust add --role daemon` by every daemon of the garden.
    #[arg(long, value_name = "FILE.key.pem")]
    key: Option<PathBuf>,
    /// Directory for compiled modules (default: ~/.cache/garden).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Record every message on the recorded topics in this store
    /// (postgres://...; also `store =` in the pipeline file), under run id
    /// = the prefix. The daemons share the work: each message is recorded
    /// once, whichever daemon reads it, even if it is delivered twice.
    /// Publishes made while Redis is unreachable are parked in it. Or
    /// $GARDEN_STORE_URL.
    #[arg(
        long,
        value_name = "URL",
        env = "GARDEN_STORE_URL",
        hide_env_values = true
    )]
    store: Option<String>,
    /// The garden's body keyring (mode 0600; `garden key rotate
    /// --body-keys FILE` makes one): message bodies on Redis, snapshots in
    /// Redis and records in the store are encrypted with it. Every daemon
    /// of the garden needs the same file.
    #[arg(long, value_name = "FILE", env = "GARDEN_BODY_KEYS")]
    body_keys: Option<PathBuf>,
    /// Serve metrics (`/metrics`, Prometheus's text format) and health
    /// (`/healthz`, `/readyz`) on this address, e.g. 127.0.0.1:9464
    /// (`docs/metrics.md`).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
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
    let options = redis_options(&args, &config)?;
    let cache = args
        .cache_dir
        .clone()
        .or_else(crate::run::default_cache_dir);
    let store = args
        .store
        .clone()
        .or_else(|| config.store.clone())
        .map(|url| args.passwords.store(url))
        .transpose()?;
    // Loads, refusals, quarantines and refused publishes go to the audit
    // log, in the shared store if there is one, as `garden run` does.
    let crate::run::Loaded {
        engine,
        trust,
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
    let name = options.consumer.clone();
    let url = options.url.clone();
    let peers = Peers::new(trust.operator().clone());
    let (identity, key_path) = identity(&args, &name, &peers)?;
    let key_file = KeyFile::new(key_path, identity.key().clone());
    let (body_keys_file, body_keys) = match &args.body_keys {
        Some(path) => {
            let (file, keys) = BodyKeysFile::open(path.clone())?;
            (Some(file), Some(keys))
        }
        None => (None, None),
    };
    let mut bus = RedisBus::connect(options)?;
    // Messages are tagged for, and accepted from, the trusted daemons only.
    bus.set_auth(identity.entry_auth(&peers));
    // Acknowledged at each heartbeat, once the snapshots are saved.
    bus.hold_acks();
    // Back from a partition, drop what others have taken over meanwhile.
    bus.fence_on_loss();
    if let Some(url) = &store {
        // Publishes made while Redis is down wait in the store, and survive
        // this process.
        bus.set_parking(Box::new(StoreParking::new(url, &name)));
    }
    // A failing instance waits out its backoff aside, never stalling the
    // others (a replay waits in turn instead, to repeat exactly).
    let mut runtime = Runtime::new(engine.clone(), bus, args.seed).with_options(RuntimeOptions {
        restarts: Restarts::Aside,
        ..RuntimeOptions::default()
    });
    let mut recorder = store.map(|url| start_recorder(&mut runtime, &url, &args));
    let mut membership = Membership::connect(
        &url,
        &args.prefix,
        &name,
        Duration::from_millis(args.heartbeat_ttl_ms.max(HEARTBEAT_TTL_MIN_MS)),
    )?
    .signing(identity)
    .trusting(peers);
    if body_keys.is_some() {
        membership.set_body_keys(body_keys.clone());
        if let Some(auth) = membership.entry_auth() {
            runtime.bus_mut().set_auth(auth.clone());
        }
        if let Some(r) = recorder.as_mut() {
            r.seal_bodies(body_keys);
        }
    }
    eprintln!(
        "garden daemon {name}: {} instances in the pipeline, prefix {}",
        plan.len(),
        args.prefix
    );
    let monitor = match args.metrics {
        Some(addr) => {
            // Every plan, decision and fill, through a group of this
            // daemon's own, to time the path between them.
            for topic in garden_report::latency::TOPICS {
                runtime.watch(topic, &format!("$watch.{name}"));
            }
            // Two heartbeats' lifetime without one: not ready.
            let ttl = Duration::from_millis(args.heartbeat_ttl_ms.max(HEARTBEAT_TTL_MIN_MS));
            let monitor = crate::monitor::Monitor::serve(addr, 2 * ttl)?;
            eprintln!("metrics on http://{}/metrics", monitor.addr());
            Some((garden_host::metrics::Metrics::new(), monitor))
        }
        None => None,
    };
    let mut daemon = Daemon {
        monitor,
        latency: garden_report::latency::Latency::new(garden_report::latency::PENDING),
        status: DaemonStatus {
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
        },
        garden: Garden {
            wanted: plan.iter().map(|p| (p.spec.clone(), None)).collect(),
            retired: HashSet::new(),
            settings: plan
                .iter()
                .find(|p| p.population)
                .map(|p| p.spec.settings.clone())
                .unwrap_or_default(),
            modules: loaded,
            follower: Follower::default(),
            canaries: Vec::new(),
            unborn: Vec::new(),
            held_canaries: Vec::new(),
            gates: Vec::new(),
            next_gate_check: Instant::now(),
            current: modules
                .iter()
                .map(|(c, m)| (c.name.clone(), m.clone(), c.cohort))
                .collect(),
            deployer: deploys::Deployer {
                engine: engine.clone(),
                trust: trust.clone(),
                rolling: Vec::new(),
                waiting: false,
            },
            refused_deploys: Vec::new(),
        },
        requests_after: None,
        view: Vec::new(),
        topics: LeaderTopics {
            bars: config.feed_topic.clone(),
            fitness: config.fitness_topic.clone(),
            context: config.context_topic.clone(),
        },
        evolution: config.evolution.clone(),
        seed: args.seed,
        plan,
        watch: garden_host::audit::Watch::new(audit, &name),
        live: vec![name.clone()],
        name,
        runtime,
        membership,
        recorder,
        warned_plans: false,
        audited_heartbeats: HashSet::new(),
        messages_refused: 0,
        quarantined: HashMap::new(),
        leader: None,
        lease_renewed: None,
        next_beat: Instant::now(),
        last_beat: Instant::now(),
        next_leader_poll: Instant::now(),
        next_request_poll: Instant::now(),
        trust_file: TrustFile::new(
            args.trust
                .clone()
                .unwrap_or_else(integrity::default_trust_path),
            trust.operator(),
        ),
        key_file,
        body_keys_file,
        stopped: None,
    };
    while daemon.stopped.is_none() {
        daemon.step();
    }
    daemon.membership.leave();
    bail!(daemon.stopped.unwrap_or_default())
}

/// Where daemon `name` keeps its key unless told (`--key`).
pub(crate) fn default_key_path(name: &str) -> PathBuf {
    garden_host::paths::data_dir()
        .join("daemons")
        .join(format!("{name}.key.pem"))
}

/// This daemon's key (made on first start) and its file, which its own
/// trust store must list as a daemon key: otherwise every other daemon
/// would ignore it.
fn identity(args: &DaemonArgs, name: &str, peers: &Peers) -> Result<(Arc<Identity>, PathBuf)> {
    let path = args.key.clone().unwrap_or_else(|| default_key_path(name));
    let (identity, made) = Identity::load_or_create(&path)?;
    let public = cluster::public_key_path(&path);
    if made {
        eprintln!(
            "made this daemon's key {} at {} (public half {})",
            identity.id(),
            path.display(),
            public.display()
        );
    }
    if peers.name_of(&identity.id()).is_none() {
        bail!(
            "this daemon's key {} is not a trusted daemon key, so no daemon would accept its entries: \
             run `garden trust add --role daemon {}` on every host of this garden (and give the same trust file with --trust)",
            identity.id(),
            public.display()
        );
    }
    Ok((Arc::new(identity), path))
}

/// The Redis options of this daemon: the pipeline's `[bus]`, overridden
/// by the command line.
fn redis_options(args: &DaemonArgs, config: &PipelineConfig) -> Result<RedisOptions> {
    let mut bus_config = config.bus.clone();
    if let Some(url) = &args.bus {
        bus_config.url = Some(url.clone());
    }
    if let Some(url) = bus_config.url.take() {
        bus_config.url = Some(args.passwords.bus(url)?);
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
    options.feed_topic = Some(config.feed_topic.clone());
    Ok(options)
}

/// Record the recorded topics into the store at `url`, as run `--prefix`.
fn start_recorder(runtime: &mut Runtime<RedisBus>, url: &str, args: &DaemonArgs) -> Recorder {
    // One host subscriber group per topic for all daemons: each message is
    // read, and recorded, by one of them.
    for t in RECORDED_TOPICS {
        runtime.host_subscribe(t);
    }
    // Acknowledged only once recorded: a daemon killed before its records
    // are written leaves the messages for another to record.
    runtime.manual_host_acks();
    eprintln!(
        "recording into {} as run {}",
        garden_host::bus::redis::redacted(url),
        args.prefix
    );
    let recorder = Recorder::start(url, &args.prefix);
    // The garden is one run, for `garden lineage --run PREFIX`.
    recorder.open_run(&integrity::now_rfc3339(), args.seed, "redis");
    recorder
}

/// A running daemon: its share of the instances, its place in the garden
/// and, while it holds the lease, the leader.
struct Daemon {
    name: String,
    seed: u64,
    plan: Vec<garden_host::loader::Planned>,
    evolution: garden_host::config::EvolutionConfig,
    topics: LeaderTopics,
    runtime: Runtime<RedisBus>,
    membership: Membership,
    garden: Garden,
    recorder: Option<Recorder>,
    watch: garden_host::audit::Watch,
    status: DaemonStatus,
    live: Vec<String>,
    warned_plans: bool,
    /// Refused heartbeats already audited (one record each, not one per beat).
    audited_heartbeats: HashSet<String>,
    /// Message entries the bus had refused at the last heartbeat.
    messages_refused: u64,
    quarantined: HashMap<String, String>,
    leader: Option<Leader>,
    /// When this daemon last renewed the leader lease, while it leads.
    lease_renewed: Option<Instant>,
    next_beat: Instant,
    /// When a heartbeat last went through.
    last_beat: Instant,
    next_leader_poll: Instant,
    next_request_poll: Instant,
    /// Re-read at every heartbeat when it changed, so a revoked daemon key
    /// is ignored within one heartbeat.
    trust_file: TrustFile,
    /// Watched at every heartbeat, so a rotated key is taken up.
    key_file: KeyFile,
    /// Watched the same way, where bodies are encrypted.
    body_keys_file: Option<BodyKeysFile>,
    /// Why the daemon stops, once it must.
    stopped: Option<String>,
    /// The last deploy request read while leading.
    requests_after: Option<String>,
    /// The live daemons' latest heartbeats.
    view: Vec<DaemonStatus>,
    /// Its metrics and where they are served, with `--metrics`.
    monitor: Option<(garden_host::metrics::Metrics, crate::monitor::Monitor)>,
    /// Plans and decisions waiting for their match, to time the path.
    latency: garden_report::latency::Latency,
}

impl Daemon {
    /// One turn of the daemon's loop: a heartbeat when due, the leader's
    /// work when due, the instances' work, and a wait when idle.
    fn step(&mut self) {
        if Instant::now() >= self.next_beat {
            self.next_beat = Instant::now() + self.membership.interval();
            self.beat();
        }
        if self.status.leader_term.is_some() && Instant::now() >= self.next_request_poll {
            self.next_request_poll = Instant::now() + REQUEST_POLL;
            self.answer_requests();
        }
        if self.status.leader_term.is_some() && Instant::now() >= self.next_leader_poll {
            self.next_leader_poll = Instant::now() + LEADER_POLL;
            self.lead();
        }
        self.runtime.run_until_idle();
        if self.garden.deployer.waiting {
            self.carry_deploys();
        }
        self.record();
        self.time_the_path();
        self.wait();
    }

    /// Carry deploys on ([`Garden::switch`]) and audit what that did:
    /// between rounds while a load goes or an instance waits at its hold,
    /// and at every heartbeat for the old code's instances placed since.
    fn carry_deploys(&mut self) {
        for line in self.garden.switch(&mut self.runtime) {
            let kind = if line.starts_with("refused") {
                "deploy-refused"
            } else {
                "deploy"
            };
            self.watch.audit().record(kind, "daemon", &self.name, &line);
        }
    }

    /// The heartbeat: report, follow the decision log, take or keep the
    /// lease, beat, checkpoint, and place the instances over the live
    /// daemons.
    fn beat(&mut self) {
        self.reread_trust();
        if self.stopped.is_some() {
            return;
        }
        self.status.beats += 1;
        self.status.bus_error = self.runtime.bus().last_error().map(str::to_string);
        let reports = self.runtime.instances();
        self.watch.note(&reports);
        if let Some((metrics, _)) = self.monitor.as_mut() {
            metrics.observe_instances(&reports);
        }
        self.status.instances = reports
            .into_iter()
            .map(|i| InstanceStatus {
                code: self
                    .runtime
                    .code_of(&i.id)
                    .map(|(m, _)| m.label())
                    .unwrap_or_default(),
                code_traps: self.runtime.code_of(&i.id).map_or(0, |(_, t)| t),
                depth: self.runtime.bus().depth(&i.id),
                lag: self.runtime.bus().unacked(&i.id),
                state: i.state.to_string(),
                id: i.id,
                module: i.module,
                received: i.received,
                last_error: i.last_error,
            })
            .collect();
        self.status.deploys = self.garden.deployer.status(&self.runtime);
        // The population as decided so far, before leading: a new leader
        // starts from all of it.
        self.garden.follow(&mut self.membership, &mut self.runtime);
        persist_lineage(&mut self.garden.follower, self.recorder.as_ref());
        self.hold_lease();
        let beat = self.membership.beat(&self.status);
        let beat_error = beat.as_ref().err().map(ToString::to_string);
        match beat {
            Ok(now) => {
                // Presumed dead meanwhile: the others took its instances.
                if self.last_beat.elapsed() >= self.membership.ttl() {
                    self.runtime.bus_mut().fence();
                }
                self.last_beat = Instant::now();
                self.see_garden(&now);
            }
            Err(e) => eprintln!("heartbeat failed ({e}); keeping the last view"),
        }
        self.audit_refusals();
        self.restart_if_fenced();
        checkpoint(&mut self.runtime, &mut self.membership);
        self.garden.place(
            &self.name,
            &self.live,
            &mut self.runtime,
            &mut self.membership,
        );
        if !self.garden.deployer.rolling.is_empty() {
            self.carry_deploys();
        }
        self.report_metrics(beat_error);
    }

    /// Hand the monitor this heartbeat's metrics and whether the daemon is
    /// of use: Redis reachable and the heartbeat through (so it is not cut
    /// off from the lease and the others).
    fn report_metrics(&mut self, beat_error: Option<String>) {
        let Some((metrics, monitor)) = self.monitor.as_mut() else {
            return;
        };
        metrics.observe_bus(self.runtime.bus().stats());
        metrics.observe_audit_failures(self.watch.audit().failures());
        metrics.observe_lineage(self.garden.follower.lineage());
        metrics.observe_diversity(self.leader.as_ref().and_then(Leader::diversity));
        let renewed = self.lease_renewed.filter(|_| self.leader.is_some());
        metrics.observe_lease(renewed.map(|at| at.elapsed()));
        metrics.observe_inboxes(self.status.instances.iter().map(|i| {
            garden_host::metrics::InboxRow {
                instance: &i.id,
                module: &i.module,
                depth: i.depth,
                lag: i.lag,
            }
        }));
        metrics.observe_heartbeat(
            self.status.leader_term,
            self.live.len(),
            self.status.refused,
        );
        let not_ready = match (&self.status.bus_error, beat_error) {
            (Some(e), _) => Some(format!("Redis unreachable: {e}")),
            (None, Some(e)) => Some(format!("the heartbeat did not go through: {e}")),
            (None, None) => None,
        };
        monitor.update(metrics.encode(), not_ready);
    }

    /// After a partition (the bus lost Redis for longer than the claim idle
    /// time, or the heartbeat lapsed), the instances here are stale: others
    /// may have run them and claimed what they held. They are stopped
    /// without a snapshot or an acknowledgement, and placing starts the
    /// ones still this daemon's from the latest snapshots.
    fn restart_if_fenced(&mut self) {
        if !self.runtime.bus_mut().take_fence() {
            return;
        }
        let ids: Vec<String> = self.runtime.instances().into_iter().map(|i| i.id).collect();
        for id in &ids {
            self.runtime.remove(id);
        }
        let detail = format!(
            "cut off from the garden long enough to be presumed dead: {} instances restart from their snapshots, and what they held is left to whoever holds it now",
            ids.len()
        );
        eprintln!("{detail}");
        self.watch
            .audit()
            .record("fenced", "daemon", &self.name, &detail);
    }

    /// Take up a changed trust store and a rotated key: a revoked or
    /// expired daemon key is ignored from this beat on; if it is this
    /// daemon's own and no trusted key replaces it, the daemon stops.
    fn reread_trust(&mut self) {
        let mut changed = self.trust_file.changed().map(|store| {
            self.membership.set_peers(Peers::new(store));
        });
        let settle = self.membership.ttl();
        if let Some(keys) = self.body_keys_file.as_mut().and_then(|f| f.step(settle)) {
            self.membership.set_body_keys(Some(keys.clone()));
            if let Some(r) = self.recorder.as_mut() {
                r.seal_bodies(Some(keys));
            }
            changed = Some(());
        }
        let rotation = self
            .key_file
            .step(self.membership.peers(), self.membership.ttl());
        match rotation {
            Some(Rotation::Reading(identity)) => {
                eprintln!(
                    "the daemon key file holds a new trusted key; reading with it now, writing with it in {:?}",
                    self.membership.ttl()
                );
                self.membership.set_identity(Arc::new(identity));
            }
            Some(Rotation::Switched { identity, old }) => self.switch_key(identity, old),
            None if changed.is_none() => return,
            None => {}
        }
        let me = self.key_file.current();
        if self.membership.peers().name_of(&me).is_none() {
            let why = format!(
                "this daemon's key {me} is no longer a trusted daemon key in {}; stopping (the others ignore its entries now)",
                self.trust_file.path().display()
            );
            self.watch
                .audit()
                .record("daemon-stopped", "daemon", &self.name, &why);
            self.stopped = Some(why);
        }
        if let Some(auth) = self.membership.entry_auth() {
            self.runtime.bus_mut().set_auth(auth.clone());
        }
    }

    /// Write and sign with the rotated key from now on. A leader gives up
    /// its term: a term's decisions are believed only under the key that
    /// announced it, so the next term is announced under the new one.
    fn switch_key(&mut self, identity: Identity, old: garden_registry::KeyId) {
        let new = identity.id();
        self.membership.set_identity(Arc::new(identity));
        if self.leader.take().is_some() {
            if let Err(e) = self.membership.resign() {
                eprintln!(
                    "could not give up the lease after the key rotation ({e}); it expires on its own"
                );
            }
            self.status.leader_term = None;
        }
        let detail = format!("daemon key {old} replaced by {new}");
        eprintln!("{detail}");
        self.watch
            .audit()
            .record("daemon-key-rotated", "daemon", &self.name, &detail);
    }

    /// Count and audit what was refused since the last beat: decisions
    /// each once, heartbeats once per forged value.
    fn audit_refusals(&mut self) {
        for line in std::mem::take(&mut self.garden.refused_deploys) {
            self.watch
                .audit()
                .record("deploy-refused", "daemon", &self.name, &line);
        }
        let decisions = self.garden.follower.take_refused();
        let heartbeats = self.membership.take_refused();
        for r in decisions.into_iter().chain(heartbeats) {
            let detail = format!("{}: {}", r.entry, r.reason);
            if r.kind == "heartbeat" {
                // A forger can vary what it writes: the set is bounded.
                if self.audited_heartbeats.len() >= MAX_AUDITED_HEARTBEATS {
                    self.audited_heartbeats.clear();
                }
                if !self.audited_heartbeats.insert(detail.clone()) {
                    continue;
                }
            }
            self.status.refused += 1;
            eprintln!("refused a {} entry {detail}", r.kind);
            self.watch
                .audit()
                .record("refused-entry", r.kind, &self.name, &detail);
        }
        // What the leader read to select with: a forged bar, fitness or
        // context entry steers nothing, and is counted here.
        let ignored = self.leader.as_mut().map_or(0, Leader::take_refused);
        if ignored > 0 {
            self.status.refused += ignored;
            let detail = format!(
                "{ignored} bar, fitness or context entries no trusted daemon wrote were ignored by the leader since the last heartbeat"
            );
            eprintln!("{detail}");
            self.watch
                .audit()
                .record("refused-entry", "leader-input", &self.name, &detail);
        }
        // Message entries: each is in the dead-letter stream with its
        // reason; the audit gets one line per beat that saw any.
        let messages = self.runtime.bus().stats().refused;
        if messages > self.messages_refused {
            let new = messages - self.messages_refused;
            self.messages_refused = messages;
            self.status.refused += new;
            let detail = format!(
                "{new} message entries no trusted daemon wrote were refused since the last heartbeat (each is in the dead-letter stream with why)"
            );
            eprintln!("{detail}");
            self.watch
                .audit()
                .record("refused-entry", "message", &self.name, &detail);
        }
    }

    /// Take or keep the leader's lease; a new term is announced as the
    /// leader's first (fenced) decision, whether or not the pipeline has a
    /// population to breed.
    fn hold_lease(&mut self) {
        match self.membership.lead() {
            Ok(Some(t)) => {
                if self.status.leader_term != Some(t) {
                    eprintln!("leading, term {t}");
                    let _ = self.membership.log(
                        t,
                        &Decision::Leader {
                            term: t,
                            daemon: self.name.clone(),
                        },
                    );
                    self.leader = Leader::new(
                        t,
                        (self.evolution.clone(), self.seed),
                        &self.plan,
                        self.garden.modules.clone(),
                        &self.garden.follower,
                        self.topics.clone(),
                    );
                }
                self.status.leader_term = Some(t);
                self.lease_renewed = Some(Instant::now());
            }
            Ok(None) => {
                self.leader = None;
                self.status.leader_term = None;
                self.lease_renewed = None;
            }
            Err(e) => {
                eprintln!("leader lease check failed ({e}); not leading");
                self.leader = None;
                self.status.leader_term = None;
                self.lease_renewed = None;
            }
        }
    }

    /// What the heartbeat says of the garden: the live daemons, whether
    /// their plans agree, and which instances are quarantined anywhere.
    fn see_garden(&mut self, now: &[DaemonStatus]) {
        self.view = now.to_vec();
        let names: Vec<String> = now.iter().map(|d| d.name.clone()).collect();
        if names != self.live {
            eprintln!("live daemons: {}", names.join(", "));
        }
        self.live = names;
        match cluster::plan_warning(now) {
            Some(warning) if !self.warned_plans => {
                self.warned_plans = true;
                eprintln!("{warning}");
            }
            None => self.warned_plans = false,
            Some(_) => {}
        }
        self.quarantined = now
            .iter()
            .flat_map(|d| &d.instances)
            .filter_map(|i| {
                i.state
                    .strip_prefix("quarantined: ")
                    .map(|why| (i.id.clone(), why.to_string()))
            })
            .collect();
    }

    /// The leader's work: read the streams, decide, and follow what it
    /// decided at once.
    fn lead(&mut self) {
        self.watch_deploys();
        let Some(l) = self.leader.as_mut() else {
            return;
        };
        l.set_quarantined(self.quarantined.clone());
        l.set_modules(&self.garden.modules);
        l.take_deploys(self.garden.follower.deploys());
        match l.poll(&mut self.membership) {
            Ok(0) => {}
            Ok(n) => {
                eprintln!("{n} population decisions at bar {}", l.bars());
                self.garden.follow(&mut self.membership, &mut self.runtime);
                persist_lineage(&mut self.garden.follower, self.recorder.as_ref());
                self.garden.place(
                    &self.name,
                    &self.live,
                    &mut self.runtime,
                    &mut self.membership,
                );
            }
            Err(e) => eprintln!("leader could not read or decide ({e})"),
        }
        let unfit = self.leader.as_mut().map(Leader::take_unfit);
        if let (Some(unfit), Some(term)) = (unfit, self.status.leader_term)
            && !unfit.is_empty()
        {
            self.roll_back_unfit(term, unfit);
        }
        if self.leader.as_ref().is_some_and(|l| !l.leading()) {
            eprintln!("a newer leader exists; no longer leading");
            self.leader = None;
        }
    }

    /// Time plan to decision and decision to fill from what the daemon
    /// watches (with `--metrics`); the entries' ids are Redis's clock, so
    /// every daemon measures alike.
    fn time_the_path(&mut self) {
        let watched = self.runtime.take_watched();
        let Some((metrics, _)) = self.monitor.as_mut() else {
            return;
        };
        for m in &watched {
            if let Some((hop, took)) = self.latency.observe(m) {
                metrics.observe_latency(hop.name(), took.as_secs_f64());
            }
        }
    }

    /// Record what the host read, and acknowledge it once written.
    fn record(&mut self) {
        let seen = self.runtime.take_host_messages();
        if let Some(r) = self.recorder.as_mut()
            && !seen.is_empty()
        {
            r.record_by_seq(&seen);
            // A short wait: a slow or absent database must not stop the
            // heartbeat. What is not yet written stays unacknowledged and
            // is acknowledged with a later batch.
            if r.flush(RECORD_FLUSH_WAIT) {
                self.runtime.ack_host_messages();
            }
        }
    }

    /// Idle: block until an entry may be waiting, or the next beat, leader
    /// poll or restart is due; a busy daemon does not wait.
    fn wait(&mut self) {
        let mut due = self.next_beat;
        if self.status.leader_term.is_some() {
            due = due.min(self.next_leader_poll).min(self.next_request_poll);
        }
        if let Some(restart) = self.runtime.next_restart() {
            due = due.min(restart);
        }
        let idle_for = due.saturating_duration_since(Instant::now());
        self.runtime.bus_mut().wait(idle_for);
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
