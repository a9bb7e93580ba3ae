#!/bin/sh
# Build, sign and trust the Python and JavaScript modules that
# pipeline.toml uses (py-breakout, js-sma-cross, js-expert-range).
#
#   examples/languages/build.sh            # into target/languages
#   garden run --config examples/languages/pipeline.toml \
#       --trust target/languages/trust.toml
#
# Needs: garden on PATH, pip install componentize-py==0.25.1, and
# npm ci --prefix guest-sdk/js. OUT changes where the files go.
set -e
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/target/languages}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

componentize-py -d "$ROOT/wit" -w garden-module componentize app \
    -p "$ROOT/modules/py-breakout" -p "$ROOT/guest-sdk/python" --stub-wasi \
    -o "$OUT/py-breakout.wasm"

for m in js-sma-cross js-expert-range; do
    stage=$(mktemp -d)
    cp "$ROOT/modules/$m/app.js" "$ROOT/modules/$m/module.js" \
        "$ROOT/guest-sdk/js/garden-sdk.js" "$ROOT/guest-sdk/js/indicators.js" "$stage/"
    (cd "$stage" && "$ROOT/guest-sdk/js/node_modules/.bin/jco" componentize app.js \
        --wit "$ROOT/wit" -n garden-module --backend qjs \
        --backend-qjs-disable-async --backend-qjs-stub-wasi -o "$OUT/$m.wasm")
    rm -rf "$stage"
done

# The author's key (made once), trusted by the store the run will use.
[ -f "$OUT/author.key.pem" ] || garden key generate --name author --dir "$OUT"
garden trust add "$OUT/author.pub.pem" --name author --trust "$OUT/trust.toml"
for m in py-breakout js-sma-cross js-expert-range; do
    garden manifest "$OUT/$m.wasm" --check "$ROOT/modules/$m/garden.toml"
    garden sign "$OUT/$m.wasm" --manifest "$ROOT/modules/$m/garden.toml" \
        --key "$OUT/author.key.pem" -o "$OUT/$m.signed.wasm"
done
echo "built and signed into $OUT"
