-- An attempt whose provider reported processing outside the deployment's jurisdiction
-- (Anthropic's `usage.inference_geo`) is a residency breach: counted per event and in the
-- daily rollup, so a breach can be found by caller, team and deployment. Older rows: 0.
ALTER TABLE cost_events ADD COLUMN residency_breaches INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cost_daily ADD COLUMN residency_breaches INTEGER NOT NULL DEFAULT 0;
