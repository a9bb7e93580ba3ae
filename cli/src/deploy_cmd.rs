//! `garden deploy` and `garden rollback`: ask a running garden of daemons
//! to take new code for one of its modules, or to go back to the code it
//! ran before. A deployed component is verified here first, kept in the
//! garden's Redis under its digest, and asked for in a request signed by a
//! daemon key the garden trusts; the leader answers with a deploy
//! decision, and every daemon verifies the code against its own trust
//! store and switches at the position the decision names.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use garden_host::cluster::{self, Decision, Follower, Identity, Membership, Peers, Rollout};
use garden_host::integrity;
use garden_registry::client::Reference;

/// How often `--wait` reads the decision log.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// Options of `garden deploy`.
#[derive(clap::Args)]
pub struct DeployArgs {
    /// The signed component: a file (`garden sign` wrote it), or
    /// `NAME@VERSION` to pull from the registry (a yanked version is
    /// refused).
    component: String,
    /// The registry `NAME@VERSION` is pulled from.
    #[arg(long, env = "GARDEN_REGISTRY", default_value = crate::registry_cmd::DEFAULT_REGISTRY)]
    registry: String,
    /// The pipeline module it is new code for (its name in the pipeline
    /// file).
    #[arg(long)]
    module: String,
    /// How the new code takes over: `replace` (every instance, at one
    /// point of the streams), `canary` (one instance takes --share percent
    /// of the keys, promoted after --watch bars unless it traps) or
    /// `compete` (--variants new variants join the population).
    #[arg(long, default_value = "replace", value_parser = ["replace", "canary", "compete"])]
    strategy: String,
    /// With `canary`: the percent of the module's keys it takes (1 to 99).
    #[arg(long, default_value_t = garden_host::config::DeployConfig::CANARY_SHARE)]
    share: u8,
    /// With `canary`: bars past the switch before the leader promotes it.
    /// With `--fitness-margin`: the bars it is judged over.
    #[arg(long, value_name = "BARS", default_value_t = garden_host::config::RollbackConfig::WATCH_BARS as u32)]
    watch: u32,
    /// With `replace` of the population: take it back once the leader has
    /// acted on --watch bars past the switch, if the variants' mean
    /// fitness over them fell below theirs over as many bars before by
    /// more than this.
    #[arg(long, value_name = "M", allow_negative_numbers = true)]
    fitness_margin: Option<f64>,
    /// Deploy it even when its version is older than the one running (the
    /// leader refuses a downgrade otherwise; `garden rollback` needs none).
    #[arg(long)]
    allow_downgrade: bool,
    /// With `compete`: how many variants of the new code join (default: as
    /// many as the module's instances).
    #[arg(long)]
    variants: Option<u32>,
    #[command(flatten)]
    garden: GardenArgs,
}

impl DeployArgs {
    /// The rollout the flags ask for.
    fn rollout(&self) -> Result<Rollout> {
        Ok(match self.strategy.as_str() {
            "canary" => {
                if !(1..=99).contains(&self.share) {
                    bail!("--share is 1 to 99 percent, not {}", self.share);
                }
                Rollout::Canary {
                    share: self.share,
                    watch_bars: self.watch,
                }
            }
            "compete" => Rollout::Compete {
                variants: self.variants,
            },
            _ => Rollout::Replace,
        })
    }
}

/// Options of `garden rollback`.
#[derive(clap::Args)]
pub struct RollbackArgs {
    /// The pipeline module to take back to the code it ran before its
    /// latest deploy.
    #[arg(long)]
    module: String,
    #[command(flatten)]
    garden: GardenArgs,
}

/// Options of `garden undeploy`.
#[derive(clap::Args)]
pub struct UndeployArgs {
    /// The version to take out: `NAME@VERSION`, as `garden status` shows
    /// the code instances run.
    reference: String,
    #[command(flatten)]
    garden: GardenArgs,
}

/// Which garden to ask, and as whom.
#[derive(clap::Args)]
struct GardenArgs {
    /// The garden's Redis: `redis://[user:password@]host:port` (or
    /// $GARDEN_BUS_URL).
    #[arg(
        long,
        value_name = "URL",
        env = "GARDEN_BUS_URL",
        hide_env_values = true
    )]
    bus: String,
    #[command(flatten)]
    passwords: crate::secrets::PasswordFiles,
    /// Prefix of the garden's Redis keys.
    #[arg(long, default_value = "garden")]
    prefix: String,
    /// Sign the request as daemon NAME (its key in
    /// $GARDEN_DATA/daemons/NAME.key.pem): the garden answers requests
    /// signed by its trusted daemon keys only.
    #[arg(long, conflicts_with = "key")]
    name: Option<String>,
    /// Sign the request with this daemon key file instead.
    #[arg(long, value_name = "FILE.key.pem")]
    key: Option<PathBuf>,
    /// Trust store to verify a component against first, and whose daemon
    /// keys to believe in the decision log (default: $GARDEN_TRUST or
    /// ~/.config/garden/trust.toml).
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
    /// Wait up to this many seconds for the leader's answer (0: do not).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    wait: u64,
}

impl GardenArgs {
    /// The daemon key to sign with.
    fn identity(&self) -> Result<Identity> {
        let key = match (&self.key, &self.name) {
            (Some(key), _) => key.clone(),
            (None, Some(name)) => crate::daemon::default_key_path(name),
            (None, None) => {
                bail!("sign the request with a daemon key: give --name NAME or --key FILE")
            }
        };
        if !key.exists() {
            bail!(
                "no daemon key at {}: give --name of a daemon of this garden (its key is made on its first start) or --key",
                key.display()
            );
        }
        Ok(Identity::load_or_create(&key)?.0)
    }

