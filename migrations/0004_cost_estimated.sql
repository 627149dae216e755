-- Every upstream call that may have cost money is priced: what a provider did not report
-- (a call that timed out, failed after the provider took it, or a stream cut before its
-- final usage) is estimated. This is the estimated part of `cost_micros`, in micro-dollars:
-- per event, and summed in the daily rollup. Rows from before are 0 (all reported).
ALTER TABLE cost_events ADD COLUMN cost_estimated_micros INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cost_daily ADD COLUMN cost_estimated_micros INTEGER NOT NULL DEFAULT 0;
