// The operator's views of the console: the estate's lists (partners, tenants, tokens,
// registries, entitlements, installations, audit), a partner, limits and the egress
// policy, and the forms that create tenants and tokens. Imported by console.js, which
// hands it its helpers once (`useConsole`).
// @ts-check

import { h, put, nextId } from "./dom.js";

/** console.js's helpers (its API client, routing, tables and buttons). */
let api, enc, appPath, setTitle, dataTable, actionButton, problemBox;

/** Takes console.js's helpers; called once, before any view. */
export function useConsole(ui) {
  ({ api, enc, appPath, setTitle, dataTable, actionButton, problemBox } = ui);
}

const OPERATOR_LISTS = {
  partners: ["Partners", "/v1/partners", ["name", "display", "disabled", "apps", "certificates", "createdMs"]],
  tenants: ["Tenants", "/v1/tenants", ["id", "display", "suspended", "installations", "kvBytes", "createdMs"]],
  tokens: ["Tokens", "/v1/tokens", ["id", "role", "scope", "label", "createdMs", "expiresMs", "revoked", "expired"]],
  registries: ["Registries", "/v1/registries", null],
  entitlements: ["Entitlements", "/v1/entitlements", null],
  installations: ["Installations", "/v1/installations", null],
  audit: ["Audit", "/v1/audit", ["id", "atMs", "actor", "action", "target", "detail"]],
};

export async function viewOperatorList(main, m, query) {
  const [title, path, columns] = OPERATOR_LISTS[m[1]];
  setTitle(title);
  const after = query.get("after");
  const r = await api("GET", `${path}${after ? `?after=${enc(after)}` : ""}`);
  const items = Array.isArray(r) ? r : r.items;
  put(main, h("h1", { text: title }));
  if (m[1] === "tenants") put(main, createTenantForm());
  if (m[1] === "tokens") put(main, createTokenForm());
  const link = m[1] === "partners" ? (p) => `#/operator/partners/${enc(p.name)}` : null;
  const out = h("div");
  const actions = m[1] === "tokens"
    ? (tok) => (tok.revoked ? [] : [actionButton(`Revoke ${tok.id}`, () => api("DELETE", `/v1/tokens/${enc(tok.id)}`), out)])
    : null;
  put(main, out, items.length ? dataTable(items, columns, `${items.length} shown`, link, actions) : h("p", { text: "None." }));
  if (r.next) put(main, h("p", {}, h("a", { href: `#/operator/${m[1]}?after=${enc(r.next)}`, text: "Next page" })));
}

export async function viewOperatorPartner(main, m) {
  const name = decodeURIComponent(m[1]);
  const [partner, certs, versions] = await Promise.all([
    api("GET", `/v1/partners/${enc(name)}`),
    api("GET", `/v1/partners/${enc(name)}/certificates`),
    api("GET", "/v1/versions?limit=1000"),
  ]);
  const theirs = versions.items.filter((v) => v.app.startsWith(`${name}/`));
  const out = h("div");
  const verb = (v, action) => () => api("POST", `/v1/apps/${appPath(v.app)}/versions/${enc(v.version)}/${action}`);
  const versionActions = (v) => [
    actionButton(`${v.yanked ? "Unyank" : "Yank"} ${v.app} ${v.version}`, verb(v, v.yanked ? "unyank" : "yank"), out),
    actionButton(`${v.quarantined ? "Release" : "Quarantine"} ${v.app} ${v.version}`, verb(v, v.quarantined ? "release" : "quarantine"), out),
  ];
  setTitle(`Partner ${name}`);
  put(main, h("h1", { text: `${partner.display} (${partner.name})` }),
    h("p", { text: partner.disabled ? "Disabled: registers nothing; its apps are hidden and do not run." : "Enabled." }),
    h("h2", { text: "Certificates" }),
    certs.items.length ? dataTable(certs.items, null) : h("p", { text: "No certificate registered over the API." }),
    h("h2", { text: "Versions" }), out,
    theirs.length ? dataTable(theirs, ["app", "version", "yanked", "quarantined", "quarantineReason", "signer", "createdMs"], null, null, versionActions) : h("p", { text: "None." }),
    versions.next ? h("p", { class: "muted", text: "Of the first 1,000 versions registered; `kiosk admin versions list` lists them all." }) : null);
}

