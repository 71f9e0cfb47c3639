// The Kiosk console: one ES module, no framework, no build step, nothing fetched but
// this server's API. Every view reads and writes through the same typed HTTP API as
// curl does (/v1/...), with the bearer token kept in session storage (never in a URL,
// never in local storage). Text from the API is only ever set as text (textContent,
// attribute values), never parsed as HTML.
//
// Type-checked by `tsc --noEmit` (.ci/contract, tests/client/tsconfig.console.json) with
// the API's documents as types generated from the served OpenAPI document
// (tests/client/schema.d.ts, by openapi-typescript); the browser runs this file as is.
// @ts-check

/** @typedef {import("../../../../tests/client/schema").components["schemas"]} Schemas */

import { changelogPanel, changelogText, iconImage, publisherView } from "./catalog.js";
import { viewOperatorPrivateApps, viewOwnApps } from "./private.js";
import { viewOperatorSinks } from "./sinks.js";
import { h, put, scroller, nextId, when } from "./dom.js";
import { viewUsage } from "./usage.js";
import { useConsole, viewOperatorEgress, viewOperatorLimits, viewOperatorList, viewOperatorPartner } from "./operator.js";
import { pointerToken, resolveRef, schemaForm } from "./forms.js";

const TOKEN_KEY = "kiosk.console.token";

// --- Helpers (the DOM's are in dom.js) ------------------------------------------------

// A status message lasts until the next navigation after the one it announced.
let sayFresh = false;
function say(message) {
  const status = document.getElementById("status");
  status.textContent = message;
  sayFresh = true;
}

// --- the API --------------------------------------------------------------------------

/** A failed request, with its problem+json (or a problem made from the status). */
class ProblemError extends Error {
  constructor(status, body) {
    /** @type {Schemas["Problem"]} */
    const problem = body && typeof body === "object" && !Array.isArray(body)
      ? body
      : { type: "about:blank", title: `HTTP ${status}`, status, detail: "the server answered without a problem document" };
    super(problem.detail || problem.title);
    this.problem = problem;
    this.status = status;
  }
}

const token = () => sessionStorage.getItem(TOKEN_KEY);

async function api(method, path, body) {
  const headers = { Accept: "application/json, application/problem+json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, {
      method, headers, cache: "no-store", credentials: "omit", redirect: "error",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ProblemError(0, { type: "urn:kiosk:console:network", title: "The server could not be reached", status: 0, detail: String(e.message || e) });
  }
  const type = res.headers.get("content-type") || "";
  const data = type.includes("json") ? await res.json().catch(() => null) : null;
  if (!res.ok) {
    if (res.status === 401 && path !== "/v1/whoami") {
      // The token stopped working (revoked, expired): back to sign-in, saying why.
      sessionStorage.removeItem(TOKEN_KEY);
      state.who = null;
      const err = new ProblemError(res.status, data);
      queueMicrotask(() => route(err));
      throw err;
    }
    throw new ProblemError(res.status, data);
  }
  return data;
}

/** A path segment: encoded, and never `.` or `..` (which fetch would resolve, reaching
 * another path with the caller's token). */
function enc(segment) {
  const s = String(segment);
  if (s === "." || s === ".." || s === "") throw new ProblemError(0, { title: "Not found", status: 404, detail: `not a valid name: ${JSON.stringify(s)}` });
  return encodeURIComponent(s);
}
const appPath = (app) => app.split("/").map(enc).join("/");

/** Every item of a list (a page `{items, next}`), following `next` 1,000 at a time. */
async function allItems(path) {
  const sep = path.includes("?") ? "&" : "?";
  let items = [];
  let after = null;
  for (let page = 0; page < 100; page++) {
    const r = await api("GET", `${path}${sep}limit=1000${after ? `&after=${encodeURIComponent(after)}` : ""}`);
    items = items.concat(r.items);
    if (!r.next) break;
    after = r.next;
  }
  return items;
}

/** A problem, as the API gave it: title, detail, and every member that helps. */
function problemBox(err, heading = "h2") {
  /** @type {Partial<Schemas["Problem"]>} */
  const p = err instanceof ProblemError ? err.problem : { title: "Unexpected error", detail: String(err) };
  const facts = [];
  const fact = (name, value) => { if (value !== undefined && value !== null && value !== "") facts.push(h("dt", { text: name }), h("dd", { text: value })); };
  fact("status", p.status);
  fact("type", p.type);
  fact("field", p.field);
  fact("call id", p.callId);
  const box = h("div", { class: "problem", role: "alert" },
    h(heading, { text: p.title || "Request failed" }),
    h("p", { text: p.detail || "" }),
    facts.length ? h("dl", {}, facts) : null,
    Array.isArray(p.errors) && p.errors.length ? h("ul", {}, p.errors.map((e) => h("li", { text: e }))) : null);
  return box;
}