    /// Wait for the leader's answer to `request`, if asked to.
    fn await_answer(&self, url: &str, trust: &integrity::Trust, request: &str) -> Result<()> {
        if self.wait == 0 {
            return Ok(());
        }
        let peers = Peers::new(trust.operator().clone());
        let mut log = Membership::connect(url, &self.prefix, "$deploy", Duration::from_secs(1))?
            .trusting(peers);
        let mut follower = Follower::default();
        let deadline = Instant::now() + Duration::from_secs(self.wait);
        while Instant::now() < deadline {
            for d in follower.poll(&mut log)? {
                if let Decision::Deploy { term, order } = d
                    && order.request == request
                {
                    let what = match order.rollout {
                        Rollout::Replace => "every daemon switches",
                        Rollout::Canary { .. } => "a canary instance joins",
                        Rollout::Compete { .. } => "new variants compete in",
                    };
                    println!(
                        "the leader (term {term}) decided it ({}, {}): {what} {} to sha256:{} at bus position {}; `garden status` shows the code each instance runs",
                        order.reason, order.rollout, order.module, order.digest, order.at
                    );
                    return Ok(());
                }
            }
            std::thread::sleep(WAIT_POLL);
        }
        bail!(
            "no answer within {} s: is a daemon leading (`garden status`)? A refused request is in the audit log (`garden audit --kind deploy-refused`)",
            self.wait
        )
    }
}

/// Run `garden rollback`.
pub fn rollback(args: RollbackArgs) -> Result<()> {
    let g = &args.garden;
    let trust = crate::run::read_trust(g.trust.as_ref())?;
    let url = g.passwords.bus(g.bus.clone())?;
    ask_rollback(g, &url, &trust, &args.module)
}

fn ask_rollback(g: &GardenArgs, url: &str, trust: &integrity::Trust, module: &str) -> Result<()> {
    let identity = g.identity()?;
    let request = cluster::request_rollback(url, &g.prefix, &identity, module)?;
    println!(
        "asked the garden {} to take {module} back to the code it ran before: request {request}",
        g.prefix
    );
    g.await_answer(url, trust, &request)
}

/// Run `garden undeploy`: every module whose latest deploy brought code
/// `NAME@VERSION` (as the live daemons report it) goes back to the code
/// it ran before; the version drains (what came before the switch is
/// handled by it) and stops.
pub fn undeploy(args: UndeployArgs) -> Result<()> {
    let g = &args.garden;
    let trust = crate::run::read_trust(g.trust.as_ref())?;
    let url = g.passwords.bus(g.bus.clone())?;
    let peers = Peers::new(trust.operator().clone());
    let (daemons, _) = cluster::status(&url, &g.prefix, &peers)?;
    let population = cluster::population(&url, &g.prefix, peers)?;
    let label = format!("{} sha256:", args.reference);
    let prefixes: Vec<&str> = daemons
        .iter()
        .flat_map(|d| &d.instances)
        .filter_map(|i| i.code.strip_prefix(&label))
        .collect();
    // The modules whose latest deploy is that code.
    let mut latest: Vec<&cluster::DeployOrder> = Vec::new();
    for d in &population.deploys {
        latest.retain(|o| o.module != d.module);
        latest.push(d);
    }
    let modules: Vec<&str> = latest
        .iter()
        .filter(|o| !o.is_rollback() && prefixes.iter().any(|p| o.digest.starts_with(p)))
        .map(|o| o.module.as_str())
        .collect();
    if modules.is_empty() {
        bail!(
            "no module of the garden {} runs {} by a deploy (`garden status` shows what runs)",
            g.prefix,
            args.reference
        );
    }
    for module in modules {
        ask_rollback(g, &url, &trust, module)?;
    }
    Ok(())
}

/// Run `garden deploy`.
pub fn deploy(args: DeployArgs) -> Result<()> {
    let g = &args.garden;
    let trust = crate::run::read_trust(g.trust.as_ref())?;
    let file = PathBuf::from(&args.component);
    let bytes = match args.component.parse::<Reference>() {
        Ok(reference @ Reference::Version { .. }) if !file.exists() => {
            crate::registry_cmd::pull_verified(&args.registry, &reference, false, trust.operator())?
        }
        _ => std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?,
    };
    let verified = trust.store_for(&bytes).verify(&bytes).with_context(|| {
        format!(
            "{} does not verify against the trust store here, so no daemon trusting the same keys would run it",
            args.component
        )
    })?;
    let digest = verified.component.digest.to_hex();
    let reference = verified.manifest().reference();
    let identity = g.identity()?;
    let url = g.passwords.bus(g.bus.clone())?;
    let rollout = args.rollout()?;
    let fitness = args.fitness_margin.map(|margin| cluster::FitnessRule {
        watch_bars: args.watch,
        margin,
    });
    if fitness.is_some() && rollout != Rollout::Replace {
        bail!("--fitness-margin judges a `replace`: drop it, or deploy with --strategy replace");
    }
    let asked = cluster::Asked {
        module: &args.module,
        rollout,
        fitness,
        downgrade: args.allow_downgrade,
    };
    let request = cluster::request_deploy(&url, &g.prefix, &identity, asked, &digest, &bytes)?;
    println!(
        "asked the garden {} to deploy {reference} (sha256:{digest}, signed by {}) to {}, {rollout}: request {request}",
        g.prefix, verified.signer_name, args.module
    );
    g.await_answer(&url, &trust, &request)
}
