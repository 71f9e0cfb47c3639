"""{{title}}: a Kiosk app in Python (componentize-py), made by `kiosk new`.

A returned `Err(AppError(...))` reaches the tenant as the app's refusal; an uncaught
exception fails the call, and its traceback is in the installation's log and in the
failed call's problem detail.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import key_value, log
from wit_world.imports.types import AppError, CallContext, UsageRecord, UsageWindow


def refuse(code: str, message: str) -> Err:
    return Err(AppError(code=code, message=message))


def save_greeting(config: str) -> None:
    greeting = json.loads(config).get("greeting", "Hello")
    key_value.set("greeting", greeting.encode())


class Lifecycle(exports.Lifecycle):
    def install(self, ctx: CallContext, config: str) -> None:
        save_greeting(config)

    def validate_config(self, ctx: CallContext, config: str) -> None:
        pass

    def configure(self, ctx: CallContext, old_config: str, new_config: str) -> None:
        save_greeting(new_config)

    def upgrade(self, ctx: CallContext, from_version: str, config: str) -> None:
        save_greeting(config)

    def uninstall(self, ctx: CallContext) -> None:
        pass


class Calls(exports.Calls):
    def invoke(self, ctx: CallContext, operation: str, input: str) -> str:
        if operation != "greet":
            raise refuse("unknown-operation", f"no operation {operation!r}; this app has: greet")
        try:
            name = json.loads(input).get("name")
        except (ValueError, AttributeError) as e:
            raise refuse("invalid-input", f"input must be a JSON object: {e}")
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise refuse("invalid-input", "name must be a string of 1-100 characters")
        greeting = (key_value.get("greeting") or b"Hello").decode()
        # Counted at the next usage report, which clears it (each person once per report).
        key_value.set(f"greeted/{name}", b"1")
        log.log(log.Level.INFO, f"greeted {name}")
        return json.dumps({"message": f"{greeting}, {name}!"})


class Usage(exports.Usage):
    def report(self, ctx: CallContext, window: UsageWindow) -> list[UsageRecord]:
        # The people greeted since the last report. Clearing them here is safe: a
        # report's key-value changes are kept only together with its usage (one commit).
        greeted = key_value.list_keys("greeted/")
        for key in greeted:
            key_value.delete(key)
        if not greeted:
            return []
        return [UsageRecord(sku="people-greeted", quantity=len(greeted), idempotency_key=f"people/{window.start_ms}")]
