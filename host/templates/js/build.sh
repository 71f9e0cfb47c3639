#!/usr/bin/env bash
# Builds app.wasm with ComponentizeJS (installed by npm on first use) against
# kiosk:app@0.2.0. The app calls out with fetch(), so the http feature stays on (the
# component imports the standard wasi:http/outgoing-handler, which the world provides);
# fetch-event (an incoming HTTP handler) is off: Kiosk calls apps through the world's
# exports.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x node_modules/.bin/componentize-js ]; then
    npm install --no-audit --no-fund --loglevel=error
fi
node_modules/.bin/componentize-js app.js --wit wit/app@0.2.0 --world-name app \
    --disable fetch-event -o app.wasm
echo "built app.wasm"
