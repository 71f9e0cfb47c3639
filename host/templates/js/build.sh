#!/usr/bin/env bash
# Builds app.wasm with ComponentizeJS (installed by npm on first use). Kiosk grants no
# outbound HTTP, so the http and fetch-event features are off.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x node_modules/.bin/componentize-js ]; then
    npm install --no-audit --no-fund --loglevel=error
fi
node_modules/.bin/componentize-js app.js --wit wit/app@0.1.0 --world-name app \
    --disable http fetch-event -o app.wasm
echo "built app.wasm"
