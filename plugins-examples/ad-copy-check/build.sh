#!/usr/bin/env bash
# Builds the Ad Copy Check component with ComponentizeJS (pinned in package.json,
# installed by npm on first use) into the workspace's wasm32-wasip2 output
# directory. Kiosk grants no outbound HTTP, so the http and fetch-event features are off.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${CARGO_TARGET_DIR:-$here/../../target}/wasm32-wasip2/release"
mkdir -p "$out"
cd "$here"
if [ ! -x node_modules/.bin/componentize-js ]; then
    # `npm install` (pinned by package-lock.json): `npm ci` 11 refuses this lock file over
    # optional platform packages it lists without a version.
    npm install --no-audit --no-fund --loglevel=error
fi
node_modules/.bin/componentize-js app.js --wit ../../wit/app@0.1.0 --world-name app \
    --disable http fetch-event -o "$out/ad_copy_check.wasm"
