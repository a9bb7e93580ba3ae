//! Many daemons, one Redis: who is alive, and which daemon runs which
//! instance.
//!
//! **Heartbeats.** Every daemon writes its status to `{prefix}:daemon:{name}`
//! with a time to live (`SET ... PX ttl`) every `ttl / 3`, and adds its name
//! to the set `{prefix}:daemons`. A daemon whose key has expired is dead: it
//! is removed from the set by whoever notices first.
//!
//! **Leadership.** One daemon at a time leads: it holds `{prefix}:leader`
//! (its name, with the same time to live as a heartbeat, renewed on each
//! beat). Taking the lease increments `{prefix}:leader:term`, the fencing
//! token. Every decision the leader makes is written through
//! [`Membership::decide`], which Redis applies only if the token is still the
//! current term, atomically (a Lua script): a leader that stalled past its
//! lease and wakes up cannot act, because a newer term exists.
//!
//! **Assignment.** Each instance runs on one live daemon, chosen by
//! rendezvous hashing: the daemon with the highest `fnv1a(daemon/instance)`.
//! Every daemon computes the same answer from the same live set, so no
//! coordinator is needed, and when a daemon dies only its instances move
//! (each to the survivor that ranks next for it). The moved instance's
//! unfinished messages are still pending in its consumer groups and are
//! taken over by the new owner once they have been idle `claim_idle`.
//!
//! **Who wrote it.** Heartbeats and decisions are signed by the writing
//! daemon's key (`identity`); a reader uses one only if a daemon key its
//! trust store lists signed it, and a decision only if the key that
//! announced its term did. What a plain Redis client writes there is
//! refused, counted and audited, never acted on.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bindings::types::Snapshot;
use crate::bus::fnv1a;
use crate::bus::redis::{EntryAuth, Fields, RedisBusError};
use crate::keyring::Keyring;

mod decisions;
mod identity;
mod leader;
mod leader_deploys;
mod requests;

pub use decisions::{Decision, DeployOrder, Follower, Refusal, variant_of};
pub use identity::{EntryRefused, Identity, IdentityError, Peers, key_name, public_key_path};
pub use leader::{Leader, LeaderTopics};
pub use leader_deploys::Unfit;
pub use requests::{
    Asked, DeployRequest, FitnessRule, MAX_CODE_BYTES, Rollout, older, request_deploy,
    request_purpose, request_rollback,
};

/// What a daemon says about itself in its heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// Its name (the consumer name on the bus).
    pub name: String,
    /// Host it runs on.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// When it started, RFC 3339.
    pub started: String,
    /// Heartbeats written so far.
    pub beats: u64,
    /// The instances it runs now.
    pub instances: Vec<InstanceStatus>,
    /// The bus's latest connection problem, if it has one now.
    pub bus_error: Option<String>,
    /// The leadership term it holds, if it leads.
    pub leader_term: Option<u64>,
    /// A fingerprint of the instance plan it runs (ids, code, genes): every
    /// daemon of a garden must show the same.
    #[serde(default)]
    pub plan: String,
    /// Entries it refused so far: decisions, heartbeats and messages no
    /// trusted daemon key signed or tagged (each is audited).
    #[serde(default)]
    pub refused: u64,
    /// The deploys it has been told of, each as it stands here (loading,
    /// switching, done, or refused and why).
    #[serde(default)]
    pub deploys: Vec<String>,
}

/// A fingerprint of an instance plan: `(id, code digest, params)` of every
/// instance, in order, hashed. Daemons started with different pipeline files
/// or seeds show different fingerprints.
pub fn plan_fingerprint<'a>(
    instances: impl IntoIterator<Item = (&'a str, &'a str, String)>,
) -> String {
    let mut text = String::new();
    for (id, digest, params) in instances {
        text.push_str(id);
        text.push('\0');
        text.push_str(digest);
        text.push('\0');
        text.push_str(&params);
        text.push('\n');
    }
    format!("{:016x}", fnv1a(text.as_bytes()))
}

/// A warning naming which daemons run which plan, if the live `daemons` do
/// not all run the same one.
pub fn plan_warning(daemons: &[DaemonStatus]) -> Option<String> {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for d in daemons {
        match groups.iter_mut().find(|(p, _)| *p == d.plan) {
            Some((_, names)) => names.push(&d.name),
            None => groups.push((&d.plan, vec![&d.name])),
        }
    }
    (groups.len() > 1).then(|| {
        let which: Vec<String> = groups
            .iter()
            .map(|(p, names)| format!("plan {p} on {}", names.join(", ")))
            .collect();
        format!(
            "warning: the daemons run different plans ({}); give every daemon the same --config and --seed",
            which.join("; ")
        )
    })
}

