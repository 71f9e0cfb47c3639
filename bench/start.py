#!/usr/bin/env python3
"""Cold and warm start of `kiosk serve`, as an operator sees it: from the process
starting to the first answer of a tenant's call.

Cold: a fresh data directory (its compile cache is empty). The server verifies and
registers budget-pacing (the demo seed), compiling its component; then the tenant
installs it and invokes `evaluate`. Warm: the same data directory again (the version
is registered and its compiled code is in the cache); the server starts and the tenant
invokes the installation made by the cold run.

Prints one markdown table row per phase. Usage: bench/start.py [RUNS] (default 3;
the median is reported). Needs target/release/kiosk and the budget-pacing guest.
"""

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, ".ci"))
from demo_server import api, free_port  # noqa: E402

KIOSK = os.path.join(ROOT, "target/release/kiosk")
APP = (f"{ROOT}/plugins-examples/budget-pacing/manifest.json="
       f"{ROOT}/target/wasm32-wasip2/release/budget_pacing.wasm")
INPUT = {"campaignId": "c-1", "budget": 3000, "flightDays": 30, "dailySpend": [100, 120, 90]}


def start(scratch, seed):
    """Starts kiosk serve; returns (process, base URL, seconds to listening, log text)."""
    port = free_port()
    config = os.path.join(scratch, "kiosk.toml")
    with open(config, "w") as f:
        f.write(f'data-dir = "{scratch}/data"\n[server]\noperator-token = "bench-operator-token"\n')
    args = [KIOSK, "serve", "--listen", f"127.0.0.1:{port}", "--config", config]
    if seed:
        args += ["--demo-app", APP]
    log = os.path.join(scratch, "kiosk.log")
    began = time.monotonic()
    proc = subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    while "kiosk listening on" not in open(log).read():
        if proc.poll() is not None:
            sys.exit(f"kiosk serve exited:\n{open(log).read()}")
        time.sleep(0.002)
    return proc, f"http://127.0.0.1:{port}", began, open(log).read()


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def one_run():
    scratch = tempfile.mkdtemp(prefix="kiosk-start-")
    try:
        proc, base, began, log = start(scratch, seed=True)
        listening = time.monotonic() - began
        tenant = dict(re.findall(r"export (\w+)=(\S+)", log))["TENANT_TOKEN"]
        installed = api(base, tenant, "POST", "/v1/tenants/demo/installations",
                         {"app": "acme/budget-pacing", "config": {"apiKey": "k"}})
        path = f"/v1/tenants/demo/installations/{installed['id']}/invoke/evaluate"
        api(base, tenant, "POST", path, INPUT)
        cold = time.monotonic() - began
        stop(proc)

        proc, base, began, _ = start(scratch, seed=False)
        warm_listening = time.monotonic() - began
        api(base, tenant, "POST", path, INPUT)
        warm = time.monotonic() - began
        stop(proc)
        return listening, cold, warm_listening, warm
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    results = [one_run() for _ in range(runs)]
    med = [statistics.median(r[i] for r in results) * 1000 for i in range(4)]
    print(f"| cold: empty cache, demo app verified and compiled | {med[0]:.0f} | {med[1]:.0f} |")
    print(f"| warm: registered, compiled code in the cache | {med[2]:.0f} | {med[3]:.0f} |")


if __name__ == "__main__":
    main()
