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

const TOKEN_KEY = "kiosk.console.token";
const DAY_MS = 86_400_000;

// --- DOM helpers ----------------------------------------------------------------------

/** An element: `attrs` are attributes, except `text`, `on*` handlers and `dataset`. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") el.textContent = String(value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Appends the children that are there: `Element.append(null)` would add the text "null". */
function put(parent, ...children) {
  parent.append(...children.flat().filter((c) => c !== undefined && c !== null && c !== false));
}

const svgNs = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(svgNs, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  for (const child of children) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

/** A region that scrolls sideways when its table is wide: focusable, so the keyboard
 * can scroll it, and named after what it holds. */
function scroller(table, label) {
  const name = label || table.querySelector("caption")?.textContent || "Table";
  return h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": name }, table);
}

let uid = 0;
const nextId = (prefix) => `${prefix}-${++uid}`;

function when(ms) {
  if (ms === undefined || ms === null) return "—";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

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

// --- JSON Schema forms ----------------------------------------------------------------
//
// Renders the subset of JSON Schema (2020-12) app manifests use: objects (nested, as
// fieldsets), strings (enum → select, writeOnly → password input never pre-filled,
// email/uri formats), integers and numbers (min/max), booleans, arrays of scalars (one
// per line), local $refs; anything else is edited as JSON. The server validates against
// the full schema (the one validator): its problem's `errors` ("/pointer: violates
// `keyword`") are shown at the fields they name.

function resolveRef(root, schema, depth = 0) {
  if (schema && typeof schema.$ref === "string" && schema.$ref.startsWith("#/") && depth < 16) {
    let target = root;
    for (const part of schema.$ref.slice(2).split("/")) target = target?.[part.replace(/~1/g, "/").replace(/~0/g, "~")];
    if (!target || typeof target !== "object") return schema;
    // Keywords beside a $ref (2020-12) apply too: `writeOnly`, `title`, `default`…
    const { $ref: _ref, ...siblings } = schema;
    return { ...resolveRef(root, target, depth + 1), ...siblings };
  }
  return schema || {};
}

const MAX_FORM_DEPTH = 8;
const pointerToken = (key) => key.replace(/~/g, "~0").replace(/\//g, "~1");
const typeOf = (schema) => (Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type)
  || (schema.properties ? "object" : schema.enum ? "enum" : undefined);

const plural = (n, one) => `${n} ${one}${n === 1 ? "" : "s"}`;

function constraintsOf(schema) {
  const out = [];
  if (schema.minimum !== undefined) out.push(`at least ${schema.minimum}`);
  if (schema.maximum !== undefined) out.push(`at most ${schema.maximum}`);
  if (schema.minLength !== undefined) out.push(`at least ${plural(schema.minLength, "character")}`);
  if (schema.maxLength !== undefined) out.push(`at most ${plural(schema.maxLength, "character")}`);
  if (schema.maxItems !== undefined) out.push(`at most ${plural(schema.maxItems, "item")}`);
  return out;
}

/** The server's "violates `keyword`" said with the field's own schema. */
function explain(message, schema) {
  const m = /^violates `(\w+)`$/.exec(message);
  if (!m || !schema) return message;
  const said = {
    maximum: schema.maximum !== undefined && `must be at most ${schema.maximum}`,
    minimum: schema.minimum !== undefined && `must be at least ${schema.minimum}`,
    exclusiveMaximum: schema.exclusiveMaximum !== undefined && `must be below ${schema.exclusiveMaximum}`,
    exclusiveMinimum: schema.exclusiveMinimum !== undefined && `must be above ${schema.exclusiveMinimum}`,
    minLength: schema.minLength !== undefined && `must be at least ${plural(schema.minLength, "character")}`,
    maxLength: schema.maxLength !== undefined && `must be at most ${plural(schema.maxLength, "character")}`,
    maxItems: schema.maxItems !== undefined && `must have at most ${plural(schema.maxItems, "item")}`,
    enum: Array.isArray(schema.enum) && `must be one of ${schema.enum.map((v) => JSON.stringify(v)).join(", ")}`,
    type: schema.type && `must be ${Array.isArray(schema.type) ? schema.type.join(" or ") : schema.type === "integer" ? "a whole number" : `a ${schema.type}`}`,
    pattern: "does not have the expected form",
    format: schema.format && `must be a valid ${schema.format}`,
  }[m[1]];
  return said ? `${said} (${message})` : message;
}

const sentence = (text) => (/[.!?]$/.test(text) ? text : `${text}.`);

/**
 * A form body for `schema`: { element, read(), showErrors(errors) → unplaced errors, clearErrors(), clearSecrets() }.
 * `value` pre-fills every field but secrets; `secretsSet` (JSON pointers) marks the
 * secrets that have a stored value (left empty, they keep it).
 */
function schemaForm(schema, value, secretsSet = []) {
  const root = schema || {};
  const fields = new Map(); // pointer → { input, wrapper, errorParent, schema }
  const secretInputs = [];

  function field(sch, val, required, pointer, label, depth = 0) {
    sch = resolveRef(root, sch);
    // Deeper than any form a person fills in (and a schema that refers to itself):
    // the rest is edited as JSON.
    const type = depth > MAX_FORM_DEPTH ? undefined : typeOf(sch);
    const title = sch.title || label;
    if (type === "object" && sch.properties && !(sch.writeOnly === true)) {
      const legend = h("legend", {}, title);
      const descId = nextId("d");
      const set = h("fieldset", { "data-pointer": pointer, "aria-describedby": sch.description ? descId : undefined }, legend);
      if (sch.description) set.append(h("p", { id: descId, class: "hint", text: sch.description }));
      const req = new Set(sch.required || []);
      const inner = [];
      // The API's JSON has sorted keys, so the schema's own order is lost: required
      // fields first, then optional ones, nested groups last (each group alphabetical).
      const rank = ([name, child]) => (req.has(name) ? 0 : 2) + (typeOf(resolveRef(root, child)) === "object" ? 1 : 0);
      const entries = Object.entries(sch.properties).map((e, i) => /** @type {[[string, any], number]} */ ([e, i])).sort((a, b) => rank(a[0]) - rank(b[0]) || a[1] - b[1]).map(([e]) => e);
      for (const [name, child] of entries) {
        const r = field(child, val && typeof val === "object" ? val[name] : undefined, req.has(name), `${pointer}/${pointerToken(name)}`, name, depth + 1);
        set.append(r.element);
        inner.push([name, r.read]);
      }
      fields.set(pointer, { input: set, wrapper: set, errorParent: set });
      return {
        element: set,
        read() {
          // Keys the form has no field for (`additionalProperties`, `patternProperties`)
          // keep their current values: a configure replaces the whole configuration.
          const out = {};
          if (val && typeof val === "object" && !Array.isArray(val)) {
            for (const [k, v] of Object.entries(val)) if (!(k in sch.properties)) out[k] = v;
          }
          for (const [name, read] of inner) {
            const v = read();
            if (v !== undefined) out[name] = v;
          }
          return Object.keys(out).length || required ? out : undefined;
        },
      };
    }
    const id = nextId("f");
    const hintId = `${id}-hint`;
    const wrapper = h("div", { class: "field", "data-pointer": pointer });
    const labelEl = h("label", { for: id }, title, required ? h("span", { class: "req", text: " (required)" }) : null);
    const limits = constraintsOf(sch);
    const hints = [sch.description && sentence(sch.description), limits.length && `Allowed: ${limits.join(", ")}.`].filter(Boolean);
    const secret = sch.writeOnly === true;
    const isSet = secret && secretsSet.includes(pointer);
    if (secret) hints.push(isSet ? "Secret: set. Leave empty to keep it." : "Secret: stored encrypted, never shown again.");
    const described = hints.length ? hintId : undefined;
    let input;
    let read;
    const initial = val !== undefined ? val : sch.default;
    if (secret) {
      // A secret of any type is typed, never chosen or pre-filled, and sent only when
      // typed (left empty, the stored value stays).
      input = h("input", {
        id, name: pointer, type: "password", "aria-describedby": described, required: (required && !isSet) || undefined,
        minlength: sch.minLength, maxlength: sch.maxLength, autocomplete: "new-password", spellcheck: "false",
        placeholder: isSet ? "•••••• (set)" : undefined,
      });
      secretInputs.push(input);
      read = () => {
        if (input.value === "") return undefined;
        if (type === "string" || type === undefined) return input.value;
        try { return JSON.parse(input.value); } catch { return input.value; }
      };
    } else if (Array.isArray(sch.enum) || (type === "string" && Array.isArray(sch.oneOf) && sch.oneOf.every((o) => "const" in o))) {
      const options = Array.isArray(sch.enum) ? sch.enum.map((v) => [v, String(v)]) : sch.oneOf.map((o) => [o.const, o.title || String(o.const)]);
      input = h("select", { id, name: pointer, "aria-describedby": described, required: required || undefined });
      if (!required || initial === undefined) input.append(h("option", { value: "", text: required ? "Choose…" : "(not set)" }));
      options.forEach(([v, text], i) => input.append(h("option", { value: String(i), text, selected: initial !== undefined && JSON.stringify(initial) === JSON.stringify(v) })));
      read = () => (input.value === "" ? undefined : options[Number(input.value)][0]);
    } else if (type === "boolean") {
      input = h("input", { id, name: pointer, type: "checkbox", "aria-describedby": described, checked: initial === true });
      wrapper.classList.add("check");
      read = () => input.checked;
    } else if (type === "integer" || type === "number") {
      // A text input (with a numeric keyboard): whatever is typed reaches the server,
      // which names a non-number at the field; a number input would drop it silently.
      input = h("input", {
        id, name: pointer, type: "text", inputmode: type === "integer" ? "numeric" : "decimal",
        value: typeof initial === "number" ? String(initial) : undefined, autocomplete: "off", spellcheck: "false",
        "aria-describedby": described, required: required || undefined,
      });
      read = () => {
        const text = input.value.trim();
        if (text === "") return undefined;
        const n = Number(text);
        return Number.isFinite(n) ? n : text; // the server names a non-number
      };
    } else if (type === "string") {
      const kind = sch.format === "email" ? "email" : sch.format === "uri" ? "url" : "text";
      input = h("input", {
        id, name: pointer, type: kind, "aria-describedby": described, required: required || undefined,
        minlength: sch.minLength, maxlength: sch.maxLength, autocomplete: "off", spellcheck: "false",
      });
      if (typeof initial === "string") input.value = initial;
      read = () => (input.value === "" ? undefined : input.value);
    } else if (type === "array" && ["string", "integer", "number"].includes(typeOf(resolveRef(root, sch.items || {})))) {
      const itemType = typeOf(resolveRef(root, sch.items));
      hints.unshift("One per line.");
      input = h("textarea", { id, name: pointer, rows: "4", "aria-describedby": hintId, spellcheck: "false" });
      if (Array.isArray(initial)) input.value = initial.join("\n");
      read = () => {
        const lines = input.value.split("\n").map((l) => l.trim()).filter(Boolean);
        if (!lines.length && !required && initial === undefined) return undefined;
        return itemType === "string" ? lines : lines.map((l) => (Number.isFinite(Number(l)) ? Number(l) : l));
      };
    } else {
      hints.unshift("JSON value.");
      input = h("textarea", { id, name: pointer, rows: "4", "aria-describedby": hintId, spellcheck: "false" });
      if (initial !== undefined) input.value = JSON.stringify(initial, null, 2);
      read = () => {
        if (input.value.trim() === "") return undefined;
        try { return JSON.parse(input.value); } catch { return input.value; }
      };
    }
    wrapper.append(labelEl, input);
    if (hints.length) wrapper.append(h("p", { id: hintId, class: "hint", text: hints.join(" ") }));
    fields.set(pointer, { input, wrapper, errorParent: wrapper, schema: sch });
    return { element: wrapper, read };
  }

  const top = field(root, value, true, "", "Configuration");
  return {
    element: top.element,
    read: () => top.read() || {},
    clearErrors() {
      for (const { input, errorParent } of fields.values()) {
        input.removeAttribute("aria-invalid");
        const desc = (input.getAttribute("aria-describedby") || "").split(" ").filter((d) => d && !d.endsWith("-err"));
        if (desc.length) input.setAttribute("aria-describedby", desc.join(" ")); else input.removeAttribute("aria-describedby");
        errorParent.querySelectorAll(":scope > .error").forEach((e) => e.remove());
      }
    },
    /** Shows each "/pointer: message" at its field; returns the ones no field shows. */
    showErrors(errors) {
      const unplaced = [];
      let first = null;
      for (const e of errors || []) {
        const at = e.lastIndexOf(": ");
        let pointer = at >= 0 ? e.slice(0, at) : "";
        const message = at >= 0 ? e.slice(at + 2) : e;
        // An error inside a value the form edits whole (an array item, a JSON field) is
        // shown at that field: the nearest pointer with one.
        while (pointer && !fields.has(pointer)) pointer = pointer.slice(0, Math.max(0, pointer.lastIndexOf("/")));
        const target = fields.get(pointer);
        if (!target || pointer === "") { unplaced.push(e); continue; }
        const errId = `${nextId("e")}-err`;
        target.errorParent.append(h("p", { id: errId, class: "error", text: explain(message, target.schema) }));
        target.input.setAttribute("aria-invalid", "true");
        const desc = (target.input.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
        target.input.setAttribute("aria-describedby", [...desc, errId].join(" "));
        if (!first) first = target.input;
      }
      const focusable = first?.matches?.("fieldset") ? first.querySelector("input, select, textarea") : first;
      if (focusable) focusable.focus();
      return unplaced;
    },
    clearSecrets() { for (const input of secretInputs) input.value = ""; },
  };
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

// --- usage, as a chart and a table ------------------------------------------------------

const PALETTE = ["#0b4f9c", "#c2410c", "#15803d", "#7e22ce", "#a16207", "#be123c", "#0e7490", "#4d4d4d"];

async function viewUsage(main, path, heading) {
  setTitle(heading);
  const to = Math.floor(Date.now() / DAY_MS) * DAY_MS + DAY_MS;
  const from = to - 30 * DAY_MS;
  const report = await api("GET", `${path}?granularity=day&fromMs=${from}&toMs=${to}`);
  put(main, h("h1", { text: heading }), h("p", { class: "muted", text: `Per SKU per day, ${when(from).slice(0, 10)} to ${when(to - DAY_MS).slice(0, 10)} (UTC).` }));
  put(main, usageChart(report.usage, from, to));
}

function usageChart(records, from, to) {
  const wrap = h("div", { class: "chart" });
  if (!records.length) {
    wrap.append(h("p", { text: "No usage in this period." }));
    return wrap;
  }
  const series = [...new Set(records.map((r) => `${r.app} ${r.sku}`))].sort();
  // Every day of the period on the axis, used or not; the table lists the days with usage.
  const days = [];
  for (let d = from; d < to; d += DAY_MS) days.push(d);
  const used = [...new Set(records.map((r) => r.periodStartMs))].sort((a, b) => a - b);
  // A partner's or the operator's read has one record per tenant: summed per day and SKU.
  // (Quantities beyond 2^53 lose precision here; the chart only needs their size.)
  const qty = new Map();
  for (const r of records) {
    const key = `${r.periodStartMs}|${r.app} ${r.sku}`;
    qty.set(key, (qty.get(key) || 0) + Number(r.quantity));
  }
  const max = Math.max(1, ...qty.values());
  const W = 720, H = 260, left = 56, bottom = 40, top = 12;
  const groupW = (W - left - 8) / days.length;
  const barW = Math.max(2, Math.min(28, (groupW - 6) / series.length));
  const titleId = nextId("chart-title");
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": titleId, width: W, height: H });
  svg.append(s("title", { id: titleId }, `Usage per SKU per day: ${series.length} series over ${days.length} days, ${used.length} with usage, largest ${max}`));
  const y = (v) => H - bottom - (Number(v) / max) * (H - bottom - top);
  svg.append(s("line", { x1: left, y1: H - bottom, x2: W - 4, y2: H - bottom, stroke: "#333" }));
  for (const tick of [0, max / 2, max]) {
    svg.append(s("text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end", "font-size": 11, fill: "#333" }, formatQty(tick)));
  }
  days.forEach((day, d) => {
    const x0 = left + d * groupW + 3;
    series.forEach((name, i) => {
      const v = qty.get(`${day}|${name}`) || 0;
      if (!v) return;
      const rect = s("rect", { x: x0 + i * barW, y: y(v), width: barW - 1, height: Math.max(1, H - bottom - y(v)), fill: PALETTE[i % PALETTE.length] });
      rect.append(s("title", {}, `${when(day).slice(0, 10)} ${name}: ${v}`));
      svg.append(rect);
    });
    if (d % 5 === 4 || d === days.length - 1) {
      svg.append(s("text", { x: x0 + (series.length * barW) / 2, y: H - bottom + 16, "text-anchor": "middle", "font-size": 11, fill: "#333" }, when(day).slice(5, 10)));
    }
  });
  // Swatches are SVG (a fill attribute): the CSP allows no inline style.
  const swatch = (color) => {
    const sw = s("svg", { width: 14, height: 14, viewBox: "0 0 14 14", class: "swatch", "aria-hidden": "true" });
    sw.append(s("rect", { x: 0.5, y: 0.5, width: 13, height: 13, fill: color, stroke: "#333" }));
    return sw;
  };
  wrap.append(svg, h("ul", { class: "legend", "aria-label": "Series" }, series.map((name, i) =>
    h("li", {}, swatch(PALETTE[i % PALETTE.length]), name))));
  wrap.append(scroller(h("table", {},
    h("caption", { text: "Usage per day" }),
    h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Day (UTC)" }), series.map((n) => h("th", { scope: "col", class: "num", text: n })))),
    h("tbody", {}, used.map((day) => h("tr", {}, h("th", { scope: "row", text: when(day).slice(0, 10) }),
      series.map((n) => h("td", { class: "num", text: String(qty.get(`${day}|${n}`) || 0) }))))))));
  return wrap;
}

function formatQty(v) {
  if (v >= 1e9) return `${(v / 1e9).toFixed(1)}G`;
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return String(Math.round(v));
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

const OPERATOR_LISTS = {
  partners: ["Partners", "/v1/partners", ["name", "display", "disabled", "apps", "certificates", "createdMs"]],
  tenants: ["Tenants", "/v1/tenants", ["id", "display", "suspended", "installations", "kvBytes", "createdMs"]],
  tokens: ["Tokens", "/v1/tokens", ["id", "role", "scope", "label", "createdMs", "expiresMs", "revoked", "expired"]],
  registries: ["Registries", "/v1/registries", null],
  entitlements: ["Entitlements", "/v1/entitlements", null],
  installations: ["Installations", "/v1/installations", null],
  audit: ["Audit", "/v1/audit", ["id", "atMs", "actor", "action", "target", "detail"]],
};

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

async function viewOperatorList(main, m, query) {
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

async function viewOperatorPartner(main, m) {
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

async function viewOperatorLimits(main) {
  setTitle("Limits");
  const [overview, apps, tenants] = await Promise.all([api("GET", "/v1/limits"), api("GET", "/v1/limits/apps"), api("GET", "/v1/limits/tenants")]);
  put(main, h("h1", { text: "Limits" }), h("h2", { text: "In effect" }), h("pre", { text: JSON.stringify(overview, null, 2) }),
    h("h2", { text: "Per app" }), apps.items.length ? dataTable(apps.items, null) : h("p", { text: "No app override." }),
    h("h2", { text: "Per tenant" }), tenants.items.length ? dataTable(tenants.items, null) : h("p", { text: "No tenant override." }));
}

async function viewOperatorEgress(main) {
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

// --- routing ----------------------------------------------------------------------------

/** The helpers the pages of other modules (private.js) build with. */
const ui = { h, put, api, enc, appPath, nextId, setTitle, dataTable, actionButton, problemBox, ProblemError, state };

/** @type {Array<[RegExp, ?string, Function]>} */
const ROUTES = [
  [/^#\/catalog$/, null, viewCatalog],
  [/^#\/apps\/(~?[a-z0-9-]+)\/([a-z0-9-]+)$/, null, viewApp],
  [/^#\/own-apps$/, "tenant", (main) => viewOwnApps(main, ui)],
  [/^#\/installations$/, "tenant", viewInstallations],
  [/^#\/installations\/([^/]+)$/, "tenant", viewInstallation],
  [/^#\/usage$/, "tenant", (main) => viewUsage(main, `/v1/tenants/${enc(state.who.scope)}/usage`, "Usage")],
  [/^#\/partner\/apps$/, "partner", viewPartnerApps],
  [/^#\/partner\/usage$/, "partner", (main) => viewUsage(main, `/v1/partners/${enc(state.who.scope)}/usage`, "Usage of our apps")],
  [/^#\/operator\/(partners|tenants|tokens|registries|entitlements|installations|audit)$/, "operator", viewOperatorList],
  [/^#\/operator\/partners\/([a-z0-9-]+)$/, "operator", viewOperatorPartner],
  [/^#\/operator\/limits$/, "operator", viewOperatorLimits],
  [/^#\/operator\/egress$/, "operator", viewOperatorEgress],
  [/^#\/operator\/private-apps$/, "operator", (main) => viewOperatorPrivateApps(main, ui)],
  [/^#\/operator\/usage$/, "operator", (main) => viewUsage(main, "/v1/usage", "Usage")],
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
