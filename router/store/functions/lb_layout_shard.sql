-- lb_layout_shard: its present definition (last changed in migrations/008_board_ranges.sql).
-- Applied after the migrations by router/store/migrate.py whenever this file changes.

-- Where a player with this score and tie-break belongs: p_split is the board's split
-- ([{"id", "min_score"}] in the layout's shard order; equal bounds = an empty shard),
-- p_move the running move if it re-splits this board (else NULL).
-- p_move: {"lo", "hi", "source", "dest", "up", "cursors": {"<board period>": [score, seq]}}
-- up = true: [lo, hi) goes from the lower shard to the upper one, highest first,
-- so the moved players are those at or above the cursor; up = false: from the
-- upper shard down, lowest first, moved = at or below the cursor. Either way the
-- players on each side stay in rank order, so global ranks stay exact mid-move.
CREATE OR REPLACE FUNCTION lb_layout_shard(
    p_board_period text, p_score bigint, p_seq bigint, p_split jsonb, p_move jsonb
) RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    k int;
    cursor_at jsonb;
    cs bigint;
    cq bigint;
    moved boolean;
BEGIN
    IF p_move IS NOT NULL AND p_score >= (p_move->>'lo')::bigint AND p_score < (p_move->>'hi')::bigint THEN
        cursor_at := p_move->'cursors'->p_board_period;
        IF cursor_at IS NULL THEN
            RETURN p_move->>'source';
        END IF;
        cs := (cursor_at->>0)::bigint;
        cq := (cursor_at->>1)::bigint;
        IF (p_move->>'up')::boolean THEN
            moved := p_score > cs OR (p_score = cs AND p_seq <= cq);
        ELSE
            moved := p_score < cs OR (p_score = cs AND p_seq >= cq);
        END IF;
        RETURN CASE WHEN moved THEN p_move->>'dest' ELSE p_move->>'source' END;
    END IF;
    FOR k IN REVERSE jsonb_array_length(p_split) - 1..0 LOOP
        IF p_score >= (p_split->k->>'min_score')::bigint THEN
            RETURN p_split->k->>'id';
        END IF;
    END LOOP;
    RETURN p_split->0->>'id';
END $$;
