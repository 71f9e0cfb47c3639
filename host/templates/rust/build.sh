#!/usr/bin/env bash
# Builds app.wasm: `rustup target add wasm32-wasip2` once, then this.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{crate_file}}.wasm" app.wasm
echo "built app.wasm"
