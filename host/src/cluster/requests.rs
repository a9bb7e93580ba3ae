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

/// How new code takes over across daemons, as a request asks for it and
/// the leader's decision orders it. In the log it is one field:
/// `replace`, `canary SHARE% watch BARS` or `compete [VARIANTS]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum Rollout {
    /// Every instance of the old code goes on, under its id, on the new
    /// code, at the decided position.
    #[default]
    Replace,
    /// One instance of the new code takes `share` percent of the module's
    /// keys from the decided position; the leader promotes it once
    /// `watch_bars` bars have passed without a rollback.
    Canary {
        /// Percent of the keys, 1 to 99.
        share: u8,
        /// Bars past the switch before the leader promotes it.
        watch_bars: u32,
    },
    /// New variants of the new code join the population (how many: the
    /// module's instance count unless given).
    Compete {
        /// Variants born of the new code.
        variants: Option<u32>,
    },
}

impl std::fmt::Display for Rollout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rollout::Replace => write!(f, "replace"),
            Rollout::Canary { share, watch_bars } => {
                write!(f, "canary {share}% watch {watch_bars}")
            }
            Rollout::Compete { variants: None } => write!(f, "compete"),
            Rollout::Compete { variants: Some(n) } => write!(f, "compete {n}"),
        }
    }
}

impl std::str::FromStr for Rollout {
    type Err = String;

    fn from_str(s: &str) -> Result<Rollout, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let number = |w: &str, what: &str| {
            w.trim_end_matches('%')
                .parse::<u32>()
                .map_err(|e| format!("rollout `{s}`: {what} is not a number ({e})"))
        };
        match words.as_slice() {
            ["replace"] => Ok(Rollout::Replace),
            ["compete"] => Ok(Rollout::Compete { variants: None }),
            ["compete", n] => Ok(Rollout::Compete {
                variants: Some(number(n, "the variant count")?),
            }),
            ["canary", share, "watch", bars] => {
                let share = u8::try_from(number(share, "the share")?)
                    .ok()
                    .filter(|p| (1..=99).contains(p))
                    .ok_or_else(|| format!("rollout `{s}`: a canary's share is 1 to 99 percent"))?;
                Ok(Rollout::Canary {
                    share,
                    watch_bars: number(bars, "the watch")?,
                })
            }
            _ => Err(format!(
                "unknown rollout `{s}`: say `replace`, `canary SHARE% watch BARS` or `compete [VARIANTS]`"
            )),
        }
    }
}

/// When a `replace` of the population is taken back on fitness: once the
/// leader has acted on `watch_bars` bars past the switch, if the moved
/// variants' mean fitness over them fell below theirs over as many bars
/// before by more than `margin`. In the log: `watch BARS margin M`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct FitnessRule {
    /// Bars after the switch it is judged over (and as many before).
    pub watch_bars: u32,
    /// How far the mean fitness may fall (negative: how much it must rise).
    pub margin: f64,
}

impl std::fmt::Display for FitnessRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "watch {} margin {}", self.watch_bars, self.margin)
    }
}

impl std::str::FromStr for FitnessRule {
    type Err = String;

    fn from_str(s: &str) -> Result<FitnessRule, String> {
        match s.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["watch", bars, "margin", margin] => Ok(FitnessRule {
                watch_bars: bars
                    .parse()
                    .map_err(|e| format!("fitness rule `{s}`: the watch is not a number ({e})"))?,
                margin: margin
                    .parse::<f64>()
                    .ok()
                    .filter(|m| m.is_finite())
                    .ok_or_else(|| format!("fitness rule `{s}`: the margin is not a number"))?,
            }),
            _ => Err(format!(
                "unknown fitness rule `{s}`: say `watch BARS margin M`"
            )),
        }
    }
}

/// What a deploy request asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Asked<'a> {
    /// The pipeline module.
    pub module: &'a str,
    /// How the new code takes over.
    pub rollout: Rollout,
    /// When it is taken back on fitness, if it is.
    pub fitness: Option<FitnessRule>,
    /// An older version than the one running is meant.
    pub downgrade: bool,
}

/// Whether semver `new` is older than `old` (a version that does not
/// parse is not taken for older).
pub fn older(new: &str, old: &str) -> bool {
    match (semver::Version::parse(new), semver::Version::parse(old)) {
        (Ok(new), Ok(old)) => new < old,
        _ => false,
    }
}

/// A deploy request, signed by a trusted daemon key.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployRequest {
    /// Its entry id in `{prefix}:requests`.
    pub id: String,
    /// The pipeline module it is new code for.
    pub module: String,
    /// sha256 of the code, hex; `None` asks to take the module back to the
    /// code it ran before its latest deploy (`garden rollback`).
    pub digest: Option<String>,
    /// How the new code takes over (a rollback: `replace`).
    pub rollout: Rollout,
    /// When it is taken back on fitness, if it is.
    pub fitness: Option<FitnessRule>,
    /// An older version than the one running is meant.
    pub downgrade: bool,
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
/// garden under `prefix` at `url`, and ask for it to take over the module
/// as `asked` says, signed by `identity`. The request's entry id.
pub fn request_deploy(
    url: &str,
    prefix: &str,
    identity: &Identity,
    asked: Asked<'_>,
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
    let rollout = asked.rollout.to_string();
    let fitness = asked.fitness.map(|f| f.to_string());
    let mut fields = vec![
        ("kind", "deploy"),
        ("module", asked.module),
        ("digest", digest),
        ("rollout", rollout.as_str()),
    ];
    if let Some(f) = &fitness {
        fields.push(("fitness", f));
    }
    if asked.downgrade {
        fields.push(("downgrade", "yes"));
    }
    let fields = identity.sign(&request_purpose(prefix), &fields);
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
                // A request from before rollouts had a name replaces.
                let rollout = field("rollout")
                    .map_or(Ok(Rollout::Replace), |r| r.parse())
                    .map_err(EntryRefused::Malformed)?;
                let fitness = field("fitness")
                    .map(|f| f.parse::<FitnessRule>())
                    .transpose()
                    .map_err(EntryRefused::Malformed)?;
                match (field("kind").as_deref(), field("module"), field("digest")) {
                    (Some("deploy"), Some(module), Some(digest)) => Ok(DeployRequest {
                        id: id.clone(),
                        module,
                        digest: Some(digest),
                        rollout,
                        fitness,
                        downgrade: field("downgrade").as_deref() == Some("yes"),
                        by,
                    }),
                    (Some("rollback"), Some(module), None) => Ok(DeployRequest {
                        id: id.clone(),
                        module,
                        digest: None,
                        rollout: Rollout::Replace,
                        fitness: None,
                        downgrade: false,
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

    /// How many entries of `topic` are at or past bus position `at`,
    /// counting up to `limit` (what a canary's watch waits for).
    pub fn entries_since(
        &mut self,
        topic: &str,
        at: u64,
        limit: usize,
    ) -> redis::RedisResult<usize> {
        let stream = self.stream(topic);
        let start = format!("{}-{}", at >> 16, at & 0xffff);
        let conn = self.conn()?;
        let ids: Vec<(String, redis::Value)> = redis::cmd("XRANGE")
            .arg(&stream)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query(conn)?;
        Ok(ids.len())
    }

    /// Redis's clock now, as a bus position: entries written from then on
    /// are at or past it.
    pub fn clock_position(&mut self) -> redis::RedisResult<u64> {
        let conn = self.conn()?;
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query(conn)?;
        Ok((secs * 1000 + micros / 1000) << 16)
    }
}
