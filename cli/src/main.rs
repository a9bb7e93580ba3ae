//! `garden`: the host daemon and command line.

mod ablate;
mod daemon;
mod deploy_cmd;
mod integrity_cmd;
mod monitor;
mod new_cmd;
mod registry_cmd;
mod report_cmd;
mod rotate;
mod run;
mod secrets;
mod status;
mod telemetry;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "garden",
    version,
    about = "A host for sandboxed WebAssembly modules that evolve"
)]
struct Cli {
    /// Export spans (load, instantiate; with GARDEN_OTLP_LOG=garden_host=debug
    /// also handle, publish, selection) to an OpenTelemetry collector over
    /// OTLP/HTTP, e.g. http://127.0.0.1:4318/v1/traces (or $GARDEN_OTLP).
    #[arg(long, global = true, value_name = "URL", env = "GARDEN_OTLP")]
    otlp: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay market data through the pipeline and report each variant.
    ///
    /// With no arguments: the bundled EUR/USD hourly bars through the
    /// embedded modules, with a population of alpha variants.
    Run(run::RunArgs),
    /// Run a share of the pipeline's instances on a shared Redis until
    /// killed; daemons under one prefix split the instances between them
    /// and take over a dead one's.
    Daemon(daemon::DaemonArgs),
    /// The live daemons under a Redis prefix: their instances, inbox
    /// depths, unacknowledged messages and last errors.
    Status(status::StatusArgs),
    /// Give a running garden of daemons new code for one of its modules:
    /// every daemon verifies it and switches at one point of the streams.
    Deploy(deploy_cmd::DeployArgs),
    /// Take a module of a running garden of daemons back to the code it
    /// ran before its latest deploy.
    Rollback(deploy_cmd::RollbackArgs),
    /// Take a deployed version (`NAME@VERSION`) out of a running garden of
    /// daemons: it drains, and its modules go back to their code before.
    Undeploy(deploy_cmd::UndeployArgs),
    /// Publisher and daemon keys: make one, print its id, rotate a daemon's.
    #[command(subcommand)]
    Key(integrity_cmd::KeyCommand),
    /// The host's trust store: keys it trusts and keys it revoked.
    #[command(subcommand)]
    Trust(integrity_cmd::TrustCommand),
    /// Sign a component with a manifest and a private key.
    Sign(integrity_cmd::SignArgs),
    /// Verify a signed component; exit code 0 only when it is valid, trusted
    /// and loadable by this host.
    Verify(integrity_cmd::VerifyArgs),
    /// Show a component's manifest, hash, signer, trust status and WIT
    /// imports and exports.
    Inspect(integrity_cmd::InspectArgs),
    /// Write the manifest a built component's describe() calls for (its
    /// name, role, topics and genes), or `--check` an existing one.
    Manifest(integrity_cmd::ManifestArgs),
    /// Start a module in Rust, Python or JavaScript: source, unit test,
    /// build script and README.
    New(new_cmd::NewArgs),
    /// Verify and compile a pipeline's modules into the cache, so that the
    /// first run starts at once.
    Precompile(run::PrecompileArgs),
    /// The component registry server.
    #[command(subcommand)]
    Registry(registry_cmd::RegistryCommand),
    /// Publish a signed component to a registry.
    Publish(registry_cmd::PublishArgs),
    /// Pull a component from a registry (verified again before it is written).
    Pull(registry_cmd::PullArgs),
    /// Yank a published version (signed by its publisher).
    Yank(registry_cmd::YankArgs),
    /// Let another key publish under a name you own (signed by you).
    Delegate(registry_cmd::DelegateArgs),
    /// List the audit log (filter by module, kind, time) or `verify` its chain.
    Audit(registry_cmd::AuditArgs),
    /// The family tree of a run's best variant; or its whole lineage as JSON or CSV.
    Lineage(registry_cmd::LineageArgs),
    /// A recorded run as one HTML page: equity, drawdown, trades, lineage,
    /// fitness per generation, calibration, experts and cost per module.
    Report(report_cmd::ReportArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let telemetry = match telemetry::Telemetry::init(cli.otlp.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Daemon(args) => daemon::daemon(args),
        Command::Status(args) => status::status(args),
        Command::Deploy(args) => deploy_cmd::deploy(args),
        Command::Rollback(args) => deploy_cmd::rollback(args),
        Command::Undeploy(args) => deploy_cmd::undeploy(args),
        Command::Key(cmd) => integrity_cmd::key(cmd),
        Command::Trust(cmd) => integrity_cmd::trust(cmd),
        Command::Sign(args) => integrity_cmd::sign(args),
        Command::Verify(args) => integrity_cmd::verify(args),
        Command::Inspect(args) => integrity_cmd::inspect(args),
        Command::Manifest(args) => integrity_cmd::manifest(args),
        Command::New(args) => new_cmd::new(args),
        Command::Precompile(args) => run::precompile(args),
        Command::Registry(cmd) => registry_cmd::registry(cmd),
        Command::Publish(args) => registry_cmd::publish(args),
        Command::Pull(args) => registry_cmd::pull(args),
        Command::Yank(args) => registry_cmd::yank(args),
        Command::Delegate(args) => registry_cmd::delegate(args),
        Command::Audit(args) => registry_cmd::audit(args),
        Command::Lineage(args) => registry_cmd::lineage(args),
        Command::Report(args) => report_cmd::report(args),
    };
    telemetry.shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, `: `-separated, each said once.
///
/// Some errors put their source's text into their own message as well as
/// returning it as `source()`; printing every link (anyhow's `{:#}`) then
/// repeats it. A cause whose text already ends the line so far is skipped,
/// so every command prints each reason once whatever its error types do.
fn chain(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
