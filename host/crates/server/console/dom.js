// The console's DOM helpers: elements built with text only (never HTML from strings, which
// the page's Trusted Types policy forbids anyway). Imported by console.js and its views.
// @ts-check

/** An element: `attrs` are attributes, except `text`, `on*` handlers and `dataset`. */
export function h(tag, attrs = {}, ...children) {
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
export function put(parent, ...children) {
  parent.append(...children.flat().filter((c) => c !== undefined && c !== null && c !== false));
}

const svgNs = "http://www.w3.org/2000/svg";
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(svgNs, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  for (const child of children) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

/** A region that scrolls sideways when its table is wide: focusable, so the keyboard
 * can scroll it, and named after what it holds. */
export function scroller(table, label) {
  const name = label || table.querySelector("caption")?.textContent || "Table";
  return h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": name }, table);
}

let uid = 0;
export const nextId = (prefix) => `${prefix}-${++uid}`;

/** A time in ms since the epoch as "YYYY-MM-DD hh:mm:ss UTC"; "—" when absent. */
export function when(ms) {
  if (ms === undefined || ms === null) return "—";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}