/// One instance in a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// Instance id.
    pub id: String,
    /// Module name.
    pub module: String,
    /// `ok`, `restarting`, `quarantined`, ...
    pub state: String,
    /// Messages handled (or failed) so far.
    pub received: u64,
    /// Messages waiting in its inbox on this daemon.
    pub depth: usize,
    /// Messages read from Redis for it but not yet acknowledged: in its
    /// inbox or being handled.
    pub lag: usize,
    /// Its latest error.
    pub last_error: Option<String>,
    /// The code it runs: `name@version sha256:PREFIX`.
    #[serde(default)]
    pub code: String,
    /// Its traps on that code so far (what a leader rolls a deploy back
    /// on).
    #[serde(default)]
    pub code_traps: u64,
}

/// The daemon `instance` belongs on, among `live` daemons.
pub fn owner<'a>(instance: &str, live: &'a [String]) -> Option<&'a str> {
    live.iter()
        .max_by_key(|d| mix(fnv1a(format!("{d}/{instance}").as_bytes())))
        .map(String::as_str)
}

/// The splitmix64 finaliser: FNV-1a alone leaves names that differ in one
/// byte with correlated hashes, which would hand one daemon everything.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A daemon's membership: its heartbeat, and the live set.
pub struct Membership {
    client: redis::Client,
    conn: Option<redis::Connection>,
    prefix: String,
    name: String,
    ttl: Duration,
    identity: Option<Arc<Identity>>,
    peers: Peers,
    /// Checks who wrote the message entries the leader reads.
    auth: Option<EntryAuth>,
    /// Body keys: seal snapshots, and open the bodies the leader reads.
    body_keys: Option<Arc<Keyring>>,
    refused: Vec<Refusal>,
}

impl Membership {
    /// Connect as daemon `name` under `prefix`, with heartbeats that live
    /// `ttl`.
    pub fn connect(
        url: &str,
        prefix: &str,
        name: &str,
        ttl: Duration,
    ) -> Result<Self, RedisBusError> {
        let (client, conn) = crate::bus::redis::connect(url)?;
        Ok(Membership {
            client,
            conn: Some(conn),
            prefix: prefix.to_string(),
            name: name.to_string(),
            ttl,
            identity: None,
            peers: Peers::default(),
            auth: None,
            body_keys: None,
            refused: Vec::new(),
        })
    }

    /// Sign what this daemon writes with `identity`; without one it can
    /// read but neither beat nor decide.
    pub fn signing(mut self, identity: Arc<Identity>) -> Self {
        self.identity = Some(identity);
        self.rekey();
        self
    }

    /// Sign with `identity` from now on (the daemon's key was rotated).
    pub fn set_identity(&mut self, identity: Arc<Identity>) {
        self.identity = Some(identity);
        self.rekey();
    }

    /// Use only what the daemon keys of `peers` signed (by default none).
    pub fn trusting(mut self, peers: Peers) -> Self {
        self.set_peers(peers);
        self
    }

    /// Accept the daemon keys of `peers` from now on (the trust store
    /// changed: a key was added or revoked).
    pub fn set_peers(&mut self, peers: Peers) {
        self.peers = peers;
        self.rekey();
    }

    /// The keys message entries are tagged and checked with: this daemon's
    /// own and its peers' (none without a daemon key). The bus of the same
    /// daemon takes a copy, so both accept the same writers.
    pub fn entry_auth(&self) -> Option<&EntryAuth> {
        self.auth.as_ref()
    }

    /// Seal message bodies and snapshots with `keys` from now on, and open
    /// them with it (none: in the clear).
    pub fn set_body_keys(&mut self, keys: Option<Arc<Keyring>>) {
        self.body_keys = keys;
        self.rekey();
    }

    fn rekey(&mut self) {
        self.auth = self.identity.as_ref().map(|i| {
            i.entry_auth(&self.peers)
                .with_body_keys(self.body_keys.clone())
        });
    }

