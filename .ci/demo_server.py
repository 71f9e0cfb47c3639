"""Starts what the guide and console checks run against: a plain-HTTP docker-registry and
`kiosk serve` with the example apps seeded, on free loopback ports, each from the
binaries `.ci/test` built (target/release/kiosk, the wasm32-wasip2 example guests).

`.ci/demo` starts the same server with `cargo build -p kiosk` first; here the binary that
`cargo test --release` built is used instead, since a separate `cargo build -p kiosk`
rebuilds much of the workspace with other features on a fresh clone.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
GUESTS = os.path.join(ROOT, "target/wasm32-wasip2/release")
DEMO_APPS = [
    f"{ROOT}/plugins-examples/budget-pacing/manifest.json={GUESTS}/budget_pacing.wasm",
    f"{ROOT}/plugins-examples/negative-keywords/manifest.json={GUESTS}/negative_keywords.wasm",
]


def api(base, token, method, path, body=None):
    """One request to Kiosk's API as `token`; the JSON answer (None for an empty one)."""
    request = urllib.request.Request(f"{base}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
        return json.loads(body) if body else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, predicate, seconds, proc, log):
    deadline = time.monotonic() + seconds
    while not predicate():
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}:\n{open(log).read()}")
        if time.monotonic() > deadline:
            sys.exit(f"{what} did not start within {seconds} s:\n{open(log).read()}")
        time.sleep(0.05)


def start_registry(scratch, procs):
    """A docker-registry on a free loopback port; returns "127.0.0.1:PORT"."""
    port = free_port()
    reg_dir = os.path.join(scratch, "registry")
    os.makedirs(reg_dir)
    config = os.path.join(reg_dir, "config.yml")
    with open(config, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n"
                f"  filesystem:\n    rootdirectory: {reg_dir}/storage\nhttp:\n  addr: 127.0.0.1:{port}\n"
                f"  secret: kiosk-ci\n")
    log = os.path.join(reg_dir, "registry.log")
    reg = subprocess.Popen(["docker-registry", "serve", config], stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    procs.append(reg)

    def listening():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for("docker-registry", listening, 15, reg, log)
    return f"127.0.0.1:{port}"


def start_kiosk(scratch, procs, apps=DEMO_APPS, extra_config=""):
    """`kiosk serve` on a free port and a scratch data directory with the demo seeded.
    Returns (base URL, the demo's exported tokens as a dict, data dir, log path)."""
    port = free_port()
    data = os.path.join(scratch, "data")
    config = os.path.join(scratch, "kiosk.toml")
    with open(config, "w") as f:
        f.write(f'data-dir = "{data}"\n{extra_config}')
    log = os.path.join(scratch, "kiosk.log")
    args = [os.path.join(ROOT, "target/release/kiosk"), "serve", "--listen", f"127.0.0.1:{port}", "--config", config]
    for app in apps:
        args += ["--demo-app", app]
    server = subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=scratch)
    procs.append(server)
    wait_for("kiosk serve", lambda: "kiosk listening on" in open(log).read(), 120, server, log)
    tokens = dict(re.findall(r"export (\w+)=(\S+)", open(log).read()))
    return f"http://127.0.0.1:{port}", tokens, data, log
