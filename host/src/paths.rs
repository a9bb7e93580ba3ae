//! Where garden keeps its files on this machine, after the XDG base
//! directories: the one place every command and library asks.
//!
//! * data (`$GARDEN_DATA`, else `$XDG_DATA_HOME/garden`, else
//!   `~/.local/share/garden`): the default store, the host's audit key and
//!   heads, the record of module versions;
//! * config (`$XDG_CONFIG_HOME/garden`, else `~/.config/garden`): the trust
//!   store (`$GARDEN_TRUST` overrides its path);
//! * cache (`$XDG_CACHE_HOME/garden`, else `~/.cache/garden`): compiled
//!   modules.
//!
//! Without `HOME` and the XDG variables, data and config fall back to the
//! working directory; the cache is then off.

use std::path::PathBuf;

/// `$var`, else `$HOME/home_relative`.
fn base(var: &str, home_relative: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(home_relative)))
}

/// The data directory.
pub fn data_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("GARDEN_DATA") {
        return PathBuf::from(p);
    }
    base("XDG_DATA_HOME", ".local/share")
        .unwrap_or_else(|| PathBuf::from("."))
        .join("garden")
}

/// The configuration directory.
pub fn config_dir() -> PathBuf {
    base("XDG_CONFIG_HOME", ".config")
        .unwrap_or_else(|| PathBuf::from("."))
        .join("garden")
}

/// The cache directory for compiled modules, if there is a home for it.
pub fn cache_dir() -> Option<PathBuf> {
    base("XDG_CACHE_HOME", ".cache").map(|b| b.join("garden"))
}

/// The default trust store: `$GARDEN_TRUST`, else `trust.toml` in the
/// configuration directory.
pub fn trust_file() -> PathBuf {
    std::env::var_os("GARDEN_TRUST").map_or_else(|| config_dir().join("trust.toml"), PathBuf::from)
}
