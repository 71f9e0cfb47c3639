#!/usr/bin/env bash
# Builds app.wasm with componentize-py (pip install componentize-py==0.25.0).
set -euo pipefail
cd "$(dirname "$0")"
componentize-py -d wit/app@0.2.0 -w app componentize app -o app.wasm
echo "built app.wasm"
