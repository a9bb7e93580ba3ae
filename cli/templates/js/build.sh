#!/bin/sh
# Build the component with the SDK's pinned jco (npm ci --prefix <sdk>),
# QuickJS backend, then write its manifest from its own describe().
set -e
stage=$(mktemp -d)
cp app.js module.js "{{sdk}}/garden-sdk.js" "{{sdk}}/indicators.js" "$stage/"
(cd "$stage" && "{{sdk}}/node_modules/.bin/jco" componentize app.js --wit "{{wit}}" -n garden-module \
    --backend qjs --backend-qjs-disable-async --backend-qjs-stub-wasi -o module.wasm)
cp "$stage/module.wasm" {{name}}.wasm
garden manifest {{name}}.wasm --memory 16777216 > garden.toml
echo "built {{name}}.wasm; sign it: garden sign ... (see README)"
