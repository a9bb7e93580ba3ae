//! Passwords kept off the command line: `--bus-password-file` and
//! `--store-password-file` (mode 0600) put a password into the bus or
//! store URL, and `GARDEN_BUS_URL` / `GARDEN_STORE_URL` may hold the URLs,
//! so no secret shows in the process list or shell history.

use std::path::PathBuf;

use anyhow::Result;
use garden_host::secret::with_password_file;

/// Password files for the bus and the store.
#[derive(clap::Args, Default)]
pub struct PasswordFiles {
    /// File holding the bus (Redis) password (mode 0600); it goes into the
    /// bus URL, so it never appears in the process list.
    #[arg(long, value_name = "FILE")]
    bus_password_file: Option<PathBuf>,
    /// File holding the store (PostgreSQL) password (mode 0600).
    #[arg(long, value_name = "FILE")]
    store_password_file: Option<PathBuf>,
}

impl PasswordFiles {
    /// The bus URL with its password, if a file gives one.
    pub fn bus(&self, url: String) -> Result<String> {
        Ok(match &self.bus_password_file {
            Some(file) => with_password_file(&url, file)?,
            None => url,
        })
    }

    /// The store URL with its password, if a file gives one.
    pub fn store(&self, url: String) -> Result<String> {
        Ok(match &self.store_password_file {
            Some(file) => with_password_file(&url, file)?,
            None => url,
        })
    }
}
