//! Who wrote a message entry: every entry the bus writes carries, in field
//! `a`, the writer's daemon key id and one tag per daemon that may read it;
//! a reader uses an entry only if its own tag checks out.
//!
//! Invariants:
//! - the tag for reader R of an entry by writer W is HMAC-SHA256, cut to
//!   [`TAG_BYTES`], over the stream's name and the entry's message under
//!   K(W→R) = HMAC-SHA256(X25519(W, R), domain ‖ W's id ‖ R's id). Only W
//!   and R can compute K(W→R): a plain Redis client cannot make an entry any
//!   daemon accepts, and neither can a third daemon make one that R takes
//!   for W's;
//! - the stream is under the tag, so an entry copied onto another topic is
//!   refused;
//! - a reader accepts only writers its trust store lists as daemon keys now
//!   (itself included), and compares tags in constant time;
//! - a daemon rotating its key reads with both keys for a while (the one
//!   it moves to before it writes with it, the one it leaves while that is
//!   trusted), so no entry tagged for either is refused on the way;
//! - a MAC, not a signature: a tag costs two SHA-256 blocks plus the
//!   message (about half a microsecond), where an ed25519 signature and
//!   its check cost about 140, more than the bus spends on a whole message
//!   (`benches/README.md`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::keyring::Keyring;

use garden_trust::{KeyId, PublicKey, SigningKey};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The field holding the writer and the tags.
pub const AUTH_FIELD: &str = "a";
/// Bytes of a tag: 128 bits.
const TAG_BYTES: usize = 16;
/// Hex characters of a reader's key id written before its tag: enough to
/// find one's own tag among a garden's daemons (a shared prefix only means
/// trying both).
const READER_HEX: usize = 8;
/// Separates the uses of the agreed secret from any other.
const DOMAIN: &[u8] = b"garden-entry-mac-v1";

type HmacSha256 = Hmac<Sha256>;

/// Why an entry's writer could not be established.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    /// No field `a`: a plain Redis client wrote it.
    #[error(
        "not written by a garden host (no field `a`); a producer outside garden writes bars to the feed stream ({{prefix}}:feed)"
    )]
    Missing,
    /// The field `a` does not parse.
    #[error("field `a` (writer and tags) is malformed")]
    Malformed,
    /// The writer is not a daemon key this reader trusts.
    #[error(
        "written by key {0}, which is not a trusted daemon key here (`garden trust add --role daemon` trusts one)"
    )]
    Untrusted(String),
    /// The writer made no tag for this reader.
    #[error(
        "key {writer} wrote no tag for this daemon ({reader}): it did not trust this daemon's key when it wrote the entry"
    )]
    NotForReader {
        /// The writer's key id.
        writer: KeyId,
        /// This reader's key id.
        reader: KeyId,
    },
    /// A tag for this reader exists but does not match.
    #[error("the tag of key {0} does not match: the entry was forged, altered or moved")]
    BadTag(KeyId),
}

/// The keys one daemon tags and checks entries with.
#[derive(Clone)]
pub struct EntryAuth {
    me: KeyId,
    me_hex: String,
    /// K(me→R) for each reader R, with R's id prefix.
    to: Vec<(String, HmacSha256)>,
    /// The keys this daemon reads with, the writing one first.
    readers: Vec<Reader>,
    /// Body keys, where the garden encrypts message bodies: they travel
    /// with the tagging keys, so whatever checks an entry can open it.
    bodies: Option<Arc<Keyring>>,
}

/// One key a daemon reads with: K(W→it) for each trusted writer W.
#[derive(Clone)]
struct Reader {
    id: KeyId,
    prefix: String,
    from: HashMap<KeyId, HmacSha256>,
}

impl std::fmt::Debug for EntryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EntryAuth({}, {} peers, {} reading keys)",
            self.me,
            self.to.len(),
            self.readers.len()
        )
    }
}

impl EntryAuth {
    /// Tag for, and accept entries from, the daemon keys `trusted` and this
    /// key itself. A trusted key of small order (no secret can be agreed
    /// with it) is left out.
    pub fn new(key: &SigningKey, trusted: &[PublicKey]) -> EntryAuth {
        EntryAuth::rotating(key, &[], trusted)
    }