// --- chrome: sign-in, navigation -------------------------------------------------------

const state = { who: null };

const NAV = {
  tenant: [["#/catalog", "Catalog"], ["#/installations", "Installations"], ["#/usage", "Usage"], ["#/own-apps", "Own apps"]],
  partner: [["#/catalog", "Catalog"], ["#/partner/apps", "Our apps"], ["#/partner/usage", "Usage"]],
  operator: [["#/catalog", "Catalog"], ["#/operator/partners", "Partners"], ["#/operator/tenants", "Tenants"],
    ["#/operator/tokens", "Tokens"], ["#/operator/registries", "Registries"], ["#/operator/entitlements", "Entitlements"],
    ["#/operator/limits", "Limits"], ["#/operator/egress", "Egress"], ["#/operator/private-apps", "Private apps"], ["#/operator/installations", "Installations"], ["#/operator/usage", "Usage"], ["#/operator/sinks", "Sinks"], ["#/operator/audit", "Audit"]],
};

function renderChrome() {
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  nav.replaceChildren();
  who.replaceChildren();
  if (!state.who) return;
  const here = location.hash.split("?")[0];
  nav.append(h("ul", {}, (NAV[state.who.role] || []).map(([href, text]) =>
    h("li", {}, h("a", { href, text, "aria-current": here.startsWith(href) ? "page" : undefined })))));
  who.append(
    h("span", { text: `${state.who.role}${state.who.scope ? ` ${state.who.scope}` : ""}` }),
    h("button", { type: "button", class: "secondary", text: "Sign out", onclick: signOut }));
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.who = null;
  renderChrome();
  say("Signed out.");
  location.hash = "#/";
  route();
}

function viewSignIn(main, reason) {
  setTitle("Sign in");
  const id = nextId("token");
  const input = h("input", { id, type: "password", name: "token", autocomplete: "off", required: true, spellcheck: "false", "aria-describedby": `${id}-hint` });
  const out = h("div");
  const form = h("form", { novalidate: true },
    h("div", { class: "field" },
      h("label", { for: id, text: "API token" }),
      input,
      h("p", { id: `${id}-hint`, class: "hint", text: "A bearer token from your operator. It is kept in this tab's session storage only." })),
    h("div", { class: "actions" }, h("button", { type: "submit", text: "Sign in" })),
    out);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    const value = input.value.trim();
    if (!value) {
      out.append(problemBox(new ProblemError(0, { title: "Enter a token", detail: "the token is empty", field: "token" })));
      input.focus();
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, value);
    try {
      state.who = /** @type {Schemas["Identity"]} */ (await api("GET", "/v1/whoami"));
      input.value = "";
      renderChrome();
      say(`Signed in as ${state.who.role}${state.who.scope ? ` ${state.who.scope}` : ""}.`);
      const home = state.who.role === "tenant" ? "#/catalog" : state.who.role === "partner" ? "#/partner/apps" : "#/operator/partners";
      if (location.hash === home) route(); else location.hash = home;
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      out.append(problemBox(err));
      input.focus();
    }
  });
  put(main, h("h1", { text: "Sign in to Kiosk" }), reason ? problemBox(reason) : null, form);
}

// The title of the view being built; set when that view is shown (a stale view's is not).
let pendingTitle = "Kiosk console";
function setTitle(text) {
  pendingTitle = `${text} · Kiosk console`;
}

// --- tenant, partner, anyone: the catalog ----------------------------------------------

async function viewCatalog(main, _m, query) {
  setTitle("Catalog");
  const q = query.get("q") || "";
  const category = query.get("category") || "";
  const params = new URLSearchParams();
  if (q) params.set("q", q);
  if (category) params.set("category", category);
  const [categories, apps] = await Promise.all([allItems("/v1/catalog/categories"), allItems(`/v1/catalog/apps${params.toString() ? `?${params}` : ""}`)]);
  const qId = nextId("q");
  const cId = nextId("cat");
  const search = h("input", { id: qId, type: "search", name: "q", value: q, autocomplete: "off" });
  const select = h("select", { id: cId, name: "category" },
    h("option", { value: "", text: "All categories" }),
    categories.map((c) => h("option", { value: c, text: c, selected: c === category })));
  const form = h("form", { role: "search", "aria-label": "Catalog" },
    h("div", { class: "actions" },
      h("div", { class: "field" }, h("label", { for: qId, text: "Search" }), search),
      h("div", { class: "field" }, h("label", { for: cId, text: "Category" }), select),
      h("button", { type: "submit", text: "Search" })));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams();
    if (search.value.trim()) p.set("q", search.value.trim());
    if (select.value) p.set("category", select.value);
    location.hash = `#/catalog${p.toString() ? `?${p}` : ""}`;
  });
  const list = apps.length
    ? h("ul", { class: "cards", "aria-label": "Apps" }, apps.map((a) => h("li", {},
      h("div", { class: "card-head" }, a.iconUrl ? iconImage(a.iconUrl, `Icon of ${a.name}`, token) : null,
        h("h2", {}, h("a", { href: `#/apps/${a.app}`, text: a.name }))),
      h("p", { class: "muted", text: a.app }),
      a.publisher ? h("p", { class: "muted", text: `By ${a.publisher.name}` }) : null,
      h("p", { text: a.description }),
      h("p", {}, a.categories.map((c) => h("span", { class: "tag", text: c }))))))
    : h("p", { text: "No app matches." });
  put(main, h("h1", { text: "Catalog" }), form,
    h("p", { class: "muted", text: `${apps.length} app${apps.length === 1 ? "" : "s"}` }), list);
}

