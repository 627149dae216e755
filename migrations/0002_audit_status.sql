-- Admin writes record their outcome. A config change claims its version with a `pending`
-- row, then writes KV, then marks the row `applied` or `failed` (with why in `detail`), so
-- a write that fails halfway neither locks later changes out nor leaves the log claiming
-- a version that never took effect. Rows written before this migration were recorded
-- only once they had been (at least) claimed: they keep `applied`, and one whose version
-- never became active is marked `failed` by the next change (see src/edge/store.rs).

ALTER TABLE audit_log ADD COLUMN status TEXT NOT NULL DEFAULT 'applied';  -- pending, applied, failed
ALTER TABLE audit_log ADD COLUMN detail TEXT;                             -- why a write failed
