// A Kiosk client generated from the served OpenAPI document: `schema.d.ts` is written by
// openapi-typescript (.ci/contract, from GET /v1/openapi.json) and this file uses it
// through openapi-fetch, for each role's main journey. `tsc --noEmit` type-checks it: a
// document a generator cannot turn into types, or a contract whose names drift from what
// a client is written against, fails CI.

import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

type Schemas = components["schemas"];

export function kiosk(baseUrl: string, token: string) {
  return createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });
}

/** The tenant: browse the catalog, install, call, read usage. */
export async function tenantJourney(baseUrl: string, token: string, tenant: string): Promise<number> {
  const client = kiosk(baseUrl, token);
  const catalog = await client.GET("/v1/catalog/apps", { params: { query: { q: "budget" } } });
  const app: Schemas["CatalogApp"] | undefined = catalog.data?.items[0];
  if (!app) return 0;
  const [partner, name] = app.app.split("/");
  const install: Schemas["InstallBody"] = { app: app.app, config: { apiKey: "k" } };
  const installed = await client.POST("/v1/tenants/{tenant}/installations", {
    params: { path: { tenant } },
    body: install,
  });
  const id = installed.data?.id ?? `${tenant}-${name}`;
  await client.POST("/v1/tenants/{tenant}/installations/{id}/invoke/{operation}", {
    params: { path: { tenant, id, operation: "evaluate" } },
    body: { campaignId: "c-1" },
  });
  const usage = await client.GET("/v1/tenants/{tenant}/usage", {
    params: { path: { tenant }, query: { granularity: "day", zeros: true } },
  });
  // JSON unless `format=csv` asked for text.
  const report: Schemas["UsageReport"] | undefined = typeof usage.data === "string" ? undefined : usage.data;
  void partner;
  return report?.usage.reduce((sum, record) => sum + record.quantity, 0) ?? 0;
}

/** The partner: report usage for its app, read what became of each record. */
export async function partnerJourney(baseUrl: string, token: string): Promise<number[]> {
  const client = kiosk(baseUrl, token);
  const sent = await client.POST("/v1/partners/{partner}/usage", {
    params: { path: { partner: "acme" } },
    body: {
      records: [
        {
          tenant: "demo",
          app: "acme/budget-pacing",
          sku: "pacing-check",
          quantity: 1,
          timestampMs: Date.now(),
          idempotencyKey: "batch-1/0",
        },
      ],
    },
  });
  const results: Schemas["RecordResult"][] = sent.data?.results ?? [];
  return results.filter((r) => r.status === "conflict").map((r) => r.recordedQuantity ?? 0);
}

/** The operator: a tenant, a token, the audit log page by page. */
export async function operatorJourney(baseUrl: string, token: string): Promise<string[]> {
  const client = kiosk(baseUrl, token);
  await client.POST("/v1/tenants", { body: { id: "globex", display: "Globex" } });
  const created = await client.POST("/v1/tokens", { body: { role: "tenant", scope: "globex", label: "globex" } });
  const secret: string | undefined = created.data?.token;
  const actions: string[] = [];
  let after: number | undefined;
  for (;;) {
    const page = await client.GET("/v1/audit", { params: { query: { limit: 100, after } } });
    const entries: Schemas["AuditEntry"][] = page.data?.items ?? [];
    actions.push(...entries.map((e) => `${e.atMs} ${e.actor} ${e.action}`));
    const next = page.data?.next;
    if (!next) break;
    after = Number(next);
  }
  return secret ? actions : [];
}
