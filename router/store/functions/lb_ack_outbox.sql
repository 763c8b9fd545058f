-- lb_ack_outbox: its present definition (last changed in migrations/006_outbox_per_group.sql).
-- Applied after the migrations by router/store/migrate.py whenever this file changes.

-- The signature routers from before migration 006 call: it acknowledges nothing, so
-- they keep running through an upgrade, and the reconciler finishes their groups.
CREATE OR REPLACE FUNCTION lb_ack_outbox(
    p_months date[], p_user_ids text[], p_min_versions bigint[], p_versions bigint[]
) RETURNS int LANGUAGE sql AS $$
    SELECT 0;
$$;

CREATE OR REPLACE FUNCTION lb_ack_outbox(p_ids bigint[]) RETURNS int LANGUAGE sql AS $$
    WITH deleted AS (DELETE FROM redis_outbox WHERE id = ANY (p_ids) RETURNING 1)
    SELECT count(*)::int FROM deleted;
$$;
