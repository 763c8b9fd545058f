-- lb_retry: its present definition (last changed in migrations/005_set_based_apply.sql).
-- Applied after the migrations by router/store/migrate.py whenever this file changes.

CREATE OR REPLACE FUNCTION lb_retry(p_reason text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', p_reason USING ERRCODE = '40001';
END $$;
