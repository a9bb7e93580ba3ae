//! Reading Redis replies: XREADGROUP, XAUTOCLAIM and XPENDING answers as
//! entries of fields.
//!
//! The redis crate's typed stream replies (`StreamReadReply`) keep fields
//! in a map, losing their order, and refuse values that are not UTF-8;
//! garden needs both (an entry's fields in the order written, and binary
//! junk kept, as lossy text, so it reaches the dead-letter stream with a
//! reason). Hence this small reader of the generic reply.
//!
//! Invariant: a reply of an unexpected shape yields fewer entries, never a
//! panic; entries trimmed away (an id with no fields) are skipped.

use redis::Value;

use super::wire::Fields;

fn text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A value as text; binary junk as lossy text (moved, not copied, when it
/// is valid UTF-8, as it almost always is).
fn lossy(v: Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8(b)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        other => text(other).unwrap_or_default(),
    }
}

/// Entries of an XREADGROUP reply, per stream name.
pub(super) fn stream_entries_by_name(v: Value) -> Vec<(String, Vec<(String, Fields)>)> {
    let streams = match v {
        Value::Array(s) => s,
        Value::Map(m) => m
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for s in streams {
        if let Value::Array(pair) = s {
            let mut pair = pair.into_iter();
            if let (Some(name), Some(entries)) = (pair.next().and_then(text), pair.next()) {
                out.push((name, entry_list(entries)));
            }
        }
    }
    out
}

/// `[[id, [field, value, ...]], ...]`; entries deleted by trimming come
/// back with no fields and are skipped.
pub(super) fn entry_list(v: Value) -> Vec<(String, Fields)> {
    let Value::Array(entries) = v else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries {
        let Value::Array(parts) = e else { continue };
        let mut parts = parts.into_iter();
        let (Some(id), Some(Value::Array(flat))) = (parts.next().and_then(text), parts.next())
        else {
            continue;
        };
        let mut fields = Vec::with_capacity(flat.len() / 2);
        let mut flat = flat.into_iter();
        while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
            // Binary junk is kept as lossy text: it still reaches the dead
            // letter stream, with a reason.
            let (k, v) = (lossy(k), lossy(v));
            fields.push((k, v));
        }
        out.push((id, fields));
    }
    out
}

/// The delivery count from an `XPENDING key group id id 1` reply.
pub(super) fn pending_count(v: Value) -> Option<u64> {
    let Value::Array(rows) = v else { return None };
    let Value::Array(row) = rows.into_iter().next()? else {
        return None;
    };
    match row.into_iter().nth(3)? {
        Value::Int(n) => u64::try_from(n).ok(),
        other => text(other)?.parse().ok(),
    }
}
