//! `garden status`: what the live daemons of a garden run, and its
//! population as the decision log tells it.

use std::path::PathBuf;

use anyhow::Result;
use garden_host::cluster::{self, Peers};

/// Options of `garden status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// The shared Redis: `redis://[user:password@]host:port` (or
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
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Trust store whose daemon keys to believe (default: $GARDEN_TRUST or
    /// ~/.config/garden/trust.toml): heartbeats and decisions no trusted
    /// daemon key signed are left out and counted.
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
}

/// The population section of `garden status`: living variants first.
fn print_population(p: &cluster::PopulationView) {
    if p.lineage.is_empty() {
        return;
    }
    let living: Vec<_> = p.lineage.iter().filter(|r| r.death_bar.is_none()).collect();
    println!(
        "population: {} living of {} in the decision log{}{}",
        living.len(),
        p.lineage.len(),
        p.term
            .map(|t| format!(", leader term {t}"))
            .unwrap_or_default(),
        p.stepped
            .map(|b| format!(", selection run up to bar {b}"))
            .unwrap_or_default()
    );
    println!(
        "  {:<18} {:>4} {:>8}  {:<11} parents",
        "variant", "gen", "born", "cause"
    );
    for r in living {
        println!(
            "  {:<18} {:>4} {:>8}  {:<11} {}{}",
            r.id,
            r.generation,
            r.birth_bar,
            r.birth_cause.as_str(),
            if r.parents.is_empty() {
                "-".to_string()
            } else {
                r.parents.join(", ")
            },
            if r.control { " (control)" } else { "" }
        );
    }
    println!();
}

/// Run `garden status`.
pub fn status(args: StatusArgs) -> Result<()> {
    let trust = crate::run::read_trust(args.trust.as_ref())?;
    let peers = Peers::new(trust.operator().clone());
    let bus = args.passwords.bus(args.bus.clone())?;
    let (daemons, refused) = cluster::status(&bus, &args.prefix, &peers)?;
    let population = cluster::population(&bus, &args.prefix, peers)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "daemons": daemons,
                "population": population,
                "refused_heartbeats": refused.iter().map(|r| format!("{}: {}", r.entry, r.reason)).collect::<Vec<_>>(),
            }))?
        );
        return Ok(());
    }
    for r in &refused {
        println!("ignored heartbeat {}: {}", r.entry, r.reason);
    }
    if population.refused > 0 {
        println!(
            "ignored {} entries of the decision log that no trusted daemon key signed for their term",
            population.refused
        );
    }
    if daemons.is_empty() {
        println!("no live daemons under prefix {}", args.prefix);
        return Ok(());
    }
    if let Some(warning) = cluster::plan_warning(&daemons) {
        println!("{warning}\n");
    }
    print_population(&population);
    for d in &daemons {
        println!(
            "{}{} (pid {} on {}, plan {}, up since {}, {} heartbeats{}){}",
            d.name,
            d.leader_term
                .map(|t| format!(" [leader, term {t}]"))
                .unwrap_or_default(),
            d.pid,
            d.host,
            d.plan,
            d.started,
            d.beats,
            if d.refused > 0 {
                format!(", {} entries refused", d.refused)
            } else {
                String::new()
            },
            // What its /readyz says: a live daemon's heartbeats go
            // through, so it is ready unless it cannot reach Redis.
            d.bus_error.as_deref().map_or_else(
                || ", ready".to_string(),
                |e| format!("; not ready: Redis unreachable: {e}")
            )
        );
        // The code its instances run, on one line: a rollout in progress
        // shows a module's two codes.
        let mut codes: Vec<(&str, usize)> = Vec::new();
        for i in &d.instances {
            match codes.iter_mut().find(|(c, _)| *c == i.code) {
                Some(c) => c.1 += 1,
                None => codes.push((&i.code, 1)),
            }
        }
        if !codes.is_empty() {
            let listed: Vec<String> = codes
                .iter()
                .map(|(code, n)| match n {
                    1 => code.to_string(),
                    n => format!("{code} x{n}"),
                })
                .collect();
            println!("  code: {}", listed.join(", "));
        }
        for deploy in &d.deploys {
            println!("  deploy: {deploy}");
        }
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
