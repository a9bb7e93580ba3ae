//! The wire format of the Redis bus: stream names, the entry layout
//! (format 2: field `m` holding the message as JSON and field `a` naming
//! its writer, see `auth`), the plain bar fields of the feed stream, and
//! the decoding of an entry back into an envelope, with a reason when it
//! cannot be decoded. The layout is documented in `docs/redis.md`.
//!
//! Invariants: a topic's stream is `{prefix}:t:{topic}` and the feed is
//! `{prefix}:feed`, a namespace no control key shares; decoding never
//! panics on what a stream holds and says which field is wrong.

use crate::Envelope;
use crate::keyring::Keyring;
use crate::types::{Bar, Body};

/// The entry format this host writes: one field `m`, the whole message as
/// JSON.
pub const ENTRY_FORMAT: u32 = 2;
/// The `source` of a bar taken from the feed stream.
pub const FEED_SOURCE: &str = "$feed";

/// A message as written (format 2).
#[derive(serde::Serialize)]
pub(super) struct WireOut<'a> {
    pub(super) v: u32,
    pub(super) key: &'a str,
    pub(super) source: &'a str,
    pub(super) time: i64,
    pub(super) from: &'a str,
    pub(super) n: u64,
    /// The body in the clear, where the garden has no body keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) body: Option<&'a Body>,
    /// The body sealed with a body key (see `crate::keyring`), bound to
    /// the stream's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) enc: Option<&'a str>,
}

/// A message as read (format 2).
#[derive(serde::Deserialize)]
struct WireIn {
    v: u32,
    key: String,
    source: String,
    time: i64,
    from: String,
    n: u64,
    #[serde(default)]
    body: Option<Body>,
    #[serde(default)]
    enc: Option<String>,
}

/// An entry's fields, in order.
pub type Fields = Vec<(String, String)>;

/// The field that carries an entry's publish id until it is written (it
/// is not written: the id goes to the stream's window, [`once_key`]).
pub(super) const ONCE_FIELD: &str = "p";

/// Append entries to one stream, each unless its publish id is in the
/// stream's window of the ids written before; keep the window as long as
/// the stream (`MAXLEN`). One call per stream and exchange: a script call
/// costs more than the few commands inside it.
/// KEYS: stream, window. ARGV: maxlen, then per entry its publish id, its
/// number of fields and the fields (name, value, ...). Answers one reply
/// per entry: its id, or nil for a duplicate.
pub(super) const PUBLISH_ONCE: &str = r"
local maxlen = tonumber(ARGV[1])
local now = redis.call('TIME')
local score = tonumber(now[1]) * 1000000 + tonumber(now[2])
local out = {}
local i = 2
while i <= #ARGV do
  local pid, n = ARGV[i], tonumber(ARGV[i + 1])
  if redis.call('ZADD', KEYS[2], 'NX', score, pid) == 0 then
    out[#out + 1] = false
  else
    out[#out + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(ARGV, i + 2, i + 1 + 2 * n))
  end
  i = i + 2 + 2 * n
end
local over = redis.call('ZCARD', KEYS[2]) - maxlen
if over > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1) end
return out
";

/// The window of publish ids written to `stream`: `{stream}:once`, which
/// no topic stream can be (topics have no `:`).
pub(super) fn once_key(stream: &str) -> String {
    format!("{stream}:once")
}

/// A publish id: the same for an output wherever and however often its
/// input is handled, different for any other output. Hex of the first 16
/// bytes of SHA-256 over the publisher, the input's topic and sequence
/// number, and the output's index in the call.
pub(super) fn publish_id(source: &str, origin: &crate::message::Origin) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update([0]);
    h.update(origin.topic.as_bytes());
    h.update([0]);
    h.update(origin.seq.to_le_bytes());
    h.update(origin.index.to_le_bytes());
    hex::encode(&h.finalize()[..16])
}

/// The publish id among an entry's fields, if it has one.
pub(super) fn publish_id_of<K: AsRef<str>>(fields: &[(K, String)]) -> Option<&str> {
    fields
        .iter()
        .find(|(k, _)| k.as_ref() == ONCE_FIELD)
        .map(|(_, v)| v.as_str())
}

/// Entries with publish ids, gathered per stream in the order they come,
/// to be appended by one [`PUBLISH_ONCE`] call per stream.
#[derive(Default)]
pub(super) struct OnceBatch<'a> {
    streams: Vec<(&'a str, Vec<OnceEntry<'a>>)>,
}