function skuTable(skus) {
  return scroller(h("table", {},
    h("caption", { class: "muted", text: "What each call or report is billed by" }),
    h("thead", {}, h("tr", {}, ["SKU", "Unit", "Metered", "Description"].map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, skus.map((sku) => h("tr", {},
      h("td", { text: sku.id }), h("td", { text: sku.unit || "" }),
      h("td", { text: sku.operations?.length ? `by Kiosk per call of ${sku.operations.join(", ")}` : "by the app" }),
      h("td", { text: sku.description || "" }))))));
}

async function viewApp(main, m) {
  const app = `${m[1]}/${m[2]}`;
  const [detail, versions] = await Promise.all([
    api("GET", `/v1/catalog/apps/${appPath(app)}`),
    allItems(`/v1/catalog/apps/${appPath(app)}/versions`),
  ]);
  setTitle(detail.name);
  put(main, h("div", { class: "card-head" }, detail.iconUrl ? iconImage(detail.iconUrl, `Icon of ${detail.name}`, token, 64) : null,
    h("h1", { text: detail.name })), h("p", { class: "muted", text: detail.app }), publisherView(detail.publisher),
    h("p", { text: detail.description }),
    h("p", {}, detail.categories.map((c) => h("span", { class: "tag", text: c }))));
  const installable = versions.filter((v) => !v.yanked && !v.quarantined);
  put(main, h("h2", { text: "Versions" }), scroller(h("table", {},
    h("caption", { class: "muted", text: `Versions of ${detail.app}` }),
    h("thead", {}, h("tr", {}, ["Version", "State", "Registered", "Digest"].map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, versions.map((v) => h("tr", {},
      h("td", { text: v.version }),
      h("td", { text: v.quarantined ? `quarantined${v.quarantineReason ? `: ${v.quarantineReason}` : ""}` : v.yanked ? "yanked" : v.version === detail.latest ? "latest" : "installable" }),
      h("td", { text: when(v.createdMs) }), h("td", { text: v.digest.slice(0, 19) + "…" })))))));
  if (!detail.latest) {
    put(main, h("p", { text: "No version can be installed: every version is yanked or quarantined." }));
    return;
  }
  const section = h("section", { "aria-labelledby": "version-heading" });
  put(main, section);
  let shown = 0;
  async function showVersion(version) {
    const mine = ++shown;
    const v = await api("GET", `/v1/catalog/apps/${appPath(app)}/versions/${enc(version)}`);
    if (mine !== shown) return; // another version was picked meanwhile
    section.replaceChildren(h("h2", { id: "version-heading", text: `Version ${v.version}` }));
    const lic = v.licensing || {};
    section.append(h("dl", { class: "facts" },
      h("dt", { text: "Licence model" }), h("dd", { text: `${lic.model || "—"}${lic.requiresEntitlement ? " (needs an entitlement from the operator)" : ""}` }),
      h("dt", { text: "Signed by" }), h("dd", { text: v.signer }),
      h("dt", { text: "Host API" }), h("dd", { text: v.hostApi })));
    if (v.changelog) section.append(h("h3", { text: "What's new" }), changelogText(v.changelog));
    section.append(h("h3", { text: "SKUs" }), skuTable(v.skus || []));
    const outbound = v.capabilities?.outbound || [];
    if (outbound.length) {
      // Consent before installing: where the app's requests go and which secrets go there.
      section.append(h("h3", { text: "Outbound requests" }),
        h("p", { text: "This app will contact:" }),
        h("ul", { "aria-label": "Destinations" }, outbound.map((o) => h("li", {
          text: describeDestination({ destination: o.destination || `config:${o.configUrl}`, receives: o.secrets || [] }),
        }))));
    }
    if (state.who?.role === "tenant") section.append(installForm(app, v));
  }
  if (installable.length > 1) {
    const id = nextId("ver");
    const pick = h("select", { id }, installable.map((v) => h("option", { value: v.version, text: v.version, selected: v.version === detail.latest })));
    pick.addEventListener("change", () => showVersion(pick.value).catch((e) => section.replaceChildren(problemBox(e))));
    main.insertBefore(h("div", { class: "field" }, h("label", { for: id, text: "Show version" }), pick), section);
  }
  await showVersion(detail.latest);
}

function installForm(app, version) {
  const form = schemaForm(version.configSchema, undefined, []);
  const out = h("div");
  const button = h("button", { type: "submit", text: `Install ${version.version}` });
  const el = h("form", { novalidate: true, "aria-labelledby": "install-heading" },
    h("h3", { id: "install-heading", text: "Install" }), form.element, h("div", { class: "actions" }, button), out);
  el.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    form.clearErrors();
    if (button.getAttribute("aria-disabled") === "true") return; // already submitting
    button.setAttribute("aria-disabled", "true");
    try {
      const created = await api("POST", `/v1/tenants/${enc(state.who.scope)}/installations`, { app, version: version.version, config: form.read() });
      form.clearSecrets();
      say(`Installed ${app} ${created.version}.`);
      location.hash = `#/installations/${enc(created.id)}`;
    } catch (err) {
      const unplaced = form.showErrors(err.problem?.errors);
      out.append(problemBox(err, "h4"));
      if (!err.problem?.errors?.length || unplaced.length === err.problem.errors.length) out.querySelector("[role=alert]")?.focus?.();
    } finally {
      button.removeAttribute("aria-disabled");
    }
  });
  return el;
}

