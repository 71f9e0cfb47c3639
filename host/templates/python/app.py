"""{{title}}: a Kiosk app in Python (componentize-py), made by `kiosk new`.

A returned `Err(AppError(...))` reaches the tenant as the app's refusal; an uncaught
exception fails the call, and its traceback is in the installation's log and in the
failed call's problem detail.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import key_value, log, outgoing_handler, streams
from wit_world.imports import wasi_http_types as http
# componentize-py names the world's two `types` interfaces after their packages.
from wit_world.imports.kiosk_app_types import AppError, CallContext, UsageRecord, UsageWindow

# Your service: manifest.json declares https://api.example.com in
# capabilities.outbound, with the apiKey secret bound to it.
API_HOST = "api.example.com"
# How much of a response body `status` returns.
MAX_BODY = 4096


def refuse(code: str, message: str) -> Err:
    return Err(AppError(code=code, message=message))


def save_config(config: str) -> None:
    """Keeps the greeting and the apiKey. The apiKey arrives as the host's placeholder,
    `{kiosk-secret:/apiKey}`, never the tenant's key: keeping it keeps nothing secret."""
    parsed = json.loads(config)
    key_value.set("greeting", parsed.get("greeting", "Hello").encode())
    if "apiKey" in parsed:
        key_value.set("apiKey", parsed["apiKey"].encode())
    else:
        key_value.delete("apiKey")


class Lifecycle(exports.Lifecycle):
    def install(self, ctx: CallContext, config: str) -> None:
        save_config(config)

    def validate_config(self, ctx: CallContext, config: str) -> None:
        pass

    def configure(self, ctx: CallContext, old_config: str, new_config: str) -> None:
        save_config(new_config)

    def upgrade(self, ctx: CallContext, from_version: str, config: str) -> None:
        save_config(config)

    def uninstall(self, ctx: CallContext) -> None:
        pass


class Calls(exports.Calls):
    def invoke(self, ctx: CallContext, operation: str, input: str) -> str:
        if operation == "greet":
            return greet(input)
        if operation == "status":
            return status()
        raise refuse("unknown-operation", f"no operation {operation!r}; this app has: greet, status")


def greet(input: str) -> str:
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


def status() -> str:
    """Asks your service for its status with the tenant's key."""
    key = key_value.get("apiKey")
    if key is None:
        raise refuse("not-configured", "set apiKey in the configuration first")
    # `key` is the placeholder: Kiosk writes the tenant's key in its place on the way to
    # the destination the manifest binds /apiKey to (and nowhere else).
    code, body = get("/v1/status", [("authorization", b"Bearer " + key)])
    return json.dumps({"status": code, "body": body.decode(errors="replace")})


def get(path: str, headers: list[tuple[str, bytes]]) -> tuple[int, bytes]:
    """GET https://api.example.com<path> with the standard wasi:http client, blocking: the
    status and the first 4 KiB of the body. A transport error (the host's error code,
    e.g. ErrorCode_HttpRequestDenied) refuses the call with `service-unreachable`."""
    try:
        request = http.OutgoingRequest(http.Fields.from_list(headers))  # a GET
        request.set_scheme(http.Scheme_Https())
        request.set_authority(API_HOST)
        request.set_path_with_query(path)
        body = request.body()
        future = outgoing_handler.handle(request, None)  # takes `request`
        http.OutgoingBody.finish(body, None)  # takes `body`: a GET sends none
    except Err as e:
        raise refuse("service-unreachable", str(e.value))
    with future:
        with future.subscribe() as ready:  # a child of `future`: dropped first
            ready.block()
        answer = future.get()  # Ok(Ok(response)) or Ok(Err(error code))
    if answer is None or isinstance(answer, Err):
        raise refuse("service-unreachable", "no response")
    if isinstance(answer.value, Err):
        raise refuse("service-unreachable", str(answer.value.value))
    # Each resource is a child of the one before: the `with` drops them in reverse.
    with answer.value.value as response, response.consume() as incoming, incoming.stream() as stream:
        data = b""
        while len(data) < MAX_BODY:
            try:
                data += stream.blocking_read(MAX_BODY - len(data))
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    break
                raise refuse("service-unreachable", e.value.value.to_debug_string())
        return response.status(), data


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
