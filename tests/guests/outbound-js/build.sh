#!/usr/bin/env bash
# Builds the JavaScript outbound test guest with ComponentizeJS (pinned in package.json,
# installed by npm on first use) against kiosk:app@0.2.0, with fetch() on (the http
# feature) and no fetch-event, into the workspace's wasm32-wasip2 output directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${CARGO_TARGET_DIR:-$here/../../../target}/wasm32-wasip2/release"
mkdir -p "$out"
cd "$here"
if [ ! -x node_modules/.bin/componentize-js ]; then
    npm install --no-audit --no-fund --loglevel=error
fi
node_modules/.bin/componentize-js app.js --wit ../../../wit/app@0.2.0 --world-name app \
    --disable fetch-event -o "$out/outbound_js_guest.wasm"