// --- tenant: installations ----------------------------------------------------------------

/// One destination in the words a tenant reads: where, and the secrets it receives.
function describeDestination(d) {
  const where = d.destination.startsWith("config:") ? `the URL you set at ${d.destination.slice(7)}` : d.destination;
  const secrets = (d.receives || []).map((p) => p.replace(/^\//, ""));
  return secrets.length ? `${where}, and receives your ${secrets.join(", ")} there` : where;
}

/// An installation's outbound requests: the tenant's switch and the destinations it keeps.
async function egressForm(base) {
  const view = await api("GET", `${base}/egress`);
  const out = h("div");
  const onId = nextId("egress-on");
  const on = h("input", { id: onId, type: "checkbox", name: "enabled" });
  on.checked = view.enabled;
  const boxes = view.destinations.map((d) => {
    const id = nextId("dest");
    const box = h("input", { id, type: "checkbox", name: "destination", value: d.destination });
    box.checked = d.kept;
    return { d, box, id };
  });
  const form = h("form", { novalidate: true, "aria-labelledby": "egress-heading" },
    h("h2", { id: "egress-heading", text: "Outbound requests" }),
    h("div", { class: "field" }, on, h("label", { for: onId, text: "Allow this installation's outbound requests" })),
    h("fieldset", {}, h("legend", { text: "Destinations it may contact" }),
      boxes.map(({ d, box, id }) => h("div", { class: "field" }, box, h("label", { for: id, text: describeDestination(d) })))),
    h("div", { class: "actions" }, h("button", { type: "submit", text: "Save outbound settings" })), out);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    const kept = boxes.filter((b) => b.box.checked).map((b) => b.d.destination);
    try {
      await api("PUT", `${base}/egress`, { enabled: on.checked, destinations: kept.length === boxes.length ? null : kept });
      say("Outbound settings saved.");
      route();
    } catch (err) {
      out.append(problemBox(err, "h3"));
    }
  });
  return form;
}

