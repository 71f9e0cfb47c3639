#!/usr/bin/env bash
# Builds the Ad Copy Check component with ComponentizeJS (pinned in package.json,
# installed by npm on first use) against kiosk:app@0.2.0 into the workspace's
# wasm32-wasip2 output directory. The app calls the partner's brand-safety API with
# fetch(), so the http feature stays on (the component imports the standard
# wasi:http/outgoing-handler, which the 0.2.0 world provides); fetch-event (an incoming
# HTTP handler) is off, as Kiosk calls apps only through the world's exports.
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
node_modules/.bin/componentize-js app.js --wit ../../wit/app@0.2.0 --world-name app \
    --disable fetch-event -o "$out/ad_copy_check.wasm"
