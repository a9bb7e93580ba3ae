//! Reaching Redis: the options a bus is opened with, one way to connect
//! (client and first connection, with timeouts) and the errors that say
//! which part failed.
//!
//! **TLS.** `rediss://host:port` connects over TLS (rustls), checking the
//! server's certificate against the system's roots and the host name in
//! the URL. Three query parameters, read here and never passed on, point
//! at PEM files: `ca` (the roots to trust instead of the system's), and
//! `cert` with `key` (a client certificate, for a server that asks for
//! one), e.g. `rediss://127.0.0.1:6380/?ca=ca.pem&cert=daemon.pem&key=daemon.key`.
//!
//! Invariants: every connection has read and write timeouts, so a stalled
//! server cannot hang the host; a URL appears in errors and logs only
//! through [`redacted`], never with its password; TLS parameters on a
//! plain `redis://` URL are refused, never silently ignored.

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
    /// A TLS file named in the URL cannot be read.
    #[error("cannot read the TLS {what} file {path} named in the Redis URL: {source}")]
    TlsFile {
        /// `ca`, `cert` or `key`.
        what: &'static str,
        /// The path given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// TLS parameters were given in a way that cannot work.
    #[error("{0}")]
    TlsOptions(String),
    /// The TLS handshake or the certificate check failed.
    #[error(
        "cannot reach Redis over TLS at {url}: {source}; is its certificate signed by the CA given with ?ca= (or a system root), for the host name in the URL, and does the server want a client certificate (?cert= and ?key=)?"
    )]
    Tls {
        /// The URL, without its password.
        url: String,
        /// What failed.
        source: redis::RedisError,
    },
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
    let (client, tls) = client(url)?;
    let failed = |source| match tls {
        true => RedisBusError::Tls {
            url: redacted(url),
            source,
        },
        false => RedisBusError::Connect {
            url: redacted(url),
            source,
        },
    };
    let mut conn = open(&client).map_err(failed)?;
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

/// The TLS files a URL names, by their query parameter.
const TLS_PARAMS: [&str; 3] = ["ca", "cert", "key"];

/// A client for `url`, with the TLS files its query names; and whether it
/// speaks TLS.
fn client(url: &str) -> Result<(redis::Client, bool), RedisBusError> {
    let bad_url = |source| RedisBusError::Url {
        url: redacted(url),
        source,
    };
    let Ok(mut parsed) = url::Url::parse(url) else {
        return redis::Client::open(url)
            .map(|c| (c, false))
            .map_err(bad_url);
    };
    let tls = parsed.scheme() == "rediss";
    let mut files: Vec<(String, String)> = Vec::new();
    let mut rest: Vec<(String, String)> = Vec::new();
    for (k, v) in parsed.query_pairs() {
        if TLS_PARAMS.contains(&k.as_ref()) {
            files.push((k.into_owned(), v.into_owned()));
        } else {
            rest.push((k.into_owned(), v.into_owned()));
        }
    }
    if !tls {
        if let Some((k, _)) = files.first() {
            return Err(RedisBusError::TlsOptions(format!(
                "`?{k}=` is a TLS setting, but {} is not a TLS URL: write rediss://",
                redacted(url)
            )));
        }
        return redis::Client::open(url)
            .map(|c| (c, false))
            .map_err(bad_url);
    }
    // One process-wide provider (ring); set once, later calls are no-ops.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if files.is_empty() {
        return redis::Client::open(url).map(|c| (c, true)).map_err(bad_url);
    }
    let read = |what: &'static str| -> Result<Option<Vec<u8>>, RedisBusError> {
        let Some((_, path)) = files.iter().find(|(k, _)| k == what) else {
            return Ok(None);
        };
        std::fs::read(path)
            .map(Some)
            .map_err(|source| RedisBusError::TlsFile {
                what,
                path: path.clone(),
                source,
            })
    };
    let client_tls = match (read("cert")?, read("key")?) {
        (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig {
            client_cert,
            client_key,
        }),
        (None, None) => None,
        _ => {
            return Err(RedisBusError::TlsOptions(
                "a client certificate needs both ?cert= and ?key= in the Redis URL".into(),
            ));
        }
    };
    let certificates = redis::TlsCertificates {
        client_tls,
        root_cert: read("ca")?,
    };
    if rest.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(rest);
    }
    redis::Client::build_with_tls(parsed.as_str(), certificates)
        .map(|c| (c, true))
        .map_err(bad_url)
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