async function viewInstallations(main) {
  setTitle("Installations");
  // By id from the API; shown in the order they were installed.
  const list = (await allItems(`/v1/tenants/${enc(state.who.scope)}/installations`)).sort((a, b) => a.createdMs - b.createdMs || (a.id < b.id ? -1 : 1));
  put(main, h("h1", { text: "Installations" }));
  if (!list.length) {
    put(main, h("p", {}, "Nothing installed yet. ", h("a", { href: "#/catalog", text: "Browse the catalog" }), "."));
    return;
  }
  put(main, scroller(h("table", {},
    h("caption", { class: "muted", text: `${list.length} installation${list.length === 1 ? "" : "s"}` }),
    h("thead", {}, h("tr", {}, ["App", "Version", "Upgrades", "Installed", "Changed"].map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, list.map((i) => h("tr", {},
      h("td", {}, h("a", { href: `#/installations/${enc(i.id)}`, text: i.app })),
      h("td", { text: i.version }), h("td", { text: i.upgradePolicy }),
      h("td", { text: when(i.createdMs) }), h("td", { text: when(i.updatedMs) })))))));
}

/** The JSON pointers of the `writeOnly` properties the schema declares (through nested
 * objects and local $refs): the secrets an installation may have set. */
function declaredSecrets(root, schema = root, pointer = "", depth = 0, out = []) {
  const sch = resolveRef(root, schema);
  if (depth > 16) return out;
  if (sch.writeOnly === true && pointer) out.push(pointer);
  for (const [k, child] of Object.entries(sch.properties || {})) declaredSecrets(root, child, `${pointer}/${pointerToken(k)}`, depth + 1, out);
  return out;
}

/** The configuration, each secret shown only as set or not set. */
function configView(config, secretsSet, declared = []) {
  const rows = [];
  const walk = (v, pointer) => {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      for (const [k, child] of Object.entries(v)) walk(child, `${pointer}/${pointerToken(k)}`);
    } else rows.push([pointer, JSON.stringify(v)]);
  };
  walk(config, "");
  for (const p of secretsSet) rows.push([p, true]);
  for (const p of declared) if (!secretsSet.includes(p)) rows.push([p, false]);
  rows.sort((a, b) => a[0].localeCompare(b[0]));
  return h("table", {},
    h("caption", { class: "muted", text: "Secrets are stored encrypted and never shown" }),
    h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Setting" }), h("th", { scope: "col", text: "Value" }))),
    h("tbody", {}, rows.map(([p, v]) => h("tr", {}, h("td", { text: p.slice(1) || "(root)" }),
      v === true ? h("td", {}, h("span", { class: "secret-set", text: "secret: set" }))
        : v === false ? h("td", {}, h("span", { class: "secret-unset", text: "secret: not set" }))
          : h("td", { text: v })))));
}

