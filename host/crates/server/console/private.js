// The console's pages for tenants' own apps (issue 30): a tenant's "Own apps" (the
// operator's policy for it, its registries, its certificates, registering a version,
// its private apps) and the operator's "Private apps" switch. Imported by console.js,
// which hands it its helpers (`ui`); like it, nothing fetched but this server's API,
// and text from the API only ever set as text, never parsed as HTML. Secrets (password,
// token, client key) are write-only fields, never filled in from the API.
// @ts-check

/** A form of `fields` ({name, label, kind: "text"|"password"|"textarea"|"checkbox",
 * required, secret}) whose submit runs `onDone(values)` and shows its result or problem;
 * `secret` fields are emptied once it succeeded. */
function form(ui, heading, fields, submit, onDone) {
  const { h } = ui;
  const out = h("div");
  const inputs = {};
  const node = h("form", { novalidate: true }, h("h2", { text: heading }));
  for (const f of fields) {
    const id = ui.nextId(f.name);
    const input = f.kind === "textarea"
      ? h("textarea", { id, name: f.name, rows: 4, cols: 60, spellcheck: "false", autocomplete: "off" })
      : h("input", { id, name: f.name, type: f.kind || "text", autocomplete: f.kind === "password" ? "new-password" : "off", spellcheck: "false", required: f.required || undefined });
    inputs[f.name] = input;
    const label = h("label", { for: id }, f.label, f.required ? h("span", { class: "req", text: " (required)" }) : null);
    node.append(h("div", { class: f.kind === "checkbox" ? "field check" : "field" }, f.kind === "checkbox" ? [input, label] : [label, input]));
  }
  node.append(h("div", { class: "actions" }, h("button", { type: "submit", text: submit })), out);
  node.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    try {
      const values = Object.fromEntries(Object.entries(inputs).map(([k, i]) =>
        [k, i.type === "checkbox" ? i.checked : (i.value.trim() || null)]));
      out.append(await onDone(values));
      // Write-only values leave the page once the server has them.
      for (const f of fields) if (f.secret) inputs[f.name].value = "";
    } catch (err) {
      out.append(ui.problemBox(err, "h3"));
    }
  });
  return h("section", { class: "panel" }, node);
}

/** Lines or commas of `text` as a list. */
const list = (text) => (text || "").split(/[\s,]+/).map((x) => x.trim()).filter(Boolean);

/** The policy in words. */
function policyText(p) {
  if (!p.enabled) return "Private apps are off: the operator has not switched them on for you.";
  const ranges = p.openRanges.length ? `registries may be on ${p.openRanges.join(", ")} besides public addresses` : "registries must be on public addresses";
  return `Private apps are on: up to ${p.maxApps}; ${ranges}; ${p.plainHttp ? "plain HTTP allowed" : "HTTPS only"}.`;
}

