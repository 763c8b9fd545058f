-- lb_player_lock: its present definition (last changed in migrations/010_players.sql).
-- Applied after the migrations by router/store/migrate.py whenever this file changes.

-- Writers of a player (on any board) hold this shared; hiding, unhiding, removing an
-- entry and erasing the player hold it exclusively (router/store/players.py).
CREATE OR REPLACE FUNCTION lb_player_lock(p_user_id text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT hashtextextended('lb-user:' || p_user_id, 0) $$;