async function viewInstallation(main, m) {
  const id = decodeURIComponent(m[1]);
  const base = `/v1/tenants/${enc(state.who.scope)}/installations/${enc(id)}`;
  const inst = await api("GET", base);
  const version = await api("GET", `/v1/catalog/apps/${appPath(inst.app)}/versions/${enc(inst.version)}`).catch(() => null);
  setTitle(`${inst.app} installation`);
  put(main, h("h1", { text: `${inst.app} ${inst.version}` }),
    h("dl", { class: "facts" },
      h("dt", { text: "Installation" }), h("dd", { text: inst.id }),
      h("dt", { text: "Installed" }), h("dd", { text: when(inst.createdMs) }),
      h("dt", { text: "Upgrades by itself" }), h("dd", { text: inst.upgradePolicy })));
  put(main, h("h2", { text: "Configuration" }),
    configView(inst.config, inst.secretsSet, version ? declaredSecrets(version.configSchema || {}) : []));
  if ((version?.capabilities?.outbound || []).length) put(main, await egressForm(base));

  // Configure.
  if (version) {
    const form = schemaForm(version.configSchema, inst.config, inst.secretsSet);
    const out = h("div");
    const el = h("form", { novalidate: true, "aria-labelledby": "configure-heading" },
      h("h2", { id: "configure-heading", text: "Change the configuration" }), form.element,
      h("div", { class: "actions" }, h("button", { type: "submit", text: "Save configuration" })), out);
    el.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      out.replaceChildren();
      form.clearErrors();
      try {
        await api("PATCH", base, { config: form.read() });
        form.clearSecrets();
        say("Configuration saved.");
        route();
      } catch (err) {
        form.showErrors(err.problem?.errors);
        out.append(problemBox(err, "h3"));
      }
    });
    put(main, el);
  }

  // Try it.
  const ops = [...new Set((version?.skus || []).flatMap((sku) => sku.operations || []))];
  const opId = nextId("op");
  const inId = nextId("input");
  const opInput = h("input", { id: opId, type: "text", name: "operation", list: `${opId}-list`, value: ops[0] || "", required: true, autocomplete: "off", spellcheck: "false" });
  const input = h("textarea", { id: inId, name: "input", rows: "6", spellcheck: "false", "aria-describedby": `${inId}-hint` });
  input.value = "{}";
  const result = h("div");
  const tryForm = h("form", { novalidate: true, "aria-labelledby": "try-heading" },
    h("h2", { id: "try-heading", text: "Try it" }),
    h("div", { class: "field" }, h("label", { for: opId, text: "Operation" }), opInput,
      h("datalist", { id: `${opId}-list` }, ops.map((o) => h("option", { value: o })))),
    h("div", { class: "field" }, h("label", { for: inId, text: "Input (JSON)" }), input,
      h("p", { id: `${inId}-hint`, class: "hint", text: "Sent as the operation's input; the call is metered like any other." })),
    h("div", { class: "actions" }, h("button", { type: "submit", text: "Invoke" })), result);
  tryForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    result.replaceChildren();
    let body;
    try {
      body = JSON.parse(input.value || "null");
    } catch (e) {
      input.setAttribute("aria-invalid", "true");
      result.append(problemBox(new ProblemError(0, { title: "The input is not JSON", detail: String(e.message), field: "input" }), "h3"));
      return;
    }
    input.removeAttribute("aria-invalid");
    try {
      const r = await api("POST", `${base}/invoke/${enc(opInput.value.trim())}`, body);
      result.append(h("h3", { text: "Output" }), h("pre", { text: JSON.stringify(r.output, null, 2) }),
        h("p", { class: "muted", text: `call ${r.callId}` }),
        r.usage.length ? h("ul", { "aria-label": "Metered" }, r.usage.map((u) => h("li", { text: `${u.quantity} ${u.sku} (${u.source})` }))) : h("p", { text: "Nothing metered." }));
    } catch (err) {
      result.append(problemBox(err, "h3"));
    }
  });
  put(main, tryForm);

  // Upgrade.
  const upId = nextId("upv");
  const majorId = nextId("major");
  const upVersion = h("input", { id: upId, type: "text", name: "version", autocomplete: "off", spellcheck: "false", "aria-describedby": `${upId}-hint` });
  const major = h("input", { id: majorId, type: "checkbox", name: "allowMajor" });
  const upOut = h("div");
  // Before upgrading: the changelogs of the versions it moves through (catalog.js).
  const upVersions = await allItems(`/v1/catalog/apps/${appPath(inst.app)}/versions`).catch(() => []);
  const changes = changelogPanel(appPath(inst.app), inst.version, upVersions, (path) => api("GET", path));
  const showChanges = () => changes.update(upVersion.value, major.checked).catch(() => {});
  upVersion.addEventListener("input", showChanges);
  major.addEventListener("change", showChanges);
  const upForm = h("form", { novalidate: true, "aria-labelledby": "upgrade-heading" },
    h("h2", { id: "upgrade-heading", text: "Upgrade" }),
    h("div", { class: "field" }, h("label", { for: upId, text: "Version or range" }), upVersion,
      h("p", { id: `${upId}-hint`, class: "hint", text: "Empty: the latest installable version." })),
    h("div", { class: "field check" }, major, h("label", { for: majorId, text: "Allow another major version" })),
    changes.element,
    h("div", { class: "actions" }, h("button", { type: "submit", text: "Upgrade" })), upOut);
  await showChanges();
  upForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    upOut.replaceChildren();
    try {
      const r = await api("POST", `${base}/upgrade`, { version: upVersion.value.trim() || null, allowMajor: major.checked });
      say(`Now on ${r.version}.`);
      route();
    } catch (err) {
      upOut.append(problemBox(err, "h3"));
    }
  });
  put(main, upForm);

  // Logs.
  const logs = h("div");
  put(main, h("h2", { text: "Logs" }), logs);
  await showLogs(logs, `${base}/logs`);

  // Uninstall.
  const unOut = h("div");
  const confirm = h("button", { type: "button", class: "danger", text: `Yes, uninstall ${inst.app}`, hidden: true });
  const ask = h("button", { type: "button", class: "danger", text: "Uninstall" });
  ask.addEventListener("click", () => { confirm.hidden = false; confirm.focus(); });
  confirm.addEventListener("click", async () => {
    unOut.replaceChildren();
    try {
      await api("DELETE", base);
      say(`Uninstalled ${inst.app}.`);
      location.hash = "#/installations";
    } catch (err) {
      unOut.append(problemBox(err, "h3"));
    }
  });
  put(main, h("h2", { text: "Uninstall" }),
    h("p", { text: "Runs the app's uninstall step, then removes the installation and its stored data. Usage already recorded stays." }),
    h("div", { class: "actions" }, ask, confirm), unOut);
}

