//! Deploy requests: new code an operator asks a running garden to take.
//!
//! `garden deploy` keeps the signed component in Redis under
//! `{prefix}:code:{digest}` and appends a request to `{prefix}:requests`,
//! signed by a daemon key the garden trusts (`garden deploy --name`). The
//! leader answers each request at most once, with a deploy decision in the
//! fenced log (the log says which requests are answered, so a new leader
//! does not answer one again), and every daemon pulls the code by digest.
//!
//! Invariants: Redis is not trusted with the code or the requests. Whoever
//! reads code checks its sha256 against the digest it was told and its
//! signature against its own trust store, and reads no more than
//! [`MAX_CODE_BYTES`]; a request no trusted daemon key signed is refused
//! and reported, never answered.

use garden_trust::KeyId;

use super::identity::{EntryRefused, Identity};
use super::{Membership, Refusal};
use crate::bus::redis::RedisBusError;

/// Largest component kept for a deploy, in bytes: a value Redis holds
/// under a code key is refused above it before it is read.
pub const MAX_CODE_BYTES: usize = 64 << 20;

/// Requests read per call.
const REQUESTS_PER_READ: usize = 100;

/// What a deploy request is signed for.
pub fn request_purpose(prefix: &str) -> String {
    format!("deploy-request {prefix}")
}

fn code_key(prefix: &str, digest: &str) -> String {
    format!("{prefix}:code:{digest}")
}

fn requests_key(prefix: &str) -> String {
    format!("{prefix}:requests")
}

/// A deploy request, signed by a trusted daemon key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    /// Its entry id in `{prefix}:requests`.
    pub id: String,
    /// The pipeline module it is new code for.
    pub module: String,
    /// sha256 of the code, hex; `None` asks to take the module back to the
    /// code it ran before its latest deploy (`garden rollback`).
    pub digest: Option<String>,
    /// The key that signed it.
    pub by: KeyId,
}

/// Ask the garden under `prefix` at `url` to take `module` back to the
/// code it ran before its latest deploy, signed by `identity`. The
/// request's entry id.
pub fn request_rollback(
    url: &str,
    prefix: &str,
    identity: &Identity,
    module: &str,
) -> Result<String, RedisBusError> {
    let fields = identity.sign(
        &request_purpose(prefix),
        &[("kind", "rollback"), ("module", module)],
    );
    append_request(url, prefix, &fields)
}

fn append_request(
    url: &str,
    prefix: &str,
    fields: &[(String, String)],
) -> Result<String, RedisBusError> {
    let (_, mut conn) = crate::bus::redis::connect(url)?;
    let mut xadd = redis::cmd("XADD");
    xadd.arg(requests_key(prefix)).arg("*");
    for (k, v) in fields {
        xadd.arg(k).arg(v);
    }
    xadd.query::<String>(&mut conn)
        .map_err(|source| RedisBusError::Connect {
            url: crate::bus::redis::redacted(url),
            source,
        })
}

/// Keep `component` (signed bytes whose code has sha256 `digest`) in the
/// garden under `prefix` at `url`, and ask for it to replace `module`,
/// signed by `identity`. The request's entry id.
pub fn request_deploy(
    url: &str,
    prefix: &str,
    identity: &Identity,
    module: &str,
    digest: &str,
    component: &[u8],
) -> Result<String, RedisBusError> {
    let (_, mut conn) = crate::bus::redis::connect(url)?;
    let failed = |source| RedisBusError::Connect {
        url: crate::bus::redis::redacted(url),
        source,
    };
    // Code is named by its digest: written once, never replaced.
    redis::cmd("SET")
        .arg(code_key(prefix, digest))
        .arg(component)
        .arg("NX")
        .query::<redis::Value>(&mut conn)
        .map_err(failed)?;
    let fields = identity.sign(
        &request_purpose(prefix),
        &[("kind", "deploy"), ("module", module), ("digest", digest)],
    );
    append_request(url, prefix, &fields)
}

impl Membership {
    /// Deploy requests logged after entry `after` (`0` for all), those a
    /// trusted daemon key signed, and the others refused.
    pub fn deploy_requests(
        &mut self,
        after: &str,
    ) -> redis::RedisResult<(Vec<DeployRequest>, Vec<Refusal>)> {
        let key = requests_key(self.prefix());
        let entries = self.read(&key, after, REQUESTS_PER_READ)?;
        let purpose = request_purpose(self.prefix());
        let (mut good, mut refused) = (Vec::new(), Vec::new());
        for (id, fields) in entries {
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            let request = self.peers().verify(&purpose, &fields).and_then(|by| {
                match (field("kind").as_deref(), field("module"), field("digest")) {
                    (Some("deploy"), Some(module), Some(digest)) => Ok(DeployRequest {
                        id: id.clone(),
                        module,
                        digest: Some(digest),
                        by,
                    }),
                    (Some("rollback"), Some(module), None) => Ok(DeployRequest {
                        id: id.clone(),
                        module,
                        digest: None,
                        by,
                    }),
                    _ => Err(EntryRefused::Malformed(
                        "a request is a deploy (module, digest) or a rollback (module)".into(),
                    )),
                }
            });
            match request {
                Ok(r) => good.push(r),
                Err(reason) => refused.push(Refusal {
                    entry: id,
                    kind: "deploy-request",
                    reason,
                }),
            }
        }
        Ok((good, refused))
    }

    /// The component kept under `digest`, if there is one of at most
    /// [`MAX_CODE_BYTES`]; what it holds is still to be verified.
    pub fn code(&mut self, digest: &str) -> redis::RedisResult<Result<Vec<u8>, String>> {
        let key = code_key(self.prefix(), digest);
        let conn = self.conn()?;
        let size: usize = redis::cmd("STRLEN").arg(&key).query(conn)?;
        if size == 0 {
            return Ok(Err(format!(
                "no code under sha256:{digest} in Redis (was `garden deploy` run against this garden?)"
            )));
        }
        if size > MAX_CODE_BYTES {
            return Ok(Err(format!(
                "the code under sha256:{digest} is {size} bytes, over the {MAX_CODE_BYTES} byte limit"
            )));
        }
        let bytes: Vec<u8> = redis::cmd("GET").arg(&key).query(conn)?;
        Ok(Ok(bytes))
    }

    /// Redis's clock now, as a bus position: entries written from then on
    /// are at or past it.
    pub fn clock_position(&mut self) -> redis::RedisResult<u64> {
        let conn = self.conn()?;
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query(conn)?;
        Ok((secs * 1000 + micros / 1000) << 16)
    }
}
