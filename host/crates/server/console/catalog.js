// The console's catalog metadata: app icons, publishers and changelogs (SPEC §3), as
// the catalog API gives them. Imported by console.js; like it, no framework, nothing
// fetched but this server's API, and text from the API only ever set as text
// (textContent, attribute values), never parsed as HTML. A publisher's name and a
// changelog are the partner's words: shown as they are, markup included, as text.
//
// Icons: the API wants the bearer token, which an <img src> would not send, so an icon
// is fetched with it and shown from a blob: URL (the page's CSP allows images from
// blob: only), and only when the server answered one of the two icon types.
// @ts-check

/** An element: `attrs` are attributes (`text`: its text), children nodes or text. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** What the icon route serves; anything else is not shown. */
const ICON_TYPES = ["image/png", "image/jpeg"];

/** Most versions whose changelogs are read before an upgrade (newest first). */
const MAX_CHANGELOGS = 20;

/**
 * A fixed-size <img> of the icon at `url` (a path of the catalog API), fetched with the
 * token; removed if it cannot be fetched or is not a PNG or JPEG.
 * @param {string} url
 * @param {string} alt
 * @param {() => (string | null)} token
 * @param {number} [size]
 */
export function iconImage(url, alt, token, size = 48) {
  if (typeof url !== "string" || !url.startsWith("/v1/catalog/apps/")) return null;
  const img = el("img", { class: "app-icon", alt, width: size, height: size, decoding: "async" });
  (async () => {
    const t = token();
    const res = await fetch(url, {
      headers: t ? { Authorization: `Bearer ${t}` } : {}, credentials: "omit", redirect: "error",
    });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const blob = await res.blob();
    if (!ICON_TYPES.includes(blob.type)) throw new Error(`not an icon: ${blob.type}`);
    const src = URL.createObjectURL(blob);
    img.addEventListener("load", () => URL.revokeObjectURL(src), { once: true });
    img.addEventListener("error", () => { URL.revokeObjectURL(src); img.remove(); }, { once: true });
    img.src = src;
  })().catch(() => img.remove());
  return img;
}

/** Whether `link` is an absolute https URL without credentials (the server checks the
 * same at registration; checked again before it becomes an href). */
function httpsLink(link) {
  if (typeof link !== "string") return null;
  try {
    const url = new URL(link);
    return url.protocol === "https:" && !url.username && !url.password ? url.href : null;
  } catch {
    return null;
  }
}

/**
 * The publisher of an app: "By NAME", then its links (https only, opened without
 * referrer or opener). Null without a publisher.
 * @param {any} publisher
 */
export function publisherView(publisher) {
  if (!publisher || typeof publisher.name !== "string") return null;
  const links = [["homepage", "Website"], ["support", "Support"]]
    .map(([key, label]) => [httpsLink(publisher[key]), label])
    .filter(([href]) => href)
    .map(([href, label]) => el("a", { href, rel: "noopener noreferrer", text: `${label} (${new URL(href).host})` }));
  const parts = [el("span", { class: "publisher-name", text: publisher.name })];
  for (const link of links) parts.push(" · ", link);
  return el("p", { class: "publisher" }, "By ", parts);
}

/** A changelog as text, line breaks kept (CSS `white-space: pre-wrap`). */
export function changelogText(text) {
  return el("div", { class: "changelog", text: String(text) });
}

// --- semantic versions ------------------------------------------------------------------

const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$/;

/** The parts of a semantic version, or null. */
function parse(version) {
  const m = SEMVER.exec(String(version));
  return m ? { nums: [BigInt(m[1]), BigInt(m[2]), BigInt(m[3])], pre: m[4] ? m[4].split(".") : [] } : null;
}

/** Semantic version precedence of `a` and `b` (negative, 0, positive); null if either
 * is not a version. */
export function compareVersions(a, b) {
  const x = parse(a);
  const y = parse(b);
  if (!x || !y) return null;
  for (let i = 0; i < 3; i++) if (x.nums[i] !== y.nums[i]) return x.nums[i] < y.nums[i] ? -1 : 1;
  if (!x.pre.length || !y.pre.length) return y.pre.length - x.pre.length; // a release follows its prereleases
  for (let i = 0; i < Math.min(x.pre.length, y.pre.length); i++) {
    const [p, q] = [x.pre[i], y.pre[i]];
    if (p === q) continue;
    const [pn, qn] = [/^\d+$/.test(p), /^\d+$/.test(q)];
    if (pn && qn) return BigInt(p) < BigInt(q) ? -1 : 1;
    if (pn !== qn) return pn ? -1 : 1;
    return p < q ? -1 : 1;
  }
  return x.pre.length - y.pre.length;
}

