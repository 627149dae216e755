-- The ledger: one row per client request, a daily rollup for breakdowns, and the audit
-- log of admin changes. Money is integer micro-dollars (1 USD = 1,000,000).

CREATE TABLE cost_events (
  request_id        TEXT PRIMARY KEY,          -- idempotent inserts: a retried batch cannot double a request
  ts_ms             INTEGER NOT NULL,
  day               TEXT NOT NULL,             -- UTC, YYYY-MM-DD
  key_id            TEXT NOT NULL,
  team              TEXT NOT NULL,
  feature           TEXT NOT NULL,
  env               TEXT NOT NULL,
  caller_country    TEXT,
  caller_continent  TEXT,
  caller_colo       TEXT,
  residency_rule    TEXT NOT NULL,
  jurisdiction      TEXT,
  provider          TEXT,
  region            TEXT,
  deployment        TEXT,
  endpoint_host     TEXT,
  alias             TEXT NOT NULL,
  model             TEXT,
  input_tokens      INTEGER NOT NULL DEFAULT 0,
  output_tokens     INTEGER NOT NULL DEFAULT 0,
  cached_tokens     INTEGER NOT NULL DEFAULT 0,
  cache_write_tokens INTEGER NOT NULL DEFAULT 0,
  cost_micros       INTEGER,                   -- NULL when unpriced, never a silent 0
  priced            INTEGER NOT NULL DEFAULT 1,
  status            INTEGER NOT NULL,
  outcome           TEXT NOT NULL,             -- ok, cut, error
  latency_ms        INTEGER NOT NULL,
  ttfb_ms           INTEGER,
  attempts          INTEGER NOT NULL,
  attempts_detail   TEXT,                      -- JSON: every attempt and why it was left
  rolled_up         INTEGER NOT NULL DEFAULT 0 -- counted in cost_daily yet?
);

CREATE INDEX cost_events_day ON cost_events (day);
CREATE INDEX cost_events_team_day ON cost_events (team, day);
CREATE INDEX cost_events_key_day ON cost_events (key_id, day);
CREATE INDEX cost_events_pending ON cost_events (rolled_up) WHERE rolled_up = 0;

CREATE TABLE cost_daily (
  day               TEXT NOT NULL,
  team              TEXT NOT NULL,
  feature           TEXT NOT NULL,
  env               TEXT NOT NULL,
  caller_country    TEXT NOT NULL,
  caller_continent  TEXT NOT NULL,
  jurisdiction      TEXT NOT NULL,
  provider          TEXT NOT NULL,
  region            TEXT NOT NULL,
  deployment        TEXT NOT NULL,
  model             TEXT NOT NULL,
  requests          INTEGER NOT NULL,
  input_tokens      INTEGER NOT NULL,
  output_tokens     INTEGER NOT NULL,
  cached_tokens     INTEGER NOT NULL,
  cost_micros       INTEGER NOT NULL,
  unpriced_requests INTEGER NOT NULL,
  PRIMARY KEY (day, team, feature, env, caller_country, caller_continent, jurisdiction, provider, region, deployment, model)
);

CREATE TABLE audit_log (
  id                INTEGER PRIMARY KEY AUTOINCREMENT,
  ts_ms             INTEGER NOT NULL,
  actor             TEXT NOT NULL,             -- the admin token's label
  action            TEXT NOT NULL,             -- e.g. residency.replace, config.rollback, key.revoke
  old_version       INTEGER,
  new_version       INTEGER UNIQUE,            -- config versions: two concurrent writers conflict here
  summary           TEXT NOT NULL
);
