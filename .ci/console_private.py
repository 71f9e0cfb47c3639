"""The console's flow for tenants' own apps (issue 30), run by .ci/console: the operator
switches private apps on for tenant `demo` on its "Private apps" page (a bad range
first, refused naming the field); `demo` builds and signs an app with `kiosk publish`,
then on its "Own apps" page is refused a registry on a private address, connects the
real registry, adds its gpg key, registers the app, opens it and installs it. The
other tenant's catalog never shows it."""

import json
import os
import re
import subprocess

from demo_server import GUESTS, ROOT, api

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


def private_apps_flow(check, tokens, scratch, registry, sign_in, sign_out):
    page = check.page
    print("==> private apps: the operator's switch, a tenant's registry, key, registration and install")
    certificate, reference = publish_private_app(scratch, registry)
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
    connect.get_by_label("Host (host[:port])").fill(registry)
    connect.get_by_label("Plain HTTP (only if the operator allows it)").check()
    connect.get_by_role("button", name="Connect registry").click()
    expect(page.get_by_text(f"Connected {registry}.")).to_be_visible()
    add = page.locator("form", has=page.get_by_role("heading", name="Add a certificate"))
    add.get_by_label("OpenPGP public certificate (armoured: gpg --armor --export) (required)").fill(certificate)
    add.get_by_role("button", name="Add certificate").click()
    expect(add.locator(".done")).to_contain_text("Registered")
    register = page.locator("form", has=page.get_by_role("heading", name="Register a version"))
    register.get_by_label("App name (the app is ~demo/name) (required)").fill("notes")
    register.get_by_label("Reference (host/repository:tag on one of your registries) (required)").fill(reference)
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