    /// Write with `key`, and read with it and with `also_reading` (a key
    /// being rotated to or from): entries tagged for any of them are
    /// accepted, from the daemon keys `trusted` and these keys themselves.
    pub fn rotating(
        key: &SigningKey,
        also_reading: &[&SigningKey],
        trusted: &[PublicKey],
    ) -> EntryAuth {
        let mut own: Vec<&SigningKey> = vec![key];
        own.extend(
            also_reading
                .iter()
                .filter(|k| k.public().id() != key.public().id()),
        );
        let mut peers: Vec<PublicKey> = own.iter().map(|k| k.public()).collect();
        for p in trusted {
            if !peers.iter().any(|q| q.id() == p.id()) {
                peers.push(p.clone());
            }
        }
        let my_id = key.public().id();
        let mut auth = EntryAuth {
            me: my_id,
            me_hex: my_id.to_string(),
            to: Vec::new(),
            readers: Vec::new(),
            bodies: None,
        };
        for reading in own {
            let reader_id = reading.public().id();
            let mut from = HashMap::new();
            for peer in &peers {
                let Some(shared) = reading.agree(peer) else {
                    tracing::warn!(key = %peer.id(), "a trusted daemon key of small order is ignored");
                    continue;
                };
                let peer_id = peer.id();
                from.insert(peer_id, derive(&shared, &peer_id, &reader_id));
                if reader_id == my_id {
                    auth.to
                        .push((prefix(&peer_id), derive(&shared, &my_id, &peer_id)));
                }
            }
            auth.readers.push(Reader {
                id: reader_id,
                prefix: prefix(&reader_id),
                from,
            });
        }
        auth
    }

    /// A key of its own, made now, that trusts no other: a single process
    /// (`garden run` over Redis) reads only what it wrote itself.
    pub fn ephemeral() -> EntryAuth {
        EntryAuth::new(&SigningKey::generate(), &[])
    }

    /// This writer's key id.
    pub fn id(&self) -> KeyId {
        self.me
    }

    /// Encrypt the bodies of the entries written, and open those read,
    /// with `keys` (none: bodies in the clear).
    pub fn with_body_keys(mut self, keys: Option<Arc<Keyring>>) -> EntryAuth {
        self.bodies = keys;
        self
    }

    /// The body keys, if bodies are encrypted.
    pub fn body_keys(&self) -> Option<&Keyring> {
        self.bodies.as_deref()
    }

    /// The value of field `a` for an entry with message `m` on `stream`.
    pub fn seal(&self, stream: &str, m: &str) -> String {
        let mut out = String::with_capacity(
            self.me_hex.len() + self.to.len() * (1 + READER_HEX + 2 * TAG_BYTES),
        );
        out.push_str(&self.me_hex);
        for (reader, key) in &self.to {
            out.push(' ');
            out.push_str(reader);
            out.push_str(&hex::encode(tag(key, stream, m)));
        }
        out
    }

    /// The writer of an entry with message `m` and field `a` on `stream`,
    /// if this reader can establish it.
    pub fn check(&self, stream: &str, m: &str, a: Option<&str>) -> Result<KeyId, Unauthenticated> {
        let a = a.ok_or(Unauthenticated::Missing)?;
        let mut parts = a.split(' ');
        let writer_text = parts.next().ok_or(Unauthenticated::Malformed)?;
        let writer: KeyId = writer_text
            .parse()
            .map_err(|_| Unauthenticated::Malformed)?;
        let find = |r: &Reader| {
            r.from
                .iter()
                .find(|(id, _)| id.matches(&writer))
                .map(|(_, k)| k.clone())
        };
        if !self.readers[0].from.keys().any(|id| id.matches(&writer)) {
            return Err(Unauthenticated::Untrusted(writer.to_string()));
        }
        let mut found = false;
        for part in parts {
            let (reader, tag_hex) = part
                .split_at_checked(READER_HEX)
                .ok_or(Unauthenticated::Malformed)?;
            for mine in self.readers.iter().filter(|r| r.prefix == reader) {
                let Some(mut mac) = find(mine) else {
                    continue;
                };
                found = true;
                let mut bytes = [0u8; TAG_BYTES];
                if hex::decode_to_slice(tag_hex, &mut bytes).is_err() {
                    return Err(Unauthenticated::Malformed);
                }
                feed(&mut mac, stream, m);
                if mac.verify_truncated_left(&bytes).is_ok() {
                    return Ok(writer);
                }
            }
        }
        Err(if found {
            Unauthenticated::BadTag(writer)
        } else {
            Unauthenticated::NotForReader {
                writer,
                reader: self.readers[0].id,
            }
        })
    }
}

/// K(W→R) from the secret W and R agreed.
fn derive(shared: &[u8; 32], writer: &KeyId, reader: &KeyId) -> HmacSha256 {
    let mut kdf = HmacSha256::new_from_slice(shared).expect("HMAC takes a key of any length");
    kdf.update(DOMAIN);
    kdf.update(writer.to_string().as_bytes());
    kdf.update(reader.to_string().as_bytes());
    let key = kdf.finalize().into_bytes();
    HmacSha256::new_from_slice(&key).expect("HMAC takes a key of any length")
}

fn feed(mac: &mut HmacSha256, stream: &str, m: &str) {
    // The stream's length first, so no (stream, message) pair reads as
    // another.
    mac.update(&(stream.len() as u64).to_be_bytes());
    mac.update(stream.as_bytes());
    mac.update(m.as_bytes());
}

fn tag(key: &HmacSha256, stream: &str, m: &str) -> [u8; TAG_BYTES] {
    let mut mac = key.clone();
    feed(&mut mac, stream, m);
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; TAG_BYTES];
    out.copy_from_slice(&full[..TAG_BYTES]);
    out
}

