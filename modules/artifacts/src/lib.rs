//! The garden guest modules, built to wasm32-wasip2 components by this
//! crate's build script and signed with the development key.
//!
//! [`MODULES`] holds the real modules' bytes (embedded, so `garden run` works
//! with nothing on disk); [`FIXTURES`] the paths of the adversarial test
//! guests. No `.wasm` file is committed: they are built from `modules/`.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// The development key's public half (PEM). It signs the built-in modules;
/// its private half is committed, so it proves nothing about authorship
/// (see docs/signing.md).
pub const DEV_PUBLIC_KEY_PEM: &str = include_str!("../../../keys/dev.pub.pem");

/// The bytes of the real module called `name`, if there is one.
pub fn module(name: &str) -> Option<&'static [u8]> {
    MODULES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}

/// The path of the fixture called `name`, if there is one.
pub fn fixture(name: &str) -> Option<&'static str> {
    FIXTURES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, path)| *path)
}
