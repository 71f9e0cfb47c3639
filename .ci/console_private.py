"""The console's flow for tenants' own apps (issue 30), run by .ci/console: the operator
switches private apps on for tenant `demo` on its "Private apps" page (a bad range
first, refused naming the field); `demo` builds and signs an app with `kiosk publish`,
then on its "Own apps" page is refused a registry on a private address, connects a real
docker-registry that demands a client certificate (mutual TLS, its CA and the client
certificate and key pasted in the form), adds its gpg key, registers the app, opens it
and installs it. The partner's catalog never shows it.

`kiosk publish` cannot present a client certificate (oci-client has no setting for
one), so the app is pushed to the plain registry .ci/console already runs, and the
mutual-TLS registry serves the same storage."""

import json
import os
import re
import socket
import subprocess

from demo_server import GUESTS, ROOT, api, free_port, wait_for

from playwright.sync_api import expect


def publish_private_app(scratch, registry):
    """`~demo/notes` 1.0.0 (negative-keywords' component) signed with a key of the
    tenant's own, pushed with `kiosk publish`; the armoured public certificate."""
    gnupg = os.path.join(scratch, "gnupg-demo")
    os.makedirs(gnupg, mode=0o700)
    env = dict(os.environ, GNUPGHOME=gnupg)
    run = lambda *args: subprocess.run(args, env=env, check=True, capture_output=True)  # noqa: E731
    run("gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Demo IT <it@demo.example>", "ed25519", "sign", "never")
    certificate = run("gpg", "--armor", "--export", "it@demo.example").stdout.decode()
    secret = os.path.join(scratch, "demo.key")
    with open(secret, "wb") as f:
        f.write(run("gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--armor",
                    "--export-secret-keys", "it@demo.example").stdout)
    manifest = json.load(open(os.path.join(ROOT, "plugins-examples/negative-keywords/manifest.json")))
    manifest.update(app="~demo/notes", name="Demo Notes", version="1.0.0")
    path = os.path.join(scratch, "notes.json")
    with open(path, "w") as f:
        json.dump(manifest, f)
    reference = f"{registry}/demo/notes:1.0.0"
    run(os.path.join(ROOT, "target/release/kiosk"), "publish", path, os.path.join(GUESTS, "negative_keywords.wasm"),
        reference, "--key", secret, "--insecure")
    subprocess.run(["gpgconf", "--homedir", gnupg, "--kill", "all"], check=False, capture_output=True)
    return certificate, reference


