"""Audience Forecast: a Kiosk app in Python (componentize-py), built against kiosk:app@0.2.0.

Build: `bash build.sh` (componentize-py 0.25.0 against ../../wit/app@0.2.0; writes
       ../../target/wasm32-wasip2/release/audience_forecast.wasm).
Try:   kiosk run ../../target/wasm32-wasip2/release/audience_forecast.wasm --manifest manifest.json \
         --tenant demo --config '{"apiToken": "demo-token"}' --invoke forecast \
         --input '{"segment": "runners", "dailyBudget": 250, "cpm": 4.5}'
       (built-in audience sizes, no network). With `"liveSizes": true` in --config the
       forecast asks https://audience.acme.example; add
       `--mock https://audience.acme.example=http://127.0.0.1:8080` to send that to a
       stand-in of the API on this machine (GET /v1/audiences/<segment>?market=<market>
       answering {"dailyReach": <int>}).

With `liveSizes` on, `forecast` asks the partner's audience API for the segment's daily
reach with the standard wasi:http client (wasi:http/outgoing-handler, imported by
kiosk:app@0.2.0). The app never holds the tenant's apiToken: it receives the placeholder
`{kiosk-secret:/apiToken}`, keeps it, and sends it in the `authorization` header; the host
writes the real token into the request, only for https://audience.acme.example (the
manifest binds /apiToken to that destination).

A returned `Err(AppError)` reaches the tenant as the app's refusal; an uncaught
exception fails the call, and its traceback (stderr) is in the installation's log and
in the failed call's problem detail.
"""

import json
import re
from urllib.parse import quote

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import key_value, log, outgoing_handler, streams
from wit_world.imports import wasi_http_types as http
# componentize-py names a world's `types` interfaces after their packages when two
# of them (kiosk:app/types and wasi:http/types) would both be `types`.
from wit_world.imports.kiosk_app_types import AppError, CallContext, UsageRecord, UsageWindow

# Audience sizes per market (people reachable per day): the built-in estimates, used
# unless the tenant turns `liveSizes` on.
AUDIENCE = {"us": 2_400_000, "eu": 1_900_000, "apac": 3_100_000}
SEGMENT_PREFIX = "segment/"

# The partner's audience API; the manifest declares it in capabilities.outbound.
AUDIENCE_API = "audience.acme.example"
# An answer is `{"dailyReach": n}`: anything this long is not one.
MAX_ANSWER_BYTES = 64 * 1024


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


def keep_config(parsed: dict) -> None:
    """Keeps what `forecast` needs. The apiToken is kept as received: under 0.2.0 it is
    the host's placeholder, `{kiosk-secret:/apiToken}`, never the tenant's token."""
    key_value.set("config/market", parsed.get("market", "us").encode())
    key_value.set("config/liveSizes", b"true" if parsed.get("liveSizes", False) is True else b"false")
    key_value.set("config/apiToken", str(parsed.get("apiToken", "")).encode())


def error_code_name(code: object) -> str:
    """The WIT name of a wasi:http `error-code` case, e.g. `HTTP-request-denied` for
    ErrorCode_HttpRequestDenied (as the host's log and docs name it)."""
    name = type(code).__name__
    if not name.startswith("ErrorCode_"):
        return str(code)
    words = re.findall(r"[A-Z][a-z0-9]*", name[len("ErrorCode_"):])
    return "-".join(w.upper() if w in ("Dns", "Ip", "Tls", "Http", "Uri") else w.lower() for w in words)


def unreachable(code: object) -> Err:
    return refuse("audience-api", f"the audience API could not be reached: {error_code_name(code)}")


def stream_failure(error: object) -> Err:
    """A body stream's failure (`last-operation-failed`), as the wasi:http error code."""
    if isinstance(error, streams.StreamError_LastOperationFailed):
        with error.value as io_error:  # a wasi:io error resource, ours to drop
            code = http.http_error_code(io_error)
            why = error_code_name(code) if code is not None else io_error.to_debug_string()
        return refuse("audience-api", f"the audience API could not be reached: {why}")
    return refuse("audience-api", "the audience API could not be reached: body stream failed")


