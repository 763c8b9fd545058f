-- lb_month_lock: its present definition (last changed in migrations/004_apply_events.sql).
-- Applied after the migrations by router/store/migrate.py whenever this file changes.

CREATE OR REPLACE FUNCTION lb_month_lock(p_month date) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT hashtextextended('lb-month:' || p_month::text, 0) $$;
