//! Signatures embedded in components.
//!
//! `garden sign` appends one custom section named `garden-signature` at the
//! very end of the component. The **code** is everything before that section
//! (the component exactly as the compiler wrote it); its sha256 is the
//! component's identity. The section holds a small TOML document: format,
//! key id, signing time, the ed25519 signature in hex, and the manifest text.
//!
//! The signed message is the UTF-8 bytes of
//!
//! ```text
//! garden-signature-v1\n
//! sha256:<hex sha256 of the code>\n
//! signed-at:<RFC 3339 time>\n
//! <manifest text>
//! ```
//!
//! so anything that can parse the section layout, hash and check an ed25519
//! signature can verify it (`docs/signing.md` has a Python example).

use serde::{Deserialize, Serialize};

use crate::{Digest, KeyId, Manifest, ManifestError, SigningKey};

/// The custom section's name.
pub const SECTION: &str = "garden-signature";
/// The format tag, first line of the signed message.
pub const FORMAT: &str = "garden-signature-v1";

/// Why a component's signature could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// Not WebAssembly.
    #[error("not a WebAssembly binary (it does not start with \\0asm)")]
    NotWasm,
    /// A core module, not a component.
    #[error("this is a core WebAssembly module, not a component; build for wasm32-wasip2")]
    CoreModule,
    /// The section structure is broken (e.g. the file was cut short).
    #[error("malformed WebAssembly: {0} (is the file truncated?)")]
    Malformed(String),
    /// No signature.
    #[error(
        "the component is unsigned (no `garden-signature` section); sign it with `garden sign`"
    )]
    Unsigned,
    /// A signature section that is not the last section, or two of them.
    #[error(
        "the `garden-signature` section must be the component's last section, and only one; re-sign the original component"
    )]
    Misplaced,
    /// The section's contents cannot be read.
    #[error("the signature section is unreadable: {0}")]
    BadSection(String),
    /// The embedded manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// The contents of the signature section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    format: String,
    key_id: KeyId,
    signed_at: String,
    signature: String,
    manifest: String,
}

/// A component split into its code and its signature.
#[derive(Debug, Clone)]
pub struct SignedComponent<'a> {
    /// The code: the component without the signature section.
    pub code: &'a [u8],
    /// sha256 of the code.
    pub digest: Digest,
    /// The manifest as signed.
    pub manifest: Manifest,
    /// The manifest text exactly as signed.
    pub manifest_text: String,
    /// Who signed.
    pub key_id: KeyId,
    /// When, RFC 3339.
    pub signed_at: String,
    /// The 64-byte signature.
    pub signature: Vec<u8>,
}

impl SignedComponent<'_> {
    /// The exact bytes the signature covers.
    pub fn message(&self) -> Vec<u8> {
        message(&self.digest, &self.signed_at, &self.manifest_text)
    }
}

fn message(digest: &Digest, signed_at: &str, manifest_text: &str) -> Vec<u8> {
    format!(
        "{FORMAT}\nsha256:{}\nsigned-at:{signed_at}\n{manifest_text}",
        digest.to_hex()
    )
    .into_bytes()
}

/// Read an unsigned LEB128 u32 at `*pos`.
fn leb_u32(bytes: &[u8], pos: &mut usize) -> Result<u32, SignatureError> {
    let mut result: u64 = 0;
    for shift in (0..35).step_by(7) {
        let b = *bytes
            .get(*pos)
            .ok_or_else(|| SignatureError::Malformed("section size runs past the end".into()))?;
        *pos += 1;
        result |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return u32::try_from(result)
                .map_err(|_| SignatureError::Malformed("section size too large".into()));
        }
    }
    Err(SignatureError::Malformed(
        "section size is not valid LEB128".into(),
    ))
}

fn write_leb_u32(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A top-level section: (offset where it starts, id, payload range).
type SectionSpan = (usize, u8, std::ops::Range<usize>);

/// Walk the top-level sections of a component.
fn sections(bytes: &[u8]) -> Result<Vec<SectionSpan>, SignatureError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(SignatureError::NotWasm);
    }
    match bytes[4..8] {
        [1, 0, 0, 0] => return Err(SignatureError::CoreModule),
        [_, _, 1, 0] => {}
        _ => return Err(SignatureError::Malformed("unknown binary version".into())),
    }
    let mut out = Vec::new();
    let mut pos = 8;
    while pos < bytes.len() {
        let start = pos;
        let id = bytes[pos];
        pos += 1;
        let size = leb_u32(bytes, &mut pos)? as usize;
        let end = pos
            .checked_add(size)
            .filter(|e| *e <= bytes.len())
            .ok_or_else(|| {
                SignatureError::Malformed(format!(
                    "section at byte {start} runs past the end of the file"
                ))
            })?;
        out.push((start, id, pos..end));
        pos = end;
    }
    Ok(out)
}

