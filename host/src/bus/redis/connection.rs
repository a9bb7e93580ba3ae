//! Reaching Redis: the options a bus is opened with, one way to connect
//! (client and first connection, with timeouts) and the errors that say
//! which part failed.
//!
//! Invariants: every connection has read and write timeouts, so a stalled
//! server cannot hang the host; a URL appears in errors and logs only
//! through [`redacted`], never with its password.

use std::time::Duration;

/// A URL fit to print (the password hidden): one redaction for every
/// store, bus and command.
pub use garden_store::redacted;

/// First wait before reconnecting after a failed exchange; it doubles per
/// failure up to [`RECONNECT_MAX`].
pub const RECONNECT_FIRST: Duration = Duration::from_millis(50);
/// Longest wait between reconnection attempts.
pub const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// Longest wait for a connection to Redis to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for Redis to take a request or answer it; a blocking read
/// ([`super::RedisBus::wait`]) asks for less.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach Redis and how to use it.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Prefix of every key this bus uses.
    pub prefix: String,
    /// This daemon's consumer name (stable across restarts).
    pub consumer: String,
    /// Approximate most entries kept per stream (`MAXLEN ~`): must exceed
    /// the longest backlog a group may fall behind by.
    pub maxlen: usize,
    /// Most entries read per group and pump.
    pub batch: usize,
    /// Entries pending this long at another consumer are taken over.
    pub claim_idle: Duration,
    /// Deliveries after which an entry is dead-lettered instead.
    pub max_deliveries: u64,
    /// Largest entry accepted at publish, in bytes.
    pub max_entry_bytes: usize,
    /// The topic bars taken from the feed stream (`{prefix}:feed`, plain
    /// bar fields any producer may write) are published on; `None` (the
    /// default, and a replay's choice: its bars come from its data) does
    /// not read the feed.
    pub feed_topic: Option<String>,
}

impl RedisOptions {
    /// Defaults for `url`: prefix `garden`, consumer named after the host.
    pub fn new(url: &str) -> Self {
        RedisOptions {
            url: url.to_string(),
            prefix: "garden".into(),
            consumer: default_consumer(),
            maxlen: 100_000,
            batch: 512,
            claim_idle: Duration::from_secs(30),
            max_deliveries: 5,
            max_entry_bytes: 1 << 20,
            feed_topic: None,
        }
    }
}

/// `hostname-pid`: unique per process on one machine.
fn default_consumer() -> String {
    format!("{}-{}", hostname(), std::process::id())
}

/// This machine's name (`garden` if it has none).
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "garden".into())
}

/// Why the Redis bus could not start.
#[derive(Debug, thiserror::Error)]
pub enum RedisBusError {
    /// The URL does not parse.
    #[error("`{url}` is not a Redis URL ({source}); write redis://[user:password@]host:port")]
    Url {
        /// The URL given.
        url: String,
        /// The parser's complaint.
        source: redis::RedisError,
    },
    /// Redis did not answer, or refused the credentials.
    #[error(
        "cannot reach Redis at {url}: {source}; is redis-server running there, and are the user and password right?"
    )]
    Connect {
        /// The URL, without its password.
        url: String,
        /// What failed.
        source: redis::RedisError,
    },
}

/// A client for `url` and a first connection to it, or the error that
/// says which of the two failed.
pub fn connect(url: &str) -> Result<(redis::Client, redis::Connection), RedisBusError> {
    let client = redis::Client::open(url).map_err(|source| RedisBusError::Url {
        url: redacted(url),
        source,
    })?;
    let mut conn = open(&client).map_err(|source| RedisBusError::Connect {
        url: redacted(url),
        source,
    })?;
    // A server that wants a password (or another one) answers only now:
    // say so at once instead of retrying a connection that cannot work.
    redis::cmd("PING")
        .query::<String>(&mut conn)
        .map_err(|source| RedisBusError::Connect {
            url: redacted(url),
            source,
        })?;
    Ok((client, conn))
}

/// A connection with timeouts, so a stalled server cannot hang the host.
pub fn open(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let conn = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_repeated_in_messages() {
        assert_eq!(
            redacted("redis://user:secret@127.0.0.1:6379"),
            "redis://user:***@127.0.0.1:6379"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
