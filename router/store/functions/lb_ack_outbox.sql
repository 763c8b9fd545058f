-- lb_ack_outbox: its present definition (last changed in migrations/006_outbox_per_group.sql).
-- Applied after the migrations by router/store/migrate.py whenever this file changes.

CREATE OR REPLACE FUNCTION lb_ack_outbox(p_ids bigint[]) RETURNS int LANGUAGE sql AS $$
    WITH deleted AS (DELETE FROM redis_outbox WHERE id = ANY (p_ids) RETURNING 1)
    SELECT count(*)::int FROM deleted;
$$;
