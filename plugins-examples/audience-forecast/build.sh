#!/usr/bin/env bash
# Builds the Audience Forecast component with componentize-py (pip install
# componentize-py==0.25.0) against the kiosk:app@0.2.0 world (../../wit/app@0.2.0, which
# imports wasi:http/outgoing-handler@0.2.12; its WASI packages are in deps/) into the
# workspace's wasm32-wasip2 output directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${CARGO_TARGET_DIR:-$here/../../target}/wasm32-wasip2/release"
mkdir -p "$out"
cd "$here"
componentize-py -d ../../wit/app@0.2.0 -w app componentize app -o "$out/audience_forecast.wasm"
