-- The rollup now counts each batch's events as they are inserted (rows go in with
-- rolled_up = 1), so no row waits to be rolled up and the index of pending rows is dead
-- weight on every insert.
DROP INDEX IF EXISTS cost_events_pending;
