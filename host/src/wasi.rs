//! The WASI a module is granted, and nothing more.
//!
//! Invariants:
//! * Only the interfaces in [`GRANTED`] (and the garden world's own) are
//!   linked; a component importing anything else is refused at load with
//!   the import's name ([`ungranted`]). Sockets, HTTP and the rest are not
//!   linked at all.
//! * No granted function can wait. A guest cannot be interrupted while it is
//!   inside a host call (neither fuel nor the epoch deadline fires there), so
//!   every way to sleep is replaced by a trap: the monotonic clock's
//!   `subscribe-duration` and `subscribe-instant`, and `wasi:io/poll`'s
//!   `poll` and `pollable.block`. What is left returns at once: there are no
//!   preopened directories or sockets, standard input is empty and standard
//!   output and error discard what is written, and the clocks are frozen
//!   (see [`crate::sandbox`]).

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::WasiCli;
use wasmtime_wasi::clocks::WasiClocks;
use wasmtime_wasi::filesystem::WasiFilesystem;
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random, sync};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::{WasiView, cli::WasiCliView, clocks::WasiClocksView};

/// The WASI version whose interfaces are linked; guests built against any
/// earlier 0.2.x link to it too.
const WASI_VERSION: &str = "0.2.12";

/// Interfaces a component may import, without their `@version`: the
/// garden world's and the part of WASI that Rust, Python and JavaScript
/// toolchains import even when the module uses none of it.
pub const GRANTED: &[&str] = &[
    "garden:pipeline/types",
    "garden:pipeline/host",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// Why a guest call was stopped inside a WASI function that would wait.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{function} would wait, and the host grants no waiting: a module is called once per message and must return; remove the sleep or poll"
)]
pub struct WaitRefused {
    /// The WASI function the guest called.
    pub function: &'static str,
}

/// The first import of `imports` (names as a component lists them) that the
/// host does not grant.
pub fn ungranted<'a>(imports: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    imports
        .into_iter()
        .find(|name| !GRANTED.contains(&crate::shape::unversioned(name)))
}

/// Gives the WASI functions the resource table they work on.
struct Table;

impl HasData for Table {
    type Data<'a> = &'a mut ResourceTable;
}

/// Link the granted WASI interfaces into `linker`, with every function that
/// could wait replaced by one that traps.
pub(crate) fn add_to_linker<T: WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let l = linker;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    filesystem::preopens::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    sync::filesystem::types::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    random::random::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    sync::io::error::add_to_linker::<T, Table>(l, |t| t.ctx().table)?;
    sync::io::poll::add_to_linker::<T, Table>(l, |t| t.ctx().table)?;
    sync::io::streams::add_to_linker::<T, Table>(l, |t| t.ctx().table)?;
    refuse_waiting(l)
}

/// Replace the functions that wait with ones that trap.
fn refuse_waiting<T: 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    fn refused(function: &'static str) -> wasmtime::Error {
        wasmtime::Error::new(WaitRefused { function })
    }
    linker.allow_shadowing(true);
    let mut clock = linker.instance(&format!("wasi:clocks/monotonic-clock@{WASI_VERSION}"))?;
    clock.func_wrap(
        "subscribe-duration",
        |_, (_,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
            Err(refused("wasi:clocks/monotonic-clock.subscribe-duration"))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |_, (_,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
            Err(refused("wasi:clocks/monotonic-clock.subscribe-instant"))
        },
    )?;
    let mut poll = linker.instance(&format!("wasi:io/poll@{WASI_VERSION}"))?;
    poll.func_wrap(
        "poll",
        |_, (_,): (Vec<Resource<DynPollable>>,)| -> wasmtime::Result<(Vec<u32>,)> {
            Err(refused("wasi:io/poll.poll"))
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |_, (_,): (Resource<DynPollable>,)| -> wasmtime::Result<()> {
            Err(refused("wasi:io/poll.pollable.block"))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_and_http_are_not_granted() {
        let imports = [
            "wasi:io/poll@0.2.0",
            "garden:pipeline/host@0.4.0",
            "wasi:sockets/tcp@0.2.0",
            "wasi:http/outgoing-handler@0.2.0",
        ];
        assert_eq!(ungranted(imports), Some("wasi:sockets/tcp@0.2.0"));
        assert_eq!(ungranted(["wasi:cli/stdout@0.2.3"]), None);
    }
}