async function showLogs(container, path) {
  let items = [];
  let since = null;
  for (let page = 0; page < 10; page++) {
    const r = await api("GET", `${path}?limit=1000${since ? `&since=${enc(since)}` : ""}`);
    items = items.concat(r.items).slice(-200);
    if (!r.next) break;
    since = r.next;
  }
  if (!items.length) {
    container.replaceChildren(h("p", { text: "No log lines yet." }));
    return;
  }
  container.replaceChildren(scroller(h("table", {},
    h("caption", { class: "muted", text: `The last ${items.length} lines` }),
    h("thead", {}, h("tr", {}, ["At", "Level", "Operation", "Message"].map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, items.map((l) => h("tr", {},
      h("td", { text: when(l.atMs) }), h("td", { text: l.level }), h("td", { text: l.operation }), h("td", { text: l.message })))))));
}

// --- partner ----------------------------------------------------------------------------

async function viewPartnerApps(main) {
  setTitle("Our apps");
  const partner = state.who.scope;
  const apps = await allItems(`/v1/partners/${enc(partner)}/apps`);
  put(main, h("h1", { text: "Our apps" }));
  const nameId = nextId("name");
  const refId = nextId("ref");
  const name = h("input", { id: nameId, type: "text", name: "name", required: true, autocomplete: "off", spellcheck: "false", pattern: "[a-z0-9][a-z0-9-]{0,63}", "aria-describedby": `${nameId}-hint` });
  const reference = h("input", { id: refId, type: "text", name: "reference", required: true, autocomplete: "off", spellcheck: "false", "aria-describedby": `${refId}-hint` });
  const out = h("div");
  const button = h("button", { type: "submit", text: "Register" });
  let refresh = async () => {};
  const form = h("form", { novalidate: true, "aria-labelledby": "register-heading" },
    h("h2", { id: "register-heading", text: "Register a version" }),
    h("div", { class: "field" }, h("label", { for: nameId, text: "App name" }), name,
      h("p", { id: `${nameId}-hint`, class: "hint", text: `The part after "${partner}/" in the manifest's app.` })),
    h("div", { class: "field" }, h("label", { for: refId, text: "Reference" }), reference,
      h("p", { id: `${refId}-hint`, class: "hint", text: "host/repository:tag on a registry the operator configured. Kiosk pulls it, verifies its signature and checks that it runs." })),
    h("div", { class: "actions" }, button), out);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    if (button.getAttribute("aria-disabled") === "true") return; // already registering
    button.setAttribute("aria-disabled", "true");
    say("Pulling, verifying and checking the version…");
    try {
      const r = await api("POST", `/v1/partners/${enc(partner)}/apps/${enc(name.value.trim())}/versions`, { reference: reference.value.trim() });
      say("");
      out.append(h("div", { class: "done", role: "status" },
        h("h3", { text: `Registered ${r.app} ${r.version}` }),
        h("dl", { class: "facts" },
          h("dt", { text: "Signature" }), h("dd", { text: `verified: signed by ${r.signer}` }),
          h("dt", { text: "Manifest digest" }), h("dd", { text: r.digest }),
          h("dt", { text: "Component digest" }), h("dd", { text: r.componentDigest }))));
      await refresh().catch(() => {});
    } catch (err) {
      say("");
      out.append(problemBox(err, "h3"));
    } finally {
      button.removeAttribute("aria-disabled");
    }
  });
  const list = h("div");
  put(main, form, list);
  showPartnerApps(list, apps);
  refresh = async () => showPartnerApps(list, await allItems(`/v1/partners/${enc(partner)}/apps`));
}