/** `#/own-apps`: the tenant's own apps. */
export async function viewOwnApps(main, ui) {
  const { h, api, enc } = ui;
  const tenant = ui.state.who.scope;
  const base = `/v1/tenants/${enc(tenant)}`;
  const [policy, registries, certs, apps] = await Promise.all([
    api("GET", `${base}/private-apps`), api("GET", `${base}/registries`),
    api("GET", `${base}/certificates`), api("GET", `${base}/apps`),
  ]);
  ui.setTitle("Own apps");
  const out = h("div");
  const done = (text) => h("p", { class: "done", role: "status", text });
  ui.put(main, h("h1", { text: "Own apps" }), h("p", { text: policyText(policy) }),
    h("h2", { text: "Your apps" }),
    apps.items.length
      ? ui.dataTable(apps.items.map((a) => ({ app: a.app, name: a.name, versions: a.versions.map((v) => v.version).join(", ") })),
        ["app", "name", "versions"], null, (a) => `#/apps/${ui.appPath(a.app)}`)
      : h("p", { text: "None yet." }));
  if (!policy.enabled) return;
  ui.put(main,
    h("h2", { text: "Registries" }), out,
    registries.items.length
      ? ui.dataTable(registries.items, ["host", "insecure", "caPemSet", "username", "credentialsSet", "clientCertificateSet", "updatedMs"], null, null,
        (r) => [ui.actionButton(`Disconnect ${r.host}`, () => api("DELETE", `${base}/registries/${enc(r.host)}`), out)])
      : h("p", { text: "None connected." }),
    form(ui, "Connect a registry", [
      { name: "host", label: "Host (host[:port])", required: true },
      { name: "insecure", label: "Plain HTTP (only if the operator allows it)", kind: "checkbox" },
      { name: "caPem", label: "CA certificates (PEM), if not a public CA", kind: "textarea" },
      { name: "username", label: "Username" },
      { name: "password", label: "Password (write-only)", kind: "password", secret: true },
      { name: "token", label: "Token, instead of a username (write-only)", kind: "password", secret: true },
      { name: "clientCertificatePem", label: "Client certificate (PEM), if the registry demands one", kind: "textarea" },
      { name: "clientKeyPem", label: "Client key (PEM, write-only)", kind: "textarea", secret: true },
    ], "Connect registry", async (v) => {
      const { host, ...body } = v;
      if (!host) throw new ui.ProblemError(0, { title: "A host is needed", status: 422, field: "host", detail: "give the registry's host[:port]" });
      const r = await api("PUT", `${base}/registries/${enc(host)}`, Object.fromEntries(Object.entries(body).filter(([, x]) => x !== null && x !== false)));
      return done(`Connected ${r.host}${r.clientCertificateSet ? " with a client certificate" : ""}. Reload to see it listed.`);
    }),
    h("h2", { text: "Certificates that sign your apps" }),
    certs.items.length ? ui.dataTable(certs.items, ["fingerprint", "state", "userIds"]) : h("p", { text: "None yet." }),
    form(ui, "Add a certificate", [{ name: "certificate", label: "OpenPGP public certificate (armoured: gpg --armor --export)", kind: "textarea", required: true }],
      "Add certificate", async (v) => {
        const r = await api("POST", `${base}/certificates`, { certificate: v.certificate || "" });
        return done(`Registered ${r.fingerprints.join(", ")}.`);
      }),
    form(ui, "Register a version", [
      { name: "name", label: `App name (the app is ~${tenant}/name)`, required: true },
      { name: "reference", label: "Reference (host/repository:tag on one of your registries)", required: true },
    ], "Register version", async (v) => {
      const r = await api("POST", `${base}/apps/${enc(v.name || "")}/versions`, { reference: v.reference || "" });
      return h("p", { class: "done", role: "status" }, `Registered ${r.app} ${r.version}, signed by ${r.signer}. `,
        h("a", { href: `#/apps/${ui.appPath(r.app)}`, text: "Open it to install" }));
    }));
}

/** `#/operator/private-apps`: the operator's switch. */
export async function viewOperatorPrivateApps(main, ui) {
  const { h, api, enc } = ui;
  const every = await api("GET", "/v1/private-apps");
  ui.setTitle("Private apps");
  ui.put(main, h("h1", { text: "Private apps" }),
    h("p", { text: "Tenants' own apps: off unless switched on here, per tenant or for every tenant without its own policy. A tenant with them on connects registries, adds certificates and registers apps as ~tenant/name, seen by it alone." }),
    h("h2", { text: "Every tenant" }), h("p", { text: policyText(every) }),
    form(ui, "Set a policy", [
      { name: "tenant", label: "Tenant (empty: every tenant)" },
      { name: "enabled", label: "Private apps on", kind: "checkbox" },
      { name: "maxApps", label: "Most private apps (0-1000)" },
      { name: "openRanges", label: "Non-public ranges its registries may be on (CIDR, comma-separated)" },
      { name: "plainHttp", label: "Plain-HTTP registries allowed", kind: "checkbox" },
    ], "Save policy", async (v) => {
      const body = { enabled: v.enabled, plainHttp: v.plainHttp, openRanges: list(v.openRanges) };
      if (v.maxApps) body.maxApps = Number(v.maxApps);
      const path = v.tenant ? `/v1/tenants/${enc(v.tenant)}/private-apps` : "/v1/private-apps";
      const r = await api("PUT", path, body);
      return h("p", { class: "done", role: "status", text: `Saved for ${r.tenant === "*" ? "every tenant" : `tenant ${r.tenant}`}: ${policyText(r)}` });
    }));
}
