-- The operator's layer of apps' outbound HTTP set over the API (issue 26), below the
-- config file's [egress]: for every partner (scope '') or for one partner (scope = the
-- partner's name), whether its apps may call out at all and the hosts they may not
-- reach (a JSON list of host patterns). Only narrowing: no row widens anything.
CREATE TABLE egress_policy (
    scope TEXT PRIMARY KEY,
    enabled INTEGER NOT NULL,
    deny TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);
