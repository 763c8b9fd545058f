-- lb_period_lock: its present definition (last changed in migrations/007_boards.sql).
-- Applied after the migrations by router/store/migrate.py whenever this file changes.

-- Writers of a board period hold this shared; archiving it and each rebalance step
-- over it hold it exclusively.
CREATE OR REPLACE FUNCTION lb_period_lock(p_board_period text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT hashtextextended('lb-period:' || p_board_period, 0) $$;