/// The name and data of a custom section payload.
fn custom(payload: &[u8]) -> Option<(&str, &[u8])> {
    let mut pos = 0;
    let len = leb_u32(payload, &mut pos).ok()? as usize;
    let name = payload.get(pos..pos.checked_add(len)?)?;
    Some((std::str::from_utf8(name).ok()?, &payload[pos + len..]))
}

/// Split a signed component. Checks structure only; trust is
/// [`crate::TrustStore::verify`]'s job.
pub fn parse(bytes: &[u8]) -> Result<SignedComponent<'_>, SignatureError> {
    let all = sections(bytes)?;
    let signature_sections: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, (_, id, range))| {
            *id == 0 && custom(&bytes[range.clone()]).is_some_and(|(n, _)| n == SECTION)
        })
        .map(|(i, _)| i)
        .collect();
    let Some(&index) = signature_sections.last() else {
        return Err(SignatureError::Unsigned);
    };
    if signature_sections.len() > 1 || index != all.len() - 1 {
        return Err(SignatureError::Misplaced);
    }
    let (start, _, range) = all[index].clone();
    let (_, data) = custom(&bytes[range]).ok_or(SignatureError::Unsigned)?;
    let text =
        std::str::from_utf8(data).map_err(|_| SignatureError::BadSection("not UTF-8".into()))?;
    let section: Section =
        toml::from_str(text).map_err(|e| SignatureError::BadSection(e.to_string()))?;
    if section.format != FORMAT {
        return Err(SignatureError::BadSection(format!(
            "format `{}` is not `{FORMAT}`; this host is too old or the file is not a garden signature",
            section.format
        )));
    }
    let signature = hex::decode(&section.signature)
        .ok()
        .filter(|s| s.len() == 64)
        .ok_or_else(|| SignatureError::BadSection("the signature is not 64 bytes of hex".into()))?;
    check_time(&section.signed_at)?;
    // The same signature in another encoding (a wider LEB128 size, keys in
    // another order, a comment) would give a second file, and a second
    // sha256, for one signed component: refuse all but the one encoding.
    if encode(&section)? != bytes[start..] {
        return Err(SignatureError::BadSection(
            "the signature section is not in its canonical encoding (it was re-encoded after signing); use the file `garden sign` wrote".into(),
        ));
    }
    let manifest = Manifest::parse(&section.manifest, "embedded in the component")?;
    let code = &bytes[..start];
    Ok(SignedComponent {
        code,
        digest: Digest::of(code),
        manifest,
        manifest_text: section.manifest,
        key_id: section.key_id,
        signed_at: section.signed_at,
        signature,
    })
}

/// Sign `code` (an unsigned component) with `manifest` by `key` at
/// `signed_at` (RFC 3339): fills in the manifest's `component` and
/// `publisher` and returns the signed component.
pub fn sign(
    code: &[u8],
    manifest: &Manifest,
    key: &SigningKey,
    signed_at: &str,
) -> Result<Vec<u8>, SignatureError> {
    // Refuse to sign something that is not a component, or is signed already.
    let all = sections(code)?;
    if all
        .iter()
        .any(|(_, id, r)| *id == 0 && custom(&code[r.clone()]).is_some_and(|(n, _)| n == SECTION))
    {
        return Err(SignatureError::Misplaced);
    }
    // A manifest built in code has not been through `Manifest::parse`:
    // check it the same way, so nothing unloadable is ever signed.
    manifest.check("the manifest to sign")?;
    let digest = Digest::of(code);
    let mut manifest = manifest.clone();
    manifest.component = Some(digest.to_hex());
    manifest.publisher = Some(key.public().id());
    let manifest_text = manifest.to_canonical();
    check_time(signed_at)?;
    let signature = key.sign(&message(&digest, signed_at, &manifest_text));
    let section = Section {
        format: FORMAT.into(),
        key_id: key.public().id(),
        signed_at: signed_at.into(),
        signature: hex::encode(signature),
        manifest: manifest_text,
    };
    let mut out = code.to_vec();
    out.extend_from_slice(&encode(&section)?);
    Ok(out)
}

/// The one encoding of a signature section: id 0, the shortest LEB128
/// sizes, the name, and the TOML `toml::to_string` writes. [`parse`]
/// accepts no other, so a signature has exactly one file around it.
fn encode(section: &Section) -> Result<Vec<u8>, SignatureError> {
    let text = toml::to_string(section).map_err(|e| SignatureError::BadSection(e.to_string()))?;
    let mut payload = Vec::new();
    write_leb_u32(&mut payload, SECTION.len() as u32);
    payload.extend_from_slice(SECTION.as_bytes());
    payload.extend_from_slice(text.as_bytes());
    let mut out = vec![0];
    let size = u32::try_from(payload.len())
        .map_err(|_| SignatureError::BadSection("manifest too large".into()))?;
    write_leb_u32(&mut out, size);
    out.extend_from_slice(&payload);
    Ok(out)
}

