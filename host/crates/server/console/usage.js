// The console's usage view (tenant, partner, operator): per SKU per day over 30 days, as
// an SVG chart and a table. Imported by console.js, which hands it its helpers (`ui`).
// @ts-check

import { h, put, s, scroller, nextId, when } from "./dom.js";

const DAY_MS = 86_400_000;
const PALETTE = ["#0b4f9c", "#c2410c", "#15803d", "#7e22ce", "#a16207", "#be123c", "#0e7490", "#4d4d4d"];

export async function viewUsage(main, path, heading, ui) {
  const { api, setTitle } = ui;
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
