-- lb_user_hash: its present definition (last changed in migrations/010_players.sql).
-- Applied after the migrations by router/store/migrate.py whenever this file changes.

-- What an erasure keeps of the user id (router/store/players.py computes the same).
CREATE OR REPLACE FUNCTION lb_user_hash(p_user_id text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT encode(sha256(convert_to(p_user_id, 'UTF8')), 'hex') $$;
