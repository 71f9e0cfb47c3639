"""Audience Forecast: a Kiosk app in Python (componentize-py).

Build: `bash build.sh` (writes ../../target/wasm32-wasip2/release/audience_forecast.wasm).
Try:   kiosk run ../../target/wasm32-wasip2/release/audience_forecast.wasm --manifest manifest.json \
         --tenant demo --config '{"apiToken": "demo-token"}' --invoke forecast \
         --input '{"segment": "runners", "dailyBudget": 250, "cpm": 4.5}'

A returned `Err(AppError)` reaches the tenant as the app's refusal; an uncaught
exception fails the call, and its traceback (stderr) is in the installation's log and
in the failed call's problem detail.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import key_value, log
from wit_world.imports.types import AppError, CallContext, UsageRecord, UsageWindow

# Audience sizes per market (people reachable per day), a stand-in for the partner's API.
AUDIENCE = {"us": 2_400_000, "eu": 1_900_000, "apac": 3_100_000}
SEGMENT_PREFIX = "segment/"


def refuse(code: str, message: str) -> Err:
    return Err(AppError(code=code, message=message))


def parse_config(text: str) -> dict:
    try:
        config = json.loads(text)
    except ValueError as e:
        raise refuse("invalid-config", f"configuration is not JSON: {e}")
    if not isinstance(config, dict):
        raise refuse("invalid-config", "configuration must be an object")
    return config


def info(message: str) -> None:
    log.log(log.Level.INFO, message)


class Lifecycle(exports.Lifecycle):
    def validate_config(self, ctx: CallContext, config: str) -> None:
        parsed = parse_config(config)
        # Beyond the schema: a token the partner's API would refuse outright.
        if parsed.get("apiToken", "").strip() != parsed.get("apiToken", ""):
            raise refuse("invalid-config", "apiToken has leading or trailing spaces")

    def install(self, ctx: CallContext, config: str) -> None:
        parsed = parse_config(config)
        key_value.set("config/market", parsed.get("market", "us").encode())
        info(f"installed for tenant {ctx.tenant_id} in market {parsed.get('market', 'us')}")

    def configure(self, ctx: CallContext, old_config: str, new_config: str) -> None:
        parsed = parse_config(new_config)
        key_value.set("config/market", parsed.get("market", "us").encode())
        info(f"market is now {parsed.get('market', 'us')}")

    def upgrade(self, ctx: CallContext, from_version: str, config: str) -> None:
        info(f"upgraded from {from_version}")

    def uninstall(self, ctx: CallContext) -> None:
        info("uninstalled; the host purges the segments")


class Calls(exports.Calls):
    def invoke(self, ctx: CallContext, operation: str, input: str) -> str:
        if operation != "forecast":
            raise refuse("unknown-operation", f"no operation {operation!r}; this app has: forecast")
        try:
            request = json.loads(input)
        except ValueError as e:
            raise refuse("invalid-input", f"input is not JSON: {e}")
        segment = request.get("segment")
        if not isinstance(segment, str) or not 1 <= len(segment) <= 64:
            raise refuse("invalid-input", "segment must be a string of 1-64 characters")
        budget = float(request.get("dailyBudget", 0))
        if budget <= 0:
            raise refuse("invalid-input", "dailyBudget must be positive")
        market = (key_value.get("config/market") or b"us").decode()
        # Impressions bought at this CPM. A CPM of 0 is not refused here: the division
        # raises ZeroDivisionError, an uncaught exception whose traceback Kiosk shows.
        impressions = int(budget / float(request.get("cpm", 0)) * 1000)
        reach = min(impressions // 3, AUDIENCE[market])
        key_value.set(SEGMENT_PREFIX + segment, json.dumps({"impressions": impressions, "reach": reach}).encode())
        info(f"forecast {segment}: {impressions} impressions, reach {reach} in {market}")
        return json.dumps({"segment": segment, "market": market, "impressions": impressions, "reach": reach})


class Usage(exports.Usage):
    def report(self, ctx: CallContext, window: UsageWindow) -> list[UsageRecord]:
        segments = key_value.list_keys(SEGMENT_PREFIX)
        if not segments:
            return []
        return [UsageRecord(sku="segments-tracked", quantity=len(segments),
                            idempotency_key=f"segments/{window.start_ms}")]
