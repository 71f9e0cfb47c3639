// The operator's "Usage sinks" page (issue 29): each configured sink with where it
// sends, how far it is (lag, last success, last error, retries) and its parked events
// with their reasons; re-drive parked events. Imported by console.js, which hands it
// its helpers (`ui`); like it, nothing fetched but this server's API, and text from the
// API only ever set as text. Sinks are set in the config file or through the API; their
// keys never come back from the API.
// @ts-check

/** "3 s ago" style age of a time in ms since the epoch; "never" when absent. */
function age(ms) {
  if (ms == null) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 120 ? `${s} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
}

/** One sink's state in words: caught up, behind, lagging toward its receiver's
 * deadline, or failing (and why). */
function stateText(s) {
  const late = s.lagging ? `Lagging: ${Math.round(s.lagSeconds)} s behind (alert at ${s.alertLagSeconds} s)` : null;
  if (s.lastError) return `${late ? late + "; f" : "F"}ailing (${s.attempts} attempts): ${s.lastError}`;
  if (late) return late;
  if (s.lagSeconds > 0) return `Behind by ${Math.round(s.lagSeconds)} s`;
  return "Caught up";
}

/** How the sink sends: a record per event, or per customer, meter and period. */
function granularity(s) {
  if (!s.aggregateSeconds) return `A record per event, ${s.batch} a request`;
  const next = s.nextPeriodMs ? `; next period from ${new Date(s.nextPeriodMs).toISOString()}` : "";
  return `Sums per customer, meter and ${s.aggregateSeconds} s, sent ${s.settleSeconds} s after the period ends, ${s.batch} a request${next}`;
}

export async function viewOperatorSinks(main, ui) {
  const { h, api, enc } = ui;
  ui.setTitle("Usage sinks");
  const page = await api("GET", "/v1/sinks?limit=100");
  const out = h("div");
  const sections = [];
  for (const s of page.items) {
    const parked = s.parked > 0 ? await api("GET", `/v1/sinks/${enc(s.name)}/parked?limit=20`) : { items: [] };
    const rows = [
      ["State", stateText(s)],
      ["Kind", s.kind],
      ["Set in", s.source === "api" ? "the API (PUT /v1/sinks/…)" : "the config file ([[sinks]])"],
      ["Endpoint", s.endpoint],
      ["Records", granularity(s)],
      ["Events sent", String(s.sent)],
      ["Lag", `${s.lagSeconds} s`],
      ["Last success", age(s.lastSuccessMs)],
      ["Parked events", String(s.parked)],
      ["Mapping", `${s.mappedTenants} tenants${s.tenantIsCustomer ? " (others under their own id)" : ""}, ${s.meterRules} meter rules${s.skuIsMeter ? " (other SKUs under their own name)" : ""}`],
    ];
    const headingId = ui.nextId("sink");
    sections.push(h("section", { class: "panel", "aria-labelledby": headingId },
      h("h2", { id: headingId, text: s.name }),
      h("dl", {}, rows.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })])),
      parked.items.length
        ? ui.dataTable(parked.items.map((p) => ({ seq: p.seq, tenant: p.tenant, app: p.app, sku: p.sku, quantity: p.quantity, reason: p.reason })),
          ["seq", "tenant", "app", "sku", "quantity", "reason"], `Parked events of ${s.name} (oldest first)`)
        : null,
      s.parked > 0
        ? h("div", { class: "actions" }, ui.actionButton(`Re-drive ${s.name}`, () => api("POST", `/v1/sinks/${enc(s.name)}/redrive`), out))
        : null));
  }
  ui.put(main, h("h1", { text: "Usage sinks" }),
    h("p", { text: "Where usage is pushed (the config file's [[sinks]]): each sink sends the ledger in order and moves on only after its receiver acknowledged. Events it cannot send (a tenant or SKU the mapping does not name, a receiver's refusal) wait here with their reason; re-drive them after fixing the mapping." }),
    page.items.length ? sections : h("p", { class: "muted", text: "No sink is configured." }), out);
}