def get(path_with_query: str, headers: list[tuple[str, bytes]]) -> tuple[int, bytes]:
    """GET https://audience.acme.example<path_with_query>, synchronously; the status and
    body. Raises `Err(AppError)` with code `audience-api` for a transport error."""
    try:
        fields = http.Fields.from_list(headers)
    except Err:
        # A header value the wasi:http client refuses (e.g. a control character).
        raise refuse("audience-api", "the apiToken cannot be sent in a request header")
    request = http.OutgoingRequest(fields)  # takes `fields`; the method is GET
    try:
        request.set_scheme(http.Scheme_Https())
        request.set_authority(AUDIENCE_API)
        request.set_path_with_query(path_with_query)
    except Err:
        request.__exit__(None, None, None)
        raise refuse("audience-api", "the audience API request could not be built")
    body = request.body()
    try:
        future = outgoing_handler.handle(request, None)  # takes `request`
    except Err as e:
        body.__exit__(None, None, None)
        raise unreachable(e.value)
    # A GET sends no body: finish it (an unfinished body counts as a broken request).
    try:
        http.OutgoingBody.finish(body, None)  # takes `body`
    except Err as e:
        future.__exit__(None, None, None)
        raise unreachable(e.value)

    with future:
        with future.subscribe() as ready:  # a child of `future`: dropped first
            ready.block()
        answer = future.get()
    # option<result<result<incoming-response, error-code>>>: ready (we blocked), taken
    # once, then the response or the transport's error code.
    if answer is None or isinstance(answer, Err):
        raise refuse("audience-api", "the audience API could not be reached: no response")
    if isinstance(answer.value, Err):
        raise unreachable(answer.value.value)

    with answer.value.value as response:
        status = response.status()
        if status != 200:
            return status, b""
        with response.consume() as incoming:
            data = bytearray()
            with incoming.stream() as stream:  # a child of `incoming`: dropped first
                while True:
                    try:
                        data += stream.blocking_read(16 * 1024)
                    except Err as e:
                        if isinstance(e.value, streams.StreamError_Closed):
                            break
                        raise stream_failure(e.value)
                    if len(data) > MAX_ANSWER_BYTES:
                        raise refuse("audience-api", "the audience API answered more than an audience size")
    return status, bytes(data)


def live_audience(segment: str, market: str, api_token: str) -> int:
    """Today's daily reach of `segment` in `market`, from the partner's audience API."""
    path = f"/v1/audiences/{quote(segment, safe='')}?market={quote(market, safe='')}"
    status, body = get(path, [
        # The placeholder: the host writes the tenant's token in its place. Never logged.
        ("authorization", f"Bearer {api_token}".encode()),
        ("accept", b"application/json"),
    ])
    if status != 200:
        raise refuse("audience-api", f"the audience API answered {status}")
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    reach = answer.get("dailyReach") if isinstance(answer, dict) else None
    if not isinstance(reach, int) or isinstance(reach, bool) or reach < 0:
        raise refuse("audience-api", 'the audience API did not answer {"dailyReach": <int>}')
    info(f"audience size for {segment} in {market}: {reach} (live)")
    return reach


class Lifecycle(exports.Lifecycle):
    def validate_config(self, ctx: CallContext, config: str) -> None:
        parsed = parse_config(config)
        # Beyond the schema: a token the partner's API would refuse outright. (Under
        # 0.2.0 this sees the placeholder, which has no spaces.)
        if parsed.get("apiToken", "").strip() != parsed.get("apiToken", ""):
            raise refuse("invalid-config", "apiToken has leading or trailing spaces")

    def install(self, ctx: CallContext, config: str) -> None:
        parsed = parse_config(config)
        keep_config(parsed)
        info(f"installed for tenant {ctx.tenant_id} in market {parsed.get('market', 'us')}")

    def configure(self, ctx: CallContext, old_config: str, new_config: str) -> None:
        parsed = parse_config(new_config)
        keep_config(parsed)
        info(f"market is now {parsed.get('market', 'us')}")

    def upgrade(self, ctx: CallContext, from_version: str, config: str) -> None:
        # Versions before 0.4.0 kept only the market.
        keep_config(parse_config(config))
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
        live = key_value.get("config/liveSizes") == b"true"
        # Impressions bought at this CPM. A CPM of 0 is not refused here: the division
        # raises ZeroDivisionError, an uncaught exception whose traceback Kiosk shows.
        impressions = int(budget / float(request.get("cpm", 0)) * 1000)
        if live:
            api_token = (key_value.get("config/apiToken") or b"").decode()
            audience = live_audience(segment, market, api_token)
        else:
            audience = AUDIENCE[market]
        reach = min(impressions // 3, audience)
        key_value.set(SEGMENT_PREFIX + segment, json.dumps({"impressions": impressions, "reach": reach}).encode())
        info(f"forecast {segment}: {impressions} impressions, reach {reach} in {market}")
        return json.dumps({"segment": segment, "market": market, "impressions": impressions, "reach": reach,
                           "source": "live" if live else "estimate"})


class Usage(exports.Usage):
    def report(self, ctx: CallContext, window: UsageWindow) -> list[UsageRecord]:
        segments = key_value.list_keys(SEGMENT_PREFIX)
        if not segments:
            return []
        return [UsageRecord(sku="segments-tracked", quantity=len(segments),
                            idempotency_key=f"segments/{window.start_ms}")]