/**
 * The version an upgrade request would move to, as the API picks it (SPEC §5): an exact
 * version as typed; nothing typed, the highest installable release above `installed` on
 * its line (same major; same minor for 0.x) or on any line with `allowMajor`. Null when
 * the console cannot tell (a range or a track: the API resolves those).
 * @param {string} installed
 * @param {Array<{version: string, yanked: boolean, quarantined: boolean}>} versions
 * @param {string} typed
 * @param {boolean} allowMajor
 */
export function upgradeTarget(installed, versions, typed, allowMajor) {
  if (typed) return parse(typed) ? typed : null;
  const from = parse(installed);
  if (!from) return null;
  const sameLine = (v) => v.nums[0] === from.nums[0] && (from.nums[0] !== 0n || v.nums[1] === from.nums[1]);
  let best = null;
  for (const v of versions) {
    const p = parse(v.version);
    if (!p || p.pre.length || v.yanked || v.quarantined) continue;
    if (compareVersions(v.version, installed) <= 0 || (!allowMajor && !sameLine(p))) continue;
    if (!best || compareVersions(v.version, best) > 0) best = v.version;
  }
  return best;
}

/**
 * What an upgrade brings: the changelog of each version in (installed, target], newest
 * first, read from the catalog and shown as text. `update` recomputes it for the upgrade
 * form's current request.
 * @param {string} appPath  `partner/name`, each segment already encoded
 * @param {string} installed
 * @param {Array<{version: string, yanked: boolean, quarantined: boolean}>} versions
 * @param {(path: string) => Promise<any>} get  a GET of the API
 */
export function changelogPanel(appPath, installed, versions, get) {
  const body = el("div");
  const element = el("section", { class: "whats-new", "aria-labelledby": "whats-new-heading", "aria-live": "polite" },
    el("h3", { id: "whats-new-heading", text: "What changes" }), body);
  /** @type {Map<string, Promise<any>>} */
  const read = new Map();
  let shown = 0;
  async function update(typed, allowMajor) {
    const mine = ++shown;
    const target = upgradeTarget(installed, versions, typed.trim(), allowMajor);
    if (!target) {
      body.replaceChildren(el("p", { class: "hint", text: typed.trim()
        ? "The changes are listed for an exact version (or the latest, with the field empty)."
        : `Nothing newer than ${installed} to upgrade to.` }));
      return;
    }
    const between = versions
      .filter((v) => compareVersions(v.version, installed) > 0 && compareVersions(v.version, target) <= 0)
      .sort((a, b) => compareVersions(b.version, a.version));
    if (!between.length || !versions.some((v) => v.version === target)) {
      body.replaceChildren(el("p", { class: "hint", text: versions.some((v) => v.version === target)
        ? `${target} is not above ${installed}.` : `No version ${target} is registered.` }));
      return;
    }
    const listed = between.slice(0, MAX_CHANGELOGS);
    const details = await Promise.all(listed.map((v) => {
      if (!read.has(v.version)) read.set(v.version, get(`/v1/catalog/apps/${appPath}/versions/${encodeURIComponent(v.version)}`).catch(() => null));
      return read.get(v.version);
    }));
    if (mine !== shown) return; // the request changed meanwhile
    // (replaceChildren would show a null as the text "null": the optional part is el()'s.)
    body.replaceChildren(el("div", {},
      el("p", { text: `From ${installed} to ${target}:` }),
      el("ul", { class: "changelogs", "aria-label": `Changes from ${installed} to ${target}` }, listed.map((v, i) => el("li", {},
        el("h4", { text: `Version ${v.version}` }),
        details[i]?.changelog ? changelogText(details[i].changelog) : el("p", { class: "muted", text: "No changelog." })))),
      between.length > listed.length ? el("p", { class: "muted", text: `…and ${between.length - listed.length} older versions.` }) : null));
  }
  return { element, update };
}