export async function viewOperatorLimits(main) {
  setTitle("Limits");
  const [overview, apps, tenants] = await Promise.all([api("GET", "/v1/limits"), api("GET", "/v1/limits/apps"), api("GET", "/v1/limits/tenants")]);
  put(main, h("h1", { text: "Limits" }), h("h2", { text: "In effect" }), h("pre", { text: JSON.stringify(overview, null, 2) }),
    h("h2", { text: "Per app" }), apps.items.length ? dataTable(apps.items, null) : h("p", { text: "No app override." }),
    h("h2", { text: "Per tenant" }), tenants.items.length ? dataTable(tenants.items, null) : h("p", { text: "No tenant override." }));
}

export async function viewOperatorEgress(main) {
  setTitle("Egress");
  const policy = await api("GET", "/v1/egress");
  const layers = [policy.everyPartner ? { partner: "every partner", ...policy.everyPartner } : null, ...policy.partners].filter(Boolean);
  const shown = layers.map((l) => ({ partner: l.partner, enabled: l.enabled ? "on" : "off", deny: l.deny.join(", ") || "none", updatedMs: l.updatedMs }));
  put(main, h("h1", { text: "Egress" }),
    h("p", { text: "Where apps' outbound requests may go. The config file's [egress] decides first (it alone opens private addresses or plain HTTP); the policies below only narrow it, from each app's next call." }),
    h("h2", { text: "The config file's [egress]" }), h("pre", { text: JSON.stringify(policy.config, null, 2) }),
    h("h2", { text: "Set over the API" }),
    shown.length ? dataTable(shown, ["partner", "enabled", "deny", "updatedMs"]) : h("p", { text: "No policy set over the API." }),
    simpleForm("Set a policy", [
      { name: "partner", label: "Partner (empty: every partner)" },
      { name: "enabled", label: "Outbound requests", options: ["on", "off"] },
      { name: "deny", label: "Hosts denied (comma-separated; *.example.com for a domain)" },
    ], "Save policy", async (v) => {
      const deny = (v.deny || "").split(",").map((x) => x.trim()).filter(Boolean);
      const path = v.partner ? `/v1/egress/partners/${enc(v.partner)}` : "/v1/egress";
      await api("PUT", path, { enabled: v.enabled === "on", deny });
      return h("p", { class: "done", role: "status", text: `Egress policy saved for ${v.partner || "every partner"}. Reload to see it listed.` });
    }));
}

function simpleForm(heading, fields, submit, onDone) {
  const out = h("div");
  const inputs = {};
  const form = h("form", { novalidate: true }, h("h2", { text: heading }));
  for (const f of fields) {
    const id = nextId(f.name);
    const input = f.options
      ? h("select", { id, name: f.name }, f.options.map((o) => h("option", { value: o, text: o })))
      : h("input", { id, name: f.name, type: "text", autocomplete: "off", spellcheck: "false", required: f.required || undefined });
    inputs[f.name] = input;
    form.append(h("div", { class: "field" }, h("label", { for: id }, f.label, f.required ? h("span", { class: "req", text: " (required)" }) : null), input));
  }
  form.append(h("div", { class: "actions" }, h("button", { type: "submit", text: submit })), out);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    try {
      const values = Object.fromEntries(Object.entries(inputs).map(([k, i]) => [k, i.value.trim() || null]));
      out.append(await onDone(values));
    } catch (err) {
      out.append(problemBox(err, "h3"));
    }
  });
  return h("section", { class: "panel" }, form);
}

function createTenantForm() {
  return simpleForm("Create a tenant", [{ name: "id", label: "Tenant id", required: true }, { name: "display", label: "Display name" }], "Create tenant",
    async (v) => {
      const r = await api("POST", "/v1/tenants", { id: v.id, display: v.display });
      return h("p", { class: "done", role: "status", text: `Created tenant ${r.id ?? v.id}. Reload to see it listed.` });
    });
}

function createTokenForm() {
  return simpleForm("Issue a token", [{ name: "role", label: "Role", options: ["tenant", "partner", "operator"] }, { name: "scope", label: "Tenant id or partner name" }, { name: "label", label: "Label" }], "Issue token",
    async (v) => {
      const r = await api("POST", "/v1/tokens", { role: v.role, scope: v.role === "operator" ? null : v.scope, label: v.label });
      const id = nextId("secret");
      return h("div", { class: "done", role: "status" },
        h("p", { text: `Token ${r.id} (${r.role}${r.scope ? ` ${r.scope}` : ""}). Its secret is shown this once:` }),
        h("label", { for: id, text: "Token secret" }), h("input", { id, type: "text", readonly: true, value: r.token, size: 60 }));
    });
}