function showPartnerApps(list, apps) {
  list.replaceChildren();
  if (!apps.length) list.append(h("p", { text: "No app registered yet." }));
  for (const app of apps) {
    list.append(h("h2", { text: `${app.name} (${app.app})` }), scroller(h("table", {},
      h("caption", { class: "muted", text: `Versions of ${app.app}` }),
      h("thead", {}, h("tr", {}, ["Version", "State", "Registered", "Digest"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, app.versions.map((v) => h("tr", {}, h("td", { text: v.version }),
        h("td", { text: v.quarantined ? `quarantined${v.quarantineReason ? `: ${v.quarantineReason}` : ""}` : v.yanked ? "yanked" : "installable" }),
        h("td", { text: when(v.createdMs) }), h("td", { text: v.digest })))))));
  }
}

// --- operator ---------------------------------------------------------------------------

function cell(key, value) {
  if (value === null || value === undefined) return "—";
  if (/Ms$|_ms$/.test(key) && typeof value === "number") return when(value);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** A table of `items`; `actions(item)` gives each row's buttons (a last column). */
function dataTable(items, columns, caption, link, actions) {
  const cols = columns || [...new Set(items.flatMap((i) => Object.keys(i)))];
  return scroller(h("table", {},
    caption ? h("caption", { class: "muted", text: caption }) : null,
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col", text: c })),
      actions ? h("th", { scope: "col", text: "Actions" }) : null)),
    h("tbody", {}, items.map((item) => h("tr", {}, cols.map((c, i) => {
      const text = cell(c, item[c]);
      const href = i === 0 && link ? link(item) : null;
      return h("td", {}, href ? h("a", { href, text }) : text);
    }), actions ? h("td", {}, h("div", { class: "actions" }, actions(item))) : null)))));
}

/** A button that runs `act` (an API call), then shows the view again, or its problem. */
function actionButton(text, act, out) {
  const button = h("button", { type: "button", class: "secondary", text });
  button.addEventListener("click", async () => {
    if (button.getAttribute("aria-disabled") === "true") return;
    button.setAttribute("aria-disabled", "true");
    out.replaceChildren();
    try {
      await act();
      say(`${text}: done.`);
      route();
    } catch (err) {
      out.append(problemBox(err, "h3"));
    } finally {
      button.removeAttribute("aria-disabled");
    }
  });
  return button;
}

// --- routing ----------------------------------------------------------------------------

/** The helpers the pages of other modules (private.js) build with. */
const ui = { h, put, api, enc, appPath, nextId, setTitle, dataTable, actionButton, problemBox, ProblemError, state };
useConsole(ui);

/** @type {Array<[RegExp, ?string, Function]>} */
const ROUTES = [
  [/^#\/catalog$/, null, viewCatalog],
  [/^#\/apps\/(~?[a-z0-9-]+)\/([a-z0-9-]+)$/, null, viewApp],
  [/^#\/own-apps$/, "tenant", (main) => viewOwnApps(main, ui)],
  [/^#\/installations$/, "tenant", viewInstallations],
  [/^#\/installations\/([^/]+)$/, "tenant", viewInstallation],
  [/^#\/usage$/, "tenant", (main) => viewUsage(main, `/v1/tenants/${enc(state.who.scope)}/usage`, "Usage", ui)],
  [/^#\/partner\/apps$/, "partner", viewPartnerApps],
  [/^#\/partner\/usage$/, "partner", (main) => viewUsage(main, `/v1/partners/${enc(state.who.scope)}/usage`, "Usage of our apps", ui)],
  [/^#\/operator\/(partners|tenants|tokens|registries|entitlements|installations|audit)$/, "operator", viewOperatorList],
  [/^#\/operator\/partners\/([a-z0-9-]+)$/, "operator", viewOperatorPartner],
  [/^#\/operator\/limits$/, "operator", viewOperatorLimits],
  [/^#\/operator\/egress$/, "operator", viewOperatorEgress],
  [/^#\/operator\/private-apps$/, "operator", (main) => viewOperatorPrivateApps(main, ui)],
  [/^#\/operator\/usage$/, "operator", (main) => viewUsage(main, "/v1/usage", "Usage", ui)],
  [/^#\/operator\/sinks$/, "operator", (main) => viewOperatorSinks(main, ui)],
];

let generation = 0;

let signedOutReason = null;

async function route(reason) {
  const hash = location.hash || "#/";
  if (!hash.startsWith("#/")) return; // an in-page link such as the skip link
  signedOutReason = reason instanceof ProblemError ? reason : null;
  const mine = ++generation;
  if (!sayFresh) document.getElementById("status").textContent = "";
  sayFresh = false;
  const main = document.getElementById("main");
  const fresh = h("div");
  if (!state.who && token()) {
    try {
      state.who = /** @type {Schemas["Identity"]} */ (await api("GET", "/v1/whoami"));
    } catch (err) {
      if (err.status === 401) sessionStorage.removeItem(TOKEN_KEY);
      else signedOutReason = err; // the server is unreachable or failing: say so, keep the token
    }
  }
  renderChrome();
  const [path, search] = hash.split("?");
  const query = new URLSearchParams(search || "");
  try {
    if (!state.who) {
      viewSignIn(fresh, signedOutReason);
    } else {
      const found = ROUTES.map(([re, role, view]) => /** @type {[?RegExpMatchArray, ?string, Function]} */ ([path.match(re), role, view])).find(([m, role]) => m && (!role || role === state.who.role));
      if (!found) {
        const home = { tenant: "#/catalog", partner: "#/partner/apps", operator: "#/operator/partners" }[state.who.role];
        if (path === "#/" || path === "#") { if (mine === generation) location.replace(home); return; }
        fresh.append(h("h1", { text: "Not found" }), h("p", {}, "This page does not exist for your role. ", h("a", { href: home, text: "Go home" })));
      } else {
        await found[2](fresh, found[0], query);
      }
    }
  } catch (err) {
    fresh.append(problemBox(err));
    if (err instanceof ProblemError && err.status === 401) {
      fresh.replaceChildren();
      viewSignIn(fresh, err);
    }
  }
  if (mine !== generation) return; // a newer navigation won
  renderChrome();
  document.title = pendingTitle;
  main.replaceChildren(...fresh.childNodes);
  const heading = main.querySelector("h1");
  if (heading) { heading.setAttribute("tabindex", "-1"); heading.focus(); }
}

document.getElementById("skip").addEventListener("click", (ev) => {
  ev.preventDefault();
  document.getElementById("main").focus();
});
window.addEventListener("hashchange", route);
route();
