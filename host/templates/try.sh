#!/usr/bin/env bash
# Runs the app once through Kiosk's lifecycle (install, invoke, usage report) in a
# throwaway store: `bash build.sh && bash try.sh`. KIOSK names the kiosk binary.
set -euo pipefail
cd "$(dirname "$0")"
"${KIOSK:-kiosk}" run app.wasm --manifest manifest.json --tenant demo \
    --config '{"greeting": "Hello"}' --invoke greet --input '{"name": "Ada"}'
