// The console's JSON Schema forms (config of an installation, filled from the app's
// manifest). Imported by console.js.
// @ts-check

import { h, nextId } from "./dom.js";

// --- JSON Schema forms ----------------------------------------------------------------
//
// Renders the subset of JSON Schema (2020-12) app manifests use: objects (nested, as
// fieldsets), strings (enum → select, writeOnly → password input never pre-filled,
// email/uri formats), integers and numbers (min/max), booleans, arrays of scalars (one
// per line), local $refs; anything else is edited as JSON. The server validates against
// the full schema (the one validator): its problem's `errors` ("/pointer: violates
// `keyword`") are shown at the fields they name.

export function resolveRef(root, schema, depth = 0) {
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
export const pointerToken = (key) => key.replace(/~/g, "~0").replace(/\//g, "~1");
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
export function schemaForm(schema, value, secretsSet = []) {
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