fn prefix(id: &KeyId) -> String {
    id.to_string()[..READER_HEX].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_trusted_writer_with_a_tag_for_this_reader_is_accepted() {
        let (a, b, c) = (
            SigningKey::generate(),
            SigningKey::generate(),
            SigningKey::generate(),
        );
        let (pa, pb, pc) = (a.public(), b.public(), c.public());
        let at_a = EntryAuth::new(&a, &[pb.clone(), pc.clone()]);
        let at_b = EntryAuth::new(&b, &[pa.clone(), pc.clone()]);
        let at_c = EntryAuth::new(&c, &[pa.clone(), pb.clone()]);
        let sealed = at_a.seal("g:t:plan", "{\"x\":1}");
        for reader in [&at_a, &at_b, &at_c] {
            assert_eq!(
                reader.check("g:t:plan", "{\"x\":1}", Some(&sealed)),
                Ok(pa.id())
            );
        }
        // Altered, moved, missing, unknown.
        assert_eq!(
            at_b.check("g:t:plan", "{\"x\":2}", Some(&sealed)),
            Err(Unauthenticated::BadTag(pa.id()))
        );
        assert_eq!(
            at_b.check("g:t:fill", "{\"x\":1}", Some(&sealed)),
            Err(Unauthenticated::BadTag(pa.id()))
        );
        assert_eq!(
            at_b.check("g:t:plan", "{}", None),
            Err(Unauthenticated::Missing)
        );
        assert_eq!(
            at_b.check("g:t:plan", "{}", Some("zz")),
            Err(Unauthenticated::Malformed)
        );
        // C knows K(C→B) but not K(A→B): it cannot pass as A to B, even
        // by putting its own tags under A's id.
        let by_c = at_c.seal("g:t:plan", "{\"x\":1}");
        let posing = format!("{}{}", pa.id(), &by_c[32..]);
        assert_eq!(
            at_b.check("g:t:plan", "{\"x\":1}", Some(&posing)),
            Err(Unauthenticated::BadTag(pa.id()))
        );
        // A reader A did not trust when it wrote finds no tag; a writer B
        // does not trust is refused.
        let d = SigningKey::generate();
        let at_d = EntryAuth::new(&d, std::slice::from_ref(&pa));
        assert!(matches!(
            at_d.check("g:t:plan", "{\"x\":1}", Some(&sealed)),
            Err(Unauthenticated::NotForReader { .. })
        ));
        let by_d = at_d.seal("g:t:plan", "{}");
        assert_eq!(
            at_b.check("g:t:plan", "{}", Some(&by_d)),
            Err(Unauthenticated::Untrusted(d.public().id().to_string()))
        );
        // A process on its own reads its own entries only.
        let alone = EntryAuth::ephemeral();
        let own = alone.seal("s", "m");
        assert_eq!(alone.check("s", "m", Some(&own)), Ok(alone.id()));
        assert!(at_a.check("s", "m", Some(&own)).is_err());
    }

    #[test]
    fn a_rotating_reader_accepts_entries_tagged_for_either_of_its_keys() {
        let (a, b_old, b_new) = (
            SigningKey::generate(),
            SigningKey::generate(),
            SigningKey::generate(),
        );
        // A trusts B's old key only (it has not re-read its trust store
        // yet); B reads with both while it rotates, and still writes with
        // the old one.
        let at_a = EntryAuth::new(&a, &[b_old.public()]);
        let at_b = EntryAuth::rotating(&b_old, &[&b_new], &[a.public()]);
        let by_a = at_a.seal("s", "m");
        assert_eq!(at_b.check("s", "m", Some(&by_a)), Ok(a.public().id()));
        assert_eq!(
            at_a.check("s", "m", Some(&at_b.seal("s", "m"))),
            Ok(b_old.public().id())
        );
        // Once A trusts both and B writes with the new key, both ways work,
        // and B's entries written with the old key are still read.
        let at_a = EntryAuth::new(&a, &[b_old.public(), b_new.public()]);
        let old_entry = at_b.seal("s", "m");
        let at_b = EntryAuth::rotating(&b_new, &[&b_old], &[a.public()]);
        assert_eq!(at_b.id(), b_new.public().id());
        assert_eq!(
            at_a.check("s", "m", Some(&at_b.seal("s", "m"))),
            Ok(b_new.public().id())
        );
        assert_eq!(
            at_a.check("s", "m", Some(&old_entry)),
            Ok(b_old.public().id())
        );
        assert_eq!(
            at_b.check("s", "m", Some(&at_a.seal("s", "m"))),
            Ok(a.public().id())
        );
        // When the old key expires, A drops it: what it wrote is refused.
        let at_a = EntryAuth::new(&a, &[b_new.public()]);
        assert_eq!(
            at_a.check("s", "m", Some(&old_entry)),
            Err(Unauthenticated::Untrusted(b_old.public().id().to_string()))
        );
    }
}