def start_mutual_tls_registry(scratch, procs):
    """A docker-registry over TLS that demands a client certificate issued by a test CA,
    on the storage of the plain registry `start_registry` made. Returns (host, CA PEM,
    client certificate PEM, client key PEM)."""
    tls = os.path.join(scratch, "mtls")
    os.makedirs(tls)
    path = lambda name: os.path.join(tls, name)  # noqa: E731
    run = lambda *args: subprocess.run(args, check=True, capture_output=True, cwd=tls)  # noqa: E731
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=kiosk console CA")
    for name, usage in [("server", "serverAuth"), ("client", "clientAuth")]:
        run("openssl", "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=kiosk console {name}")
        with open(path(f"{name}.ext"), "w") as f:
            f.write(f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"
                    + ("subjectAltName=IP:127.0.0.1\n" if name == "server" else ""))
        run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    port = free_port()
    config = path("config.yml")
    with open(config, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n"
                f"  filesystem:\n    rootdirectory: {scratch}/registry/storage\nhttp:\n  addr: 127.0.0.1:{port}\n"
                f"  secret: kiosk-ci\n  tls:\n    certificate: {path('server.pem')}\n    key: {path('server.key')}\n"
                f"    clientcas:\n      - {path('ca.pem')}\n")
    log = path("registry.log")
    reg = subprocess.Popen(["docker-registry", "serve", config], stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    procs.append(reg)

    def listening():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for("docker-registry (mutual TLS)", listening, 15, reg, log)
    read = lambda name: open(path(name)).read()  # noqa: E731
    return f"127.0.0.1:{port}", read("ca.pem"), read("client.pem"), read("client.key")


def private_apps_flow(check, tokens, scratch, registry, procs, sign_in, sign_out):
    page = check.page
    print("==> private apps: the operator's switch, a tenant's mutual-TLS registry, key, registration and install")
    certificate, pushed = publish_private_app(scratch, registry)
    mtls_host, ca_pem, client_pem, client_key = start_mutual_tls_registry(scratch, procs)
    reference = pushed.replace(registry, mtls_host, 1)
    sign_in(check, tokens["OPERATOR_TOKEN"], "Partners")
    page.get_by_role("navigation").get_by_role("link", name="Private apps").click()
    expect(page.get_by_role("heading", name="Private apps", level=1)).to_be_visible()
    form = page.locator("form", has=page.get_by_role("heading", name="Set a policy"))
    form.get_by_label("Tenant (empty: every tenant)").fill("demo")
    form.get_by_label("Private apps on").check()
    form.get_by_label("Most private apps (0-1000)").fill("2")
    form.get_by_label("Non-public ranges its registries may be on (CIDR, comma-separated)").fill("0.0.0.0/0")
    form.get_by_role("button", name="Save policy").click()
    text = check.problem()
    assert "invalid-private-app-policy" in text and "openRanges/0" in text, text
    form.get_by_label("Non-public ranges its registries may be on (CIDR, comma-separated)").fill("127.0.0.1/32")
    form.get_by_label("Plain-HTTP registries allowed").check()
    form.get_by_role("button", name="Save policy").click()
    expect(page.get_by_text("Saved for tenant demo: Private apps are on: up to 2")).to_be_visible()
    check.axe("operator private apps")
    check.screenshot("operator-private-apps")
    sign_out(check)

    sign_in(check, tokens["TENANT_TOKEN"], "Catalog")
    page.get_by_role("navigation").get_by_role("link", name="Own apps").click()
    expect(page.get_by_role("heading", name="Own apps", level=1)).to_be_visible()
    expect(page.get_by_text("Private apps are on: up to 2")).to_be_visible()
    connect = page.locator("form", has=page.get_by_role("heading", name="Connect a registry"))
    # A registry on a private address the operator did not open: the API's refusal.
    connect.get_by_label("Host (host[:port])").fill("10.0.0.7:5000")
    connect.get_by_role("button", name="Connect registry").click()
    text = check.problem()
    assert "registry-not-allowed" in text and "private" in text, text
    # The registry demands a client certificate: without one, registration fails at the
    # TLS handshake; with it (and the registry's CA), it succeeds.
    connect.get_by_label("Host (host[:port])").fill(mtls_host)
    connect.get_by_label("CA certificates (PEM), if not a public CA").fill(ca_pem)
    connect.get_by_role("button", name="Connect registry").click()
    expect(page.get_by_text(f"Connected {mtls_host}.")).to_be_visible()
    add = page.locator("form", has=page.get_by_role("heading", name="Add a certificate"))
    add.get_by_label("OpenPGP public certificate (armoured: gpg --armor --export) (required)").fill(certificate)
    add.get_by_role("button", name="Add certificate").click()
    expect(add.locator(".done")).to_contain_text("Registered")
    register = page.locator("form", has=page.get_by_role("heading", name="Register a version"))
    register.get_by_label("App name (the app is ~demo/name) (required)").fill("notes")
    register.get_by_label("Reference (host/repository:tag on one of your registries) (required)").fill(reference)
    register.get_by_role("button", name="Register version").click()
    text = check.problem()
    assert "registry-unavailable" in text and "TLS handshake" in text, text
    connect.get_by_label("Host (host[:port])").fill(mtls_host)
    connect.get_by_label("CA certificates (PEM), if not a public CA").fill(ca_pem)
    connect.get_by_label("Client certificate (PEM), if the registry demands one").fill(client_pem)
    connect.get_by_label("Client key (PEM, write-only)").fill(client_key)
    connect.get_by_role("button", name="Connect registry").click()
    expect(page.get_by_text(f"Connected {mtls_host} with a client certificate.")).to_be_visible()
    # The key is gone from the form and never came back in an answer.
    key_body = client_key.splitlines()[1]
    values = page.evaluate("() => [...document.querySelectorAll('input, textarea')].map(e => e.value)")
    assert not any(key_body in v for v in values), "the client key stayed in the form"
    leaked = [url for url, body in check.responses if key_body in body]
    assert not leaked, f"the client key is in the response of {leaked[0]}"
    register.get_by_role("button", name="Register version").click()
    expect(register.locator(".done")).to_contain_text("Registered ~demo/notes 1.0.0")
    check.axe("tenant own apps")
    check.screenshot("own-apps")
    register.get_by_role("link", name="Open it to install").click()
    expect(page.get_by_role("heading", name="Demo Notes", level=1)).to_be_visible()
    page.get_by_role("button", name="Install 1.0.0").click()
    expect(page).to_have_url(re.compile(r"#/installations/[0-9a-f-]+$"))
    installs = api(check.base, tokens["TENANT_TOKEN"], "GET", "/v1/tenants/demo/installations?limit=1000")
    assert any(i["app"] == "~demo/notes" for i in installs["items"]), installs
    check.axe("a private app installed")
    check.screenshot("own-app-installed")
    sign_out(check)
    # The partner's catalog does not list it.
    partner_catalog = api(check.base, tokens["PARTNER_TOKEN"], "GET", "/v1/catalog/apps?limit=1000")
    assert all(not a["app"].startswith("~") for a in partner_catalog["items"]), partner_catalog
