#!/usr/bin/env bash
# Runs the app once through Kiosk's lifecycle (install, invoke, usage report) in a
# throwaway store: `bash build.sh && bash try.sh`. KIOSK names the kiosk binary.
set -euo pipefail
cd "$(dirname "$0")"
"${KIOSK:-kiosk}" run app.wasm --manifest manifest.json --tenant demo \
    --config '{"greeting": "Hello"}' --invoke greet --input '{"name": "Ada"}'

# `status` calls https://api.example.com/v1/status. To try it, run a stand-in of your
# API on this machine (plain HTTP on 127.0.0.1:8080, answering GET /v1/status) and point
# the declared destination at it with --mock (loopback only; the request keeps
# `Host: api.example.com`, and your mock receives `authorization: Bearer dev-key`):
#
# "${KIOSK:-kiosk}" run app.wasm --manifest manifest.json --tenant demo \
#     --config '{"apiKey": "dev-key"}' --invoke status \
#     --mock https://api.example.com=http://127.0.0.1:8080