/// An entry to append once: its publish id and its other fields.
type OnceEntry<'a> = (&'a str, Vec<(&'a str, &'a str)>);

impl<'a> OnceBatch<'a> {
    /// Take `fields` if they carry a publish id; false (and nothing taken)
    /// if not.
    pub(super) fn take<K: AsRef<str>>(
        &mut self,
        stream: &'a str,
        fields: &'a [(K, String)],
    ) -> bool {
        let Some(pid) = publish_id_of(fields) else {
            return false;
        };
        let rest = fields
            .iter()
            .filter(|(k, _)| k.as_ref() != ONCE_FIELD)
            .map(|(k, v)| (k.as_ref(), v.as_str()))
            .collect();
        match self.streams.iter_mut().find(|(s, _)| *s == stream) {
            Some((_, entries)) => entries.push((pid, rest)),
            None => self.streams.push((stream, vec![(pid, rest)])),
        }
        true
    }

    /// Queue the script calls (loading the script first); how many
    /// commands were queued.
    pub(super) fn queue(
        &self,
        pipe: &mut redis::Pipeline,
        once: &redis::Script,
        maxlen: &str,
    ) -> usize {
        if self.streams.is_empty() {
            return 0;
        }
        pipe.load_script(once);
        for (stream, entries) in &self.streams {
            let mut invocation = once.prepare_invoke();
            invocation.key(*stream).key(once_key(stream)).arg(maxlen);
            for (pid, fields) in entries {
                invocation.arg(*pid).arg(fields.len());
                for (k, v) in fields {
                    invocation.arg(*k).arg(*v);
                }
            }
            pipe.invoke_script(&invocation);
        }
        1 + self.streams.len()
    }
}

