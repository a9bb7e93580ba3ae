//! The wire format of the Redis bus: stream names, the entry layout
//! (format 2: one field `m` holding the message as JSON; format 1 and
//! plain bar fields still read), and the decoding of an entry back into an
//! envelope, with a reason when it cannot be decoded. The layout is
//! documented in `docs/redis.md`.
//!
//! Invariants: a topic's stream is `{prefix}:t:{topic}`, a namespace no
//! control key shares; decoding never panics on what a stream holds and
//! says which field is wrong.

use crate::Envelope;
use crate::types::{Bar, Body};

/// The entry format this host writes: one field `m`, the whole message as
/// JSON.
pub const ENTRY_FORMAT: u32 = 2;
/// The earlier format, one field per header value, still read.
const ENTRY_FORMAT_1: &str = "1";

/// A message as written (format 2).
#[derive(serde::Serialize)]
pub(super) struct WireOut<'a> {
    pub(super) v: u32,
    pub(super) key: &'a str,
    pub(super) source: &'a str,
    pub(super) time: i64,
    pub(super) from: &'a str,
    pub(super) n: u64,
    pub(super) body: &'a Body,
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
    body: Body,
}

/// An entry's fields, in order.
pub type Fields = Vec<(String, String)>;

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
/// Decode an entry of `topic` into (envelope, publisher, counter), or say
/// what is wrong with it.
pub fn decode_entry(
    topic: &str,
    fields: &[(String, String)],
    plain_bars: bool,
) -> Result<(Envelope, String, u64), String> {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if let Some(m) = get("m") {
        return decode_message(topic, m);
    }
    if get("body").is_none() && plain_bars {
        return decode_bar(topic, &get);
    }
    match get("v") {
        Some(ENTRY_FORMAT_1) => {}
        Some(other) => {
            return Err(format!(
                "entry format `{other}` is not supported (this host reads formats 1 and {ENTRY_FORMAT})"
            ));
        }
        None => return Err("missing field `m` (the message) or `v` (entry format 1)".into()),
    }
    let need = |name: &str| get(name).ok_or_else(|| format!("missing field `{name}`"));
    let time = need("time")?
        .parse::<i64>()
        .map_err(|e| format!("field `time` is not an integer: {e}"))?;
    let n = need("n")?
        .parse::<u64>()
        .map_err(|e| format!("field `n` is not an unsigned integer: {e}"))?;
    let body: Body = serde_json::from_str(need("body")?)
        .map_err(|e| format!("field `body` does not decode: {e}"))?;
    Ok((
        Envelope {
            topic: topic.to_string(),
            key: need("key")?.to_string(),
            seq: 0,
            time,
            source: need("source")?.to_string(),
            body,
        },
        need("from")?.to_string(),
        n,
    ))
}

/// A format 2 entry: the field `m`.
fn decode_message(topic: &str, m: &str) -> Result<(Envelope, String, u64), String> {
    let w: WireIn = match serde_json::from_str(m) {
        Ok(w) => w,
        Err(e) => {
            // Say so if it is another format rather than a broken one.
            let v = serde_json::from_str::<serde_json::Value>(m)
                .ok()
                .and_then(|x| x.get("v")?.as_u64());
            return Err(match v {
                Some(v) if v != u64::from(ENTRY_FORMAT) => format!(
                    "entry format `{v}` is not supported (this host reads formats 1 and {ENTRY_FORMAT})"
                ),
                _ => format!("field `m` does not decode: {e}"),
            });
        }
    };
    if w.v != ENTRY_FORMAT {
        return Err(format!(
            "entry format `{}` is not supported (this host reads formats 1 and {ENTRY_FORMAT})",
            w.v
        ));
    }
    Ok((
        Envelope {
            topic: topic.to_string(),
            key: w.key,
            seq: 0,
            time: w.time,
            source: w.source,
            body: w.body,
        },
        w.from,
        w.n,
    ))
}

/// A bar written by any producer: `symbol time open high low close
/// [volume]` (time in milliseconds since the epoch).
fn decode_bar<'a>(
    topic: &str,
    get: &dyn Fn(&str) -> Option<&'a str>,
) -> Result<(Envelope, String, u64), String> {
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
    Ok((
        Envelope {
            topic: topic.to_string(),
            key: symbol.clone(),
            seq: 0,
            time,
            source: "$feed".into(),
            body: Body::Bar(Bar {
                symbol,
                time,
                open,
                high,
                low,
                close,
                volume,
            }),
        },
        // Plain entries have no publisher counter: never deduplicated.
        String::new(),
        0,
    ))
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
        let (e, _, _) = decode_entry("bar", &ok, true).unwrap();
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
            let err = decode_entry("bar", &fields(f), true).unwrap_err();
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
            body: &body,
        })
        .unwrap();
        let (e, from, n) = decode_entry("t", &fields(&[("m", &m)]), true).unwrap();
        assert_eq!(
            (e.topic.as_str(), e.key.as_str(), e.source.as_str(), e.time),
            ("t", "k", "s", 5)
        );
        assert_eq!((from.as_str(), n, e.body), ("d@1", 3, body));
        let later = m.replace("\"v\":2", "\"v\":3");
        assert!(
            decode_entry("t", &fields(&[("m", &later)]), false)
                .unwrap_err()
                .contains("format `3` is not supported")
        );
        let broken = m.replace("\"key\":\"k\",", "");
        assert!(
            decode_entry("t", &fields(&[("m", &broken)]), false)
                .unwrap_err()
                .contains("field `m` does not decode: missing field `key`")
        );
        assert!(
            decode_entry("t", &fields(&[("m", "\u{1}garbage")]), false)
                .unwrap_err()
                .starts_with("field `m` does not decode")
        );
        assert!(
            decode_entry("t", &fields(&[("other", "1")]), false)
                .unwrap_err()
                .contains("missing field `m`")
        );
    }

    #[test]
    fn envelopes_need_every_field_and_a_known_format() {
        let body = serde_json::to_string(&Body::Retired("x".into())).unwrap();
        let good = fields(&[
            ("v", "1"),
            ("key", "k"),
            ("source", "s"),
            ("time", "5"),
            ("from", "d@1"),
            ("n", "3"),
            ("body", &body),
        ]);
        let (e, from, n) = decode_entry("t", &good, false).unwrap();
        assert_eq!(
            (e.key.as_str(), e.time, from.as_str(), n),
            ("k", 5, "d@1", 3)
        );
        assert_eq!(e.body, Body::Retired("x".into()));
        let mut v9 = good.clone();
        v9[0].1 = "9".into();
        assert!(
            decode_entry("t", &v9, false)
                .unwrap_err()
                .contains("format `9`")
        );
        let no_key: Vec<_> = good.iter().filter(|(k, _)| k != "key").cloned().collect();
        assert!(
            decode_entry("t", &no_key, false)
                .unwrap_err()
                .contains("`key`")
        );
        let mut junk = good.clone();
        junk[6].1 = "{not json".into();
        assert!(
            decode_entry("t", &junk, false)
                .unwrap_err()
                .contains("`body` does not decode")
        );
        let mut time = good.clone();
        time[3].1 = "soon".into();
        assert!(
            decode_entry("t", &time, false)
                .unwrap_err()
                .contains("`time`")
        );
    }
}