    /// The keys this member accepts.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// The prefix of the garden's keys.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Heartbeats and snapshots refused since the last call (a heartbeat
    /// once per beat that saw it).
    pub fn take_refused(&mut self) -> Vec<Refusal> {
        std::mem::take(&mut self.refused)
    }

    fn identity(&self) -> redis::RedisResult<Arc<Identity>> {
        self.identity.clone().ok_or_else(|| {
            redis::RedisError::from(std::io::Error::other(
                "this connection has no daemon key, so it cannot write heartbeats or decisions",
            ))
        })
    }

    /// How often to beat: a third of the time to live.
    pub fn interval(&self) -> Duration {
        self.ttl / 3
    }

    /// How long a heartbeat lives: within it every live daemon beats, and
    /// so re-reads its trust store, at least twice.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn set_key(prefix: &str) -> String {
        format!("{prefix}:daemons")
    }

    fn daemon_key(prefix: &str, name: &str) -> String {
        format!("{prefix}:daemon:{name}")
    }

    fn conn(&mut self) -> redis::RedisResult<&mut redis::Connection> {
        let conn = match self.conn.take() {
            Some(c) => c,
            None => crate::bus::redis::open(&self.client)?,
        };
        Ok(self.conn.insert(conn))
    }

    /// Write the heartbeat and return the live daemons' statuses, sorted by
    /// name (this one included). On a Redis error the caller keeps its last
    /// view.
    pub fn beat(&mut self, status: &DaemonStatus) -> redis::RedisResult<Vec<DaemonStatus>> {
        let json = serde_json::to_string(status).map_err(|e| {
            redis::RedisError::from(std::io::Error::other(format!(
                "the heartbeat does not encode: {e}"
            )))
        })?;
        let signed = self.identity()?.sign(
            &heartbeat_purpose(&self.prefix, &self.name),
            &[("status", &json)],
        );
        let value = serde_json::to_string(&signed).map_err(|e| {
            redis::RedisError::from(std::io::Error::other(format!(
                "the heartbeat does not encode: {e}"
            )))
        })?;
        let ttl_ms = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let (prefix, name) = (self.prefix.clone(), self.name.clone());
        let peers = self.peers.clone();
        let mut refused = Vec::new();
        let result = (|| {
            let conn = self.conn()?;
            redis::pipe()
                .cmd("SET")
                .arg(Self::daemon_key(&prefix, &name))
                .arg(&value)
                .arg("PX")
                .arg(ttl_ms)
                .ignore()
                .cmd("SADD")
                .arg(Self::set_key(&prefix))
                .arg(&name)
                .ignore()
                .exec(conn)?;
            live(conn, &prefix, &peers, &mut refused)
        })();
        self.refused.extend(refused);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// Take or renew the leader lease: `Some(term)` while this daemon
    /// leads, `None` while another does.
    pub fn lead(&mut self) -> redis::RedisResult<Option<u64>> {
        let ttl_ms = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let (prefix, name) = (self.prefix.clone(), self.name.clone());
        let script = redis::Script::new(LEAD);
        let result = (|| {
            let conn = self.conn()?;
            let term: i64 = script
                .key(format!("{prefix}:leader"))
                .key(format!("{prefix}:leader:term"))
                .arg(&name)
                .arg(ttl_ms)
                .invoke(conn)?;
            Ok(u64::try_from(term).ok().filter(|t| *t > 0))
        })();
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// Append a decision to `{prefix}:decisions` if `term` is still the
    /// current leadership term; false (and nothing written) if a newer
    /// leader exists.
    pub fn decide(&mut self, term: u64, fields: &[(&str, &str)]) -> redis::RedisResult<bool> {
        let prefix = self.prefix.clone();
        let script = redis::Script::new(DECIDE);
        // The signature covers the term, which the script writes first.
        let term_text = term.to_string();
        let mut all = vec![("term", term_text.as_str())];
        all.extend_from_slice(fields);
        let signed = self.identity()?.sign(&decision_purpose(&prefix), &all);
        let conn = self.conn()?;
        let mut invocation = script.key(format!("{prefix}:leader:term"));
        invocation.key(format!("{prefix}:decisions")).arg(term);
        for (k, v) in &signed[1..] {
            invocation.arg(k).arg(v);
        }
        let written: i64 = invocation.invoke(conn)?;
        Ok(written == 1)
    }

    /// Log `decision` under `term` ([`Membership::decide`]): false if a
    /// newer leader exists.
    pub fn log(&mut self, term: u64, decision: &Decision) -> redis::RedisResult<bool> {
        let fields = decision.fields().map_err(|e| {
            redis::RedisError::from(std::io::Error::other(format!(
                "a decision's lineage record does not encode, so it is not logged: {e}"
            )))
        })?;
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.decide(term, &pairs)
    }

    /// Up to `max` decisions logged after entry id `after` (`0` for the
    /// first), oldest first, as (entry id, fields).
    pub fn decisions(
        &mut self,
        after: &str,
        max: usize,
    ) -> redis::RedisResult<Vec<(String, Fields)>> {
        let key = format!("{}:decisions", self.prefix);
        self.read(&key, after, max)
    }

    /// Up to `max` entries of `stream` after entry id `after`, oldest first.
    pub(crate) fn read(
        &mut self,
        stream: &str,
        after: &str,
        max: usize,
    ) -> redis::RedisResult<Vec<(String, Fields)>> {
        let result = (|| {
            let conn = self.conn()?;
            redis::cmd("XRANGE")
                .arg(stream)
                .arg(format!("({after}"))
                .arg("+")
                .arg("COUNT")
                .arg(max)
                .query::<Vec<(String, Fields)>>(conn)
        })();
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// How many entries were ever added to `stream`, and how many it holds
    /// now: the first entry held is number `added - held` (counting from 0),
    /// however the stream was trimmed. (0, 0) for a stream not yet made.
    pub(crate) fn stream_counts(&mut self, stream: &str) -> redis::RedisResult<(u64, u64)> {
        let conn = self.conn()?;
        let info: std::collections::HashMap<String, redis::Value> =
            match redis::cmd("XINFO").arg("STREAM").arg(stream).query(conn) {
                Ok(info) => info,
                // The connection failed: say so, rather than count from 0.
                Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                    self.conn = None;
                    return Err(e);
                }
                // Redis answered with an error: no such stream yet.
                Err(_) => return Ok((0, 0)),
            };
        let number = |k: &str| match info.get(k) {
            Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        };
        Ok((number("entries-added"), number("length")))
    }

    /// The stream of `topic` under this garden's prefix.
    pub(crate) fn stream(&self, topic: &str) -> String {
        crate::bus::redis::topic_stream(&self.prefix, topic)
    }

    fn snapshot_key(&self, id: &str) -> String {
        format!("{}:snapshot:{id}", self.prefix)
    }

    /// Keep the latest snapshots of instances (id, snapshot), so that an
    /// instance started elsewhere, or a child, starts from them.
    pub fn save_snapshots(&mut self, snapshots: &[(String, Snapshot)]) -> redis::RedisResult<()> {
        if snapshots.is_empty() {
            return Ok(());
        }
        let identity = self.identity()?;
        let mut pipe = redis::pipe();
        for (id, s) in snapshots {
            // Sealed first, then signed: a reader checks who wrote it
            // before it opens anything.
            let sealed = match &self.body_keys {
                Some(keys) => Some(
                    keys.seal(self.snapshot_key(id).as_bytes(), &s.data)
                        .map_err(|e| {
                            redis::RedisError::from(std::io::Error::other(e.to_string()))
                        })?,
                ),
                None => None,
            };
            let (magic, data) = match &sealed {
                Some(text) => (SEALED_SNAPSHOT_MAGIC, text.as_bytes()),
                None => (SNAPSHOT_MAGIC, s.data.as_slice()),
            };
            let digest = snapshot_digest(s.version, data);
            let (signer, signature) =
                identity.signature(&self.snapshot_purpose(id), &[("sha256", &digest)]);
            let mut bytes = Vec::with_capacity(SNAPSHOT_HEADER + 4 + data.len());
            bytes.extend_from_slice(magic);
            bytes.extend_from_slice(signer.as_bytes());
            bytes.extend_from_slice(signature.as_bytes());
            bytes.extend_from_slice(&s.version.to_le_bytes());
            bytes.extend_from_slice(data);
            pipe.cmd("SET")
                .arg(self.snapshot_key(id))
                .arg(bytes)
                .ignore();
        }
        let conn = self.conn()?;
        let result = pipe.exec(conn);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn snapshot_purpose(&self, id: &str) -> String {
        format!("snapshot {} {id}", self.prefix)
    }

    /// The latest snapshot kept for instance `id`, if a trusted daemon key
    /// signed it for this instance and it holds no more than `max_bytes` of
    /// data. Anyone who can write to Redis can put a value of any size
    /// there, so at most `max_bytes` (and the header) is ever read: a larger
    /// value is refused without being copied whole; an unsigned or forged
    /// one is refused and reported ([`Membership::take_refused`]).
    pub fn snapshot(&mut self, id: &str, max_bytes: usize) -> redis::RedisResult<Option<Snapshot>> {
        let key = self.snapshot_key(id);
        let conn = self.conn()?;
        // GETRANGE's end is inclusive: one byte past the limit tells an
        // oversized value from one exactly at it.
        let end = sealed_len(max_bytes).saturating_add(SNAPSHOT_HEADER + 4);
        let b: Vec<u8> = redis::cmd("GETRANGE")
            .arg(&key)
            .arg(0)
            .arg(end)
            .query(conn)?;
        if b.is_empty() {
            return Ok(None);
        }
        if b.len() > end {
            tracing::warn!(
                instance = id,
                cap = max_bytes,
                "the snapshot kept in Redis is larger than max_snapshot_bytes; starting without it"
            );
            return Ok(None);
        }
        match self.verified_snapshot(id, &b) {
            Ok(snapshot) => Ok(Some(snapshot)),
            Err(reason) => {
                tracing::warn!(instance = id, "ignoring a snapshot: {reason}");
                self.refused.push(Refusal {
                    entry: key,
                    kind: "snapshot",
                    reason,
                });
                Ok(None)
            }
        }
    }

    /// Split and check a kept snapshot: magic, signer, signature, version, data.
    fn verified_snapshot(&self, id: &str, b: &[u8]) -> Result<Snapshot, EntryRefused> {
        let text = |range: std::ops::Range<usize>| {
            b.get(range)
                .and_then(|part| std::str::from_utf8(part).ok())
                .map(str::to_string)
                .ok_or(EntryRefused::Unsigned)
        };
        let sealed = b.starts_with(SEALED_SNAPSHOT_MAGIC);
        if !sealed && !b.starts_with(SNAPSHOT_MAGIC) {
            return Err(EntryRefused::Unsigned);
        }
        let at = SNAPSHOT_MAGIC.len();
        let signer = text(at..at + KEY_ID_HEX)?;
        let signature = text(at + KEY_ID_HEX..SNAPSHOT_HEADER)?;
        let version = b
            .get(SNAPSHOT_HEADER..SNAPSHOT_HEADER + 4)
            .and_then(|v| v.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or(EntryRefused::Unsigned)?;
        let data = b.get(SNAPSHOT_HEADER + 4..).unwrap_or_default().to_vec();
        let fields = vec![
            ("sha256".to_string(), snapshot_digest(version, &data)),
            (identity::SIGNER_FIELD.to_string(), signer),
            (identity::SIGNATURE_FIELD.to_string(), signature),
        ];
        self.peers.verify(&self.snapshot_purpose(id), &fields)?;
        if !sealed {
            // Signed in the clear before the garden had body keys.
            return Ok(Snapshot { version, data });
        }
        let keys = self.body_keys.as_ref().ok_or_else(|| {
            EntryRefused::Sealed(
                "it is encrypted, and this daemon has no body keys (--body-keys)".into(),
            )
        })?;
        let text = std::str::from_utf8(&data)
            .map_err(|_| EntryRefused::Sealed("its sealed data is not text".into()))?;
        let data = keys
            .open(self.snapshot_key(id).as_bytes(), text)
            .map_err(|e| EntryRefused::Sealed(e.to_string()))?;
        Ok(Snapshot { version, data })
    }

    /// Forget instance `id`'s snapshot (it was retired).
    pub fn forget_snapshot(&mut self, id: &str) -> redis::RedisResult<()> {
        let key = self.snapshot_key(id);
        let conn = self.conn()?;
        redis::cmd("DEL").arg(key).query(conn)
    }

    /// Give up the leader's lease if this daemon holds it, so that the
    /// next term is taken anew (by whoever beats first, this daemon
    /// included). A daemon that rotated its key resigns: a term's decisions
    /// are believed only under the key that announced it.
    pub fn resign(&mut self) -> redis::RedisResult<()> {
        let (prefix, name) = (self.prefix.clone(), self.name.clone());
        let result = (|| {
            let conn = self.conn()?;
            redis::Script::new(RESIGN)
                .key(format!("{prefix}:leader"))
                .arg(&name)
                .invoke::<i64>(conn)
                .map(|_| ())
        })();
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// Leave: remove the heartbeat now instead of letting it expire.
    pub fn leave(&mut self) {
        let (prefix, name) = (self.prefix.clone(), self.name.clone());
        if let Ok(conn) = self.conn() {
            let _: redis::RedisResult<()> = redis::pipe()
                .cmd("DEL")
                .arg(Self::daemon_key(&prefix, &name))
                .ignore()
                .cmd("SREM")
                .arg(Self::set_key(&prefix))
                .arg(&name)
                .ignore()
                .exec(conn);
        }
    }
}

/// Drop the lease if `ARGV[1]` holds it.
const RESIGN: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Take the lease if free (a new term), renew it if ours; the term while
/// leading, 0 otherwise.
const LEAD: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return redis.call('INCR', KEYS[2])
elseif holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
return 0
"#;

/// Write a decision only under the current term (the fencing check).
const DECIDE: &str = r#"
local term = tonumber(redis.call('GET', KEYS[1]) or '0')
if term ~= tonumber(ARGV[1]) then
  return 0
end
local fields = {'term', ARGV[1]}
for i = 2, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('XADD', KEYS[2], '*', unpack(fields))
return 1
"#;

/// First bytes of a kept snapshot (signed format 1).
const SNAPSHOT_MAGIC: &[u8] = b"gsn1";
/// First bytes of a kept snapshot whose data is sealed with a body key.
const SEALED_SNAPSHOT_MAGIC: &[u8] = b"gsn2";

/// The most bytes `plain` bytes take once sealed: key id, base64 of nonce,
/// data and tag.
fn sealed_len(plain: usize) -> usize {
    plain.saturating_add(64).saturating_mul(4) / 3 + 32
}
/// Hex characters of a key id.
const KEY_ID_HEX: usize = 32;
/// Hex characters of an ed25519 signature.
const SIGNATURE_HEX: usize = 128;
/// Bytes before the version: magic, signer, signature.
const SNAPSHOT_HEADER: usize = 4 + KEY_ID_HEX + SIGNATURE_HEX;

/// What a snapshot's signature covers: sha256 of its version and data.
fn snapshot_digest(version: u32, data: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    h.update(version.to_le_bytes());
    h.update(data);
    hex::encode(h.finalize())
}

/// What a daemon's heartbeat is signed for.
fn heartbeat_purpose(prefix: &str, name: &str) -> String {
    format!("heartbeat {prefix} {name}")
}

/// What a decision is signed for.
pub(crate) fn decision_purpose(prefix: &str) -> String {
    format!("decision {prefix}")
}

/// A heartbeat's status, if a trusted daemon key signed it for this name.
fn verified_heartbeat(
    prefix: &str,
    name: &str,
    value: &str,
    peers: &Peers,
) -> Result<DaemonStatus, EntryRefused> {
    let fields: Fields = serde_json::from_str(value).map_err(|_| EntryRefused::Unsigned)?;
    peers.verify(&heartbeat_purpose(prefix, name), &fields)?;
    let status = fields
        .iter()
        .find(|(k, _)| k == "status")
        .and_then(|(_, v)| serde_json::from_str::<DaemonStatus>(v).ok())
        .filter(|s| s.name == name)
        .ok_or(EntryRefused::Unsigned)?;
    Ok(status)
}

/// The live daemons' statuses under `prefix`, sorted by name; daemons whose
/// heartbeat has expired are removed from the set. A heartbeat no trusted
/// daemon key signed is not alive: it goes to `refused`.
fn live(
    conn: &mut redis::Connection,
    prefix: &str,
    peers: &Peers,
    refused: &mut Vec<Refusal>,
) -> redis::RedisResult<Vec<DaemonStatus>> {
    let mut names: Vec<String> = redis::cmd("SMEMBERS")
        .arg(Membership::set_key(prefix))
        .query(conn)?;
    names.sort();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = names
        .iter()
        .map(|n| Membership::daemon_key(prefix, n))
        .collect();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(conn)?;
    let mut out = Vec::new();
    for (name, value) in names.into_iter().zip(values) {
        match value {
            Some(value) => match verified_heartbeat(prefix, &name, &value, peers) {
                Ok(status) => out.push(status),
                Err(reason) => {
                    tracing::warn!(daemon = %name, "ignoring a heartbeat: {reason}");
                    refused.push(Refusal {
                        entry: Membership::daemon_key(prefix, &name),
                        kind: "heartbeat",
                        reason,
                    });
                }
            },
            None => {
                tracing::warn!(daemon = %name, "heartbeat lapsed: the daemon is dead");
                let _: redis::RedisResult<()> = redis::cmd("SREM")
                    .arg(Membership::set_key(prefix))
                    .arg(&name)
                    .query(conn);
            }
        }
    }
    Ok(out)
}

/// The live daemons under `prefix` at `url` whose heartbeats a daemon key
/// of `peers` signed, for `garden status`, and the heartbeats refused.
pub fn status(
    url: &str,
    prefix: &str,
    peers: &Peers,
) -> Result<(Vec<DaemonStatus>, Vec<Refusal>), RedisBusError> {
    let (_, mut conn) = crate::bus::redis::connect(url)?;
    let mut refused = Vec::new();
    let live =
        live(&mut conn, prefix, peers, &mut refused).map_err(|source| RedisBusError::Connect {
            url: crate::bus::redis::redacted(url),
            source,
        })?;
    Ok((live, refused))
}

/// The population of a garden as its decision log tells it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PopulationView {
    /// The latest leadership term announced.
    pub term: Option<u64>,
    /// The last bar a leader has acted on.
    pub stepped: Option<usize>,
    /// Every variant a decision named, as last decided.
    pub lineage: Vec<crate::replication::LineageRecord>,
    /// Entries of the log refused (unsigned, untrusted, forged, or by a
    /// key that did not hold their term).
    pub refused: u64,
    /// Every deploy and rollback decided, in order.
    pub deploys: Vec<DeployOrder>,
}

/// Read the decision log of the garden under `prefix` at `url`, using only
/// decisions signed by the daemon keys of `peers`.
pub fn population(url: &str, prefix: &str, peers: Peers) -> Result<PopulationView, RedisBusError> {
    let mut m =
        Membership::connect(url, prefix, "$status", Duration::from_secs(1))?.trusting(peers);
    let mut f = Follower::default();
    f.poll(&mut m).map_err(|source| RedisBusError::Connect {
        url: crate::bus::redis::redacted(url),
        source,
    })?;
    Ok(PopulationView {
        term: f.term(),
        stepped: f.stepped(),
        lineage: f.lineage().to_vec(),
        refused: f.refused_total(),
        deploys: f.deploys().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_plans_are_named_in_a_warning() {
        let d = |name: &str, plan: &str| DaemonStatus {
            name: name.into(),
            plan: plan.into(),
            ..DaemonStatus::default()
        };
        assert_eq!(plan_warning(&[d("a", "p1"), d("b", "p1")]), None);
        let w = plan_warning(&[d("a", "p1"), d("b", "p2"), d("c", "p1")]).unwrap();
        assert!(w.contains("plan p1 on a, c; plan p2 on b"), "{w}");
        let fp = |params: &str| plan_fingerprint([("x.0", "abc", params.to_string())]);
        assert_eq!(fp("w=1"), fp("w=1"));
        assert_ne!(fp("w=1"), fp("w=2"));
    }

    #[test]
    fn rendezvous_moves_only_the_dead_daemons_instances() {
        let all: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let ids: Vec<String> = (0..300).map(|i| format!("alpha-ema.{i}")).collect();
        let before: Vec<&str> = ids.iter().filter_map(|i| owner(i, &all)).collect();
        for d in ["a", "b", "c"] {
            let n = before.iter().filter(|o| **o == d).count();
            assert!((60..=140).contains(&n), "{d} runs {n} of 300");
        }
        let survivors: Vec<String> = ["a", "c"].map(String::from).to_vec();
        for (id, was) in ids.iter().zip(&before) {
            let now = owner(id, &survivors).unwrap();
            if *was != "b" {
                assert_eq!(now, *was, "{id} stays where it was");
            }
        }
        assert_eq!(owner("x", &[]), None);
        // Small gardens split too (the daemons test relies on this one).
        let two: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let four: Vec<&str> = (0..4)
            .filter_map(|i| owner(&format!("expert-anomaly.{i}"), &two))
            .collect();
        assert!(four.contains(&"a") && four.contains(&"b"), "{four:?}");
    }
}
