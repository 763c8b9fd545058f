-- lb_event_partition: its present definition (last changed in migrations/009_partitioned_audit_log.sql).
-- Applied after the migrations by router/store/migrate.py whenever this file changes.

-- The audit log's partition for one month of arrival (UTC), made if missing; returns
-- its name. Rows that went to the default partition for want of it move into it, so
-- a month whose partition was made late is still one partition that retention drops.
CREATE OR REPLACE FUNCTION lb_event_partition(p_month date) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    month_start constant date := date_trunc('month', p_month)::date;
    month_end constant date := (date_trunc('month', p_month) + interval '1 month')::date;
    name constant text := 'score_events_' || to_char(p_month, 'YYYY_MM');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('lb-event-partitions', 0));
    IF to_regclass(name) IS NOT NULL THEN
        RETURN name;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE score_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
    EXECUTE format(
        'WITH moved AS (DELETE FROM score_events_default WHERE recorded_month >= %L AND recorded_month < %L'
        ' RETURNING *) INSERT INTO %I SELECT * FROM moved', month_start, month_end, name);
    EXECUTE format('ALTER TABLE score_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   name, month_start, month_end);
    RETURN name;
END $$;
