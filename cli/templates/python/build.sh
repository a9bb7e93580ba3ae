#!/bin/sh
# Build the component (pip install componentize-py==0.25.1), then write its
# manifest from its own describe(); CPython needs about 32 MiB of memory.
set -e
componentize-py -d "{{wit}}" -w garden-module componentize app -p . -p "{{sdk}}" --stub-wasi -o {{name}}.wasm
garden manifest {{name}}.wasm --memory 33554432 > garden.toml
echo "built {{name}}.wasm; sign it: garden sign ... (see README)"