/// Queue `XADD stream MAXLEN ~ maxlen * field value ...` on `pipe`.
pub(super) fn xadd<'a, K: redis::ToRedisArgs + 'a>(
    pipe: &mut redis::Pipeline,
    stream: &str,
    maxlen: &str,
    fields: impl IntoIterator<Item = (K, &'a String)>,
) {
    let cmd = pipe
        .cmd("XADD")
        .arg(stream)
        .arg("MAXLEN")
        .arg("~")
        .arg(maxlen)
        .arg("*");
    for (k, v) in fields {
        cmd.arg(k).arg(v);
    }
}

/// The stream of `topic` under `prefix`: `{prefix}:t:{topic}`. Topics live
/// in a namespace of their own, so no topic (whatever its name) is a
/// control key such as `{prefix}:leader` or `{prefix}:decisions`.
pub fn topic_stream(prefix: &str, topic: &str) -> String {
    format!("{prefix}:t:{topic}")
}

/// The stream producers outside garden write bars to: `{prefix}:feed`.
/// A daemon reads it, checks each bar and publishes it on the bar topic
/// as its own, authenticated entry.
pub fn feed_stream(prefix: &str) -> String {
    format!("{prefix}:feed")
}

/// A stream entry id (`ms-seq`) as one number that grows with the id:
/// the milliseconds shifted past a 16-bit sequence.
pub fn entry_position(id: &str) -> u64 {
    let (ms, seq) = parse_id(id);
    (ms << 16) | seq.min(0xffff)
}

pub(super) fn parse_id(id: &str) -> (u64, u64) {
    let mut parts = id.splitn(2, '-');
    let ms = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let seq = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (ms, seq)
}
/// Decode a message entry of `topic` into (envelope, publisher, counter),
/// or say what is wrong with it. This reads what the entry claims: whether
/// a trusted daemon wrote it is [`super::EntryAuth::check`]'s to say. An
/// entry whose body is encrypted needs [`open_entry`].
pub fn decode_entry(
    topic: &str,
    fields: &[(String, String)],
) -> Result<(Envelope, String, u64), String> {
    open_entry(topic, "", fields, None)
}

/// [`decode_entry`] for an entry read from `stream`, opening its body with
/// `keys` where the garden encrypts bodies. With keys, a body in the clear
/// is refused: a writer without them would leak every body it wrote.
pub fn open_entry(
    topic: &str,
    stream: &str,
    fields: &[(String, String)],
    keys: Option<&Keyring>,
) -> Result<(Envelope, String, u64), String> {
    match field(fields, "m") {
        Some(m) => decode_message(topic, m, stream, keys),
        None if field(fields, "v") == Some("1") => Err(format!(
            "entry format 1 is no longer read (this host reads format {ENTRY_FORMAT}, written with field `a`)"
        )),
        None => Err("missing field `m` (the message)".into()),
    }
}

/// The value of the first field called `name`.
pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A format 2 entry: the field `m`.
fn decode_message(
    topic: &str,
    m: &str,
    stream: &str,
    keys: Option<&Keyring>,
) -> Result<(Envelope, String, u64), String> {
    let w: WireIn = match serde_json::from_str(m) {
        Ok(w) => w,
        Err(e) => {
            // Say so if it is another format rather than a broken one.
            let v = serde_json::from_str::<serde_json::Value>(m)
                .ok()
                .and_then(|x| x.get("v")?.as_u64());
            return Err(match v {
                Some(v) if v != u64::from(ENTRY_FORMAT) => format!(
                    "entry format `{v}` is not supported (this host reads format {ENTRY_FORMAT})"
                ),
                _ => format!("field `m` does not decode: {e}"),
            });
        }
    };
    if w.v != ENTRY_FORMAT {
        return Err(format!(
            "entry format `{}` is not supported (this host reads format {ENTRY_FORMAT})",
            w.v
        ));
    }
    let body = match (w.body, w.enc, keys) {
        (Some(body), None, None) => body,
        (None, Some(enc), Some(keys)) => {
            let plain = keys
                .open(stream.as_bytes(), &enc)
                .map_err(|e| format!("its body: {e}"))?;
            serde_json::from_slice(&plain)
                .map_err(|e| format!("its body opens but does not decode: {e}"))?
        }
        (None, Some(enc), None) => {
            let id = enc.split_once('.').map_or("?", |(id, _)| id);
            return Err(format!(
                "its body is encrypted with body key `{}`; give this host the garden's keyring (--body-keys)",
                id.chars().take(16).collect::<String>()
            ));
        }
        (Some(_), None, Some(_)) => {
            return Err(
                "its body is in the clear, but this garden encrypts bodies: its writer runs without the keyring (--body-keys)"
                    .into(),
            );
        }
        _ => return Err("a message holds exactly one of `body` and `enc`".into()),
    };
    Ok((
        Envelope {
            topic: topic.to_string(),
            key: w.key,
            seq: 0,
            time: w.time,
            source: w.source,
            body,
            trace: crate::message::Trace::default(),
        },
        w.from,
        w.n,
    ))
}

/// A bar a producer outside garden wrote to the feed stream: `symbol time
/// open high low close [volume]` (time in milliseconds since the epoch),
/// checked as a CSV row is, as an envelope of `topic` from `$feed`.
pub(super) fn decode_feed_bar(
    topic: &str,
    fields: &[(String, String)],
) -> Result<Envelope, String> {
    let get = |name: &str| field(fields, name);
    let num = |name: &str| -> Result<f64, String> {
        let raw = get(name).ok_or_else(|| format!("bar entry: missing field `{name}`"))?;
        let x: f64 = raw
            .parse()
            .map_err(|_| format!("bar entry: field `{name}` = `{raw}` is not a number"))?;
        if x.is_finite() {
            Ok(x)
        } else {
            Err(format!("bar entry: field `{name}` is not finite"))
        }
    };
    let symbol = get("symbol")
        .filter(|s| !s.is_empty())
        .ok_or("bar entry: missing field `symbol`")?
        .to_string();
    let raw_time = get("time").ok_or("bar entry: missing field `time`")?;
    let time: i64 = raw_time.parse().map_err(|_| {
        format!("bar entry: field `time` = `{raw_time}` is not an integer (ms since the epoch)")
    })?;
    let (open, high, low, close) = (num("open")?, num("high")?, num("low")?, num("close")?);
    let volume = match get("volume") {
        Some(_) => num("volume")?,
        None => 0.0,
    };
    crate::feed::check_bar(open, high, low, close, volume)
        .map_err(|problem| format!("bar entry: {problem}"))?;
    Ok(Envelope {
        topic: topic.to_string(),
        key: symbol.clone(),
        seq: 0,
        time,
        source: FEED_SOURCE.into(),
        body: Body::Bar(Bar {
            symbol,
            time,
            open,
            high,
            low,
            close,
            volume,
        }),
        trace: crate::message::Trace::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plain_bars_decode_and_bad_ones_say_why() {
        let ok = fields(&[
            ("symbol", "EURUSD"),
            ("time", "1700000000000"),
            ("open", "1.1"),
            ("high", "1.2"),
            ("low", "1.0"),
            ("close", "1.15"),
            ("volume", "10"),
        ]);
        let e = decode_feed_bar("bar", &ok).unwrap();
        assert!(matches!(e.body, Body::Bar(ref b) if b.close == 1.15 && b.symbol == "EURUSD"));
        assert_eq!(e.key, "EURUSD");
        let cases: [(&[(&str, &str)], &str); 6] = [
            (&[("symbol", "X"), ("time", "1")], "missing field `open`"),
            (
                &[
                    ("symbol", "X"),
                    ("time", "1"),
                    ("open", "a"),
                    ("high", "1"),
                    ("low", "1"),
                    ("close", "1"),
                ],
                "`open` = `a` is not a number",
            ),
            (
                &[
                    ("symbol", "X"),
                    ("time", "1"),
                    ("open", "1"),
                    ("high", "0.5"),
                    ("low", "1"),
                    ("close", "1"),
                ],
                "high 0.5 is below low 1",
            ),
            (&[("garbage", "\u{fffd}")], "missing field `symbol`"),
            (
                &[
                    ("symbol", "X"),
                    ("time", "1"),
                    ("open", "-1"),
                    ("high", "1"),
                    ("low", "-2"),
                    ("close", "1"),
                ],
                "open -1 is not positive",
            ),
            (
                &[
                    ("symbol", "X"),
                    ("time", "1"),
                    ("open", "1"),
                    ("high", "1.2"),
                    ("low", "0.9"),
                    ("close", "1.3"),
                ],
                "close 1.3 is outside the bar's range",
            ),
        ];
        for (f, want) in cases {
            let err = decode_feed_bar("bar", &fields(f)).unwrap_err();
            assert!(err.contains(want), "{err} should say {want}");
        }
    }

    #[test]
    fn format_2_entries_decode_and_broken_ones_say_why() {
        let body = Body::Retired("x".into());
        let m = serde_json::to_string(&WireOut {
            v: ENTRY_FORMAT,
            key: "k",
            source: "s",
            time: 5,
            from: "d@1",
            n: 3,
            body: Some(&body),
            enc: None,
        })
        .unwrap();
        let (e, from, n) = decode_entry("t", &fields(&[("m", &m)])).unwrap();
        assert_eq!(
            (e.topic.as_str(), e.key.as_str(), e.source.as_str(), e.time),
            ("t", "k", "s", 5)
        );
        assert_eq!((from.as_str(), n, e.body), ("d@1", 3, body));
        let later = m.replace("\"v\":2", "\"v\":3");
        assert!(
            decode_entry("t", &fields(&[("m", &later)]))
                .unwrap_err()
                .contains("format `3` is not supported")
        );
        let broken = m.replace("\"key\":\"k\",", "");
        assert!(
            decode_entry("t", &fields(&[("m", &broken)]))
                .unwrap_err()
                .contains("field `m` does not decode: missing field `key`")
        );
        assert!(
            decode_entry("t", &fields(&[("m", "\u{1}garbage")]))
                .unwrap_err()
                .starts_with("field `m` does not decode")
        );
        assert!(
            decode_entry("t", &fields(&[("other", "1")]))
                .unwrap_err()
                .contains("missing field `m`")
        );
    }

    #[test]
    fn curations_and_intel_cross_the_wire_unchanged() {
        use crate::types::{Curation, CuratorAction, Intel, Metric, NudgeTarget};
        let bodies = [
            Body::Curation(Curation {
                plan_id: "p".into(),
                curator: "curator-cost".into(),
                action: CuratorAction::Nudge,
                target: NudgeTarget::Size,
                amount: -0.05,
                reason: "thin edge".into(),
            }),
            Body::Intel(Intel {
                subject: "expert:x".into(),
                scope: "trend-calm".into(),
                values: vec![Metric {
                    name: "weight".into(),
                    value: 1.25,
                }],
                samples: 40,
            }),
        ];
        for body in bodies {
            let m = serde_json::to_string(&WireOut {
                v: ENTRY_FORMAT,
                key: "k",
                source: "s",
                time: 5,
                from: "d@1",
                n: 1,
                body: Some(&body),
                enc: None,
            })
            .unwrap();
            let (e, _, _) = decode_entry("curation", &fields(&[("m", &m)])).unwrap();
            assert_eq!(e.body, body);
        }
    }

    #[test]
    fn format_1_entries_are_refused_with_a_reason() {
        let old = fields(&[("v", "1"), ("key", "k"), ("source", "s")]);
        assert!(
            decode_entry("t", &old)
                .unwrap_err()
                .contains("format 1 is no longer read")
        );
    }
}