/// `signed_at` must be an RFC 3339 time.
fn check_time(signed_at: &str) -> Result<(), SignatureError> {
    chrono::DateTime::parse_from_rfc3339(signed_at)
        .map(|_| ())
        .map_err(|e| {
            SignatureError::BadSection(format!(
                "signed_at {:?} is not an RFC 3339 time ({e})",
                signed_at.chars().take(64).collect::<String>()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty component: the smallest valid one.
    const EMPTY: &[u8] = b"\0asm\x0d\0\x01\0";

    fn manifest() -> Manifest {
        Manifest::parse(
            "name = \"m\"\nversion = \"1.0.0\"\nrole = \"r\"\nwit_package = \"garden:pipeline@0.4.0\"\nwit_world = \"garden-module\"\n",
            "test",
        )
        .unwrap()
    }

    #[test]
    fn sign_then_parse_recovers_code_manifest_and_a_valid_signature() {
        let key = SigningKey::generate();
        let signed = sign(EMPTY, &manifest(), &key, "2026-11-25T00:00:00Z").unwrap();
        let parsed = parse(&signed).unwrap();
        assert_eq!(parsed.code, EMPTY);
        assert_eq!(
            parsed.manifest.component.as_deref(),
            Some(Digest::of(EMPTY).to_hex().as_str())
        );
        assert_eq!(parsed.manifest.publisher, Some(key.public().id()));
        assert!(key.public().verify(&parsed.message(), &parsed.signature));
        assert!(
            matches!(
                sign(&signed, &manifest(), &key, "t"),
                Err(SignatureError::Misplaced)
            ),
            "no double signing"
        );
    }

    #[test]
    fn structural_problems_have_their_own_errors() {
        let key = SigningKey::generate();
        let signed = sign(EMPTY, &manifest(), &key, "2026-01-01T00:00:00Z").unwrap();
        assert!(matches!(parse(EMPTY), Err(SignatureError::Unsigned)));
        assert!(matches!(parse(b"nope"), Err(SignatureError::NotWasm)));
        assert!(matches!(
            parse(b"\0asm\x01\0\0\0"),
            Err(SignatureError::CoreModule)
        ));
        assert!(matches!(
            parse(&signed[..signed.len() - 5]),
            Err(SignatureError::Malformed(_))
        ));
        // A section after the signature.
        let mut moved = signed.clone();
        moved.extend_from_slice(&[0, 2, 1, b'x']);
        assert!(matches!(parse(&moved), Err(SignatureError::Misplaced)));
    }

    /// The signed component with its signature section's payload rebuilt
    /// by `edit` (the TOML text) and its size written `width` bytes wide.
    fn reencoded(signed: &[u8], width: usize, edit: impl Fn(&str) -> String) -> Vec<u8> {
        let parsed = parse(signed).unwrap();
        let start = parsed.code.len();
        let all = sections(signed).unwrap();
        let (_, _, range) = all.last().unwrap().clone();
        let (_, data) = custom(&signed[range]).unwrap();
        let text = edit(std::str::from_utf8(data).unwrap());
        let mut payload = Vec::new();
        write_leb_u32(&mut payload, SECTION.len() as u32);
        payload.extend_from_slice(SECTION.as_bytes());
        payload.extend_from_slice(text.as_bytes());
        let mut out = signed[..start].to_vec();
        out.push(0);
        // LEB128 padded to `width` bytes: same value, other bytes.
        let mut v = payload.len() as u32;
        for i in 0..width {
            let more = i + 1 < width;
            out.push((v & 0x7f) as u8 | if more { 0x80 } else { 0 });
            v >>= 7;
        }
        out.extend_from_slice(&payload);
        out
    }

    #[test]
    fn a_re_encoded_signature_section_is_refused() {
        let key = SigningKey::generate();
        let signed = sign(EMPTY, &manifest(), &key, "2026-11-25T00:00:00Z").unwrap();
        assert!(
            parse(&reencoded(&signed, 2, str::to_string)).is_ok(),
            "the canonical width"
        );
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("a wider LEB128 size", reencoded(&signed, 5, str::to_string)),
            (
                "a comment",
                reencoded(&signed, 2, |t| format!("# hello\n{t}")),
            ),
            (
                "keys reordered",
                reencoded(&signed, 2, |t| {
                    let mut lines: Vec<&str> = t.lines().collect();
                    let at = lines.iter().position(|l| l.starts_with("format")).unwrap();
                    let first = lines.remove(at);
                    lines.insert(1, first);
                    lines.join("\n") + "\n"
                }),
            ),
        ];
        for (what, bytes) in cases {
            assert_ne!(bytes, signed, "{what}: other bytes");
            match parse(&bytes) {
                Err(SignatureError::BadSection(m)) => {
                    assert!(m.contains("canonical"), "{what}: {m}")
                }
                other => panic!("{what}: expected a refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn signed_at_must_be_rfc_3339() {
        let key = SigningKey::generate();
        assert!(matches!(
            sign(EMPTY, &manifest(), &key, "yesterday"),
            Err(SignatureError::BadSection(_))
        ));
    }
}
