-- lb_move_finish: its present definition (last changed in migrations/008_board_ranges.sql).
-- Applied after the migrations by router/store/migrate.py whenever this file changes.

-- Ends a boundary move, under every given board period's exclusive lock: if no
-- player of those periods is left on the source side of the cursor, the new split (with
-- the moved boundary) takes effect: the board's own, for a move that names a board, else
-- the layout's shard list; either way with a new layout epoch. Returns whether it ended.
CREATE OR REPLACE FUNCTION lb_move_finish(p_board_periods text[], p_shards jsonb)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    m text;
    mv jsonb;
    cs bigint;
    cq bigint;
    left_behind boolean;
BEGIN
    FOR m IN SELECT DISTINCT x FROM unnest(p_board_periods) AS x ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(lb_period_lock(m));
    END LOOP;
    SELECT move INTO mv FROM shard_layout WHERE id = 1 FOR UPDATE;
    IF mv IS NOT NULL THEN
        FOREACH m IN ARRAY p_board_periods LOOP
            IF mv->'cursors'->m IS NOT NULL THEN
                cs := (mv->'cursors'->m->>0)::bigint;
                cq := (mv->'cursors'->m->>1)::bigint;
            ELSIF (mv->>'up')::boolean THEN
                cs := (mv->>'hi')::bigint; cq := 0;
            ELSE
                cs := (mv->>'lo')::bigint; cq := 9223372036854775807;
            END IF;
            IF (mv->>'up')::boolean THEN
                SELECT EXISTS (SELECT 1 FROM player_scores p
                    WHERE p.board_period = m AND p.score >= (mv->>'lo')::bigint AND p.score < (mv->>'hi')::bigint
                      AND p.score <= cs AND (p.score < cs OR p.seq > cq)) INTO left_behind;
            ELSE
                SELECT EXISTS (SELECT 1 FROM player_scores p
                    WHERE p.board_period = m AND p.score >= (mv->>'lo')::bigint AND p.score < (mv->>'hi')::bigint
                      AND p.score >= cs AND (p.score > cs OR p.seq < cq)) INTO left_behind;
            END IF;
            IF left_behind THEN
                RETURN false;
            END IF;
        END LOOP;
    END IF;
    IF mv->>'board' IS NOT NULL THEN
        -- Under the boards' lock (router/store/boards.py BOARDS_LOCK), so that updated_at,
        -- the registry's version that routers follow, only ever grows.
        PERFORM pg_advisory_xact_lock(1818387055);
        UPDATE boards SET split = p_shards, updated_at = clock_timestamp() WHERE id = mv->>'board';
        UPDATE shard_layout SET move = NULL, epoch = epoch + 1, updated_at = now() WHERE id = 1;
    ELSE
        UPDATE shard_layout SET shards = p_shards, move = NULL, epoch = epoch + 1, updated_at = now() WHERE id = 1;
    END IF;
    RETURN true;
END $$;
