#!/bin/sh
# Build the component, then write its manifest from its own describe().
set -e
cargo build --target wasm32-wasip2 --release
garden manifest target/wasm32-wasip2/release/{{crate}}.wasm > garden.toml
echo "built target/wasm32-wasip2/release/{{crate}}.wasm; sign it: garden sign ... (see README)"
