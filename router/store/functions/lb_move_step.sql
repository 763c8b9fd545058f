-- lb_move_step: its present definition (last changed in migrations/008_board_ranges.sql).
-- Applied after the migrations by router/store/migrate.py whenever this file changes.

CREATE OR REPLACE FUNCTION lb_move_step(p_board_period text, p_limit int)
RETURNS TABLE (user_id text, score bigint, version bigint, seq bigint, shard text, prev_shard text, outbox_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    layout record;
    mv jsonb;
    up boolean;
    lo bigint;
    hi bigint;
    cs bigint;
    cq bigint;
    last_score bigint;
    last_seq bigint;
    uids text[];
    scores bigint[];
    versions bigint[];
    seqs bigint[];
    k int;
    work_id bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(lb_period_lock(p_board_period));
    SELECT * INTO layout FROM shard_layout WHERE id = 1 FOR UPDATE;
    mv := layout.move;
    -- A move re-splits the board it names, or (naming none) the boards without a split
    -- of their own: any other board's players stay where they are.
    IF mv IS NULL OR NOT coalesce(
        (SELECT CASE WHEN mv->>'board' IS NULL THEN b.split IS NULL ELSE b.id = mv->>'board' END
           FROM boards b WHERE b.id = split_part(p_board_period, ':', 1)), false) THEN
        RETURN;
    END IF;
    up := (mv->>'up')::boolean;
    lo := (mv->>'lo')::bigint;
    hi := (mv->>'hi')::bigint;
    IF mv->'cursors'->p_board_period IS NOT NULL THEN
        cs := (mv->'cursors'->p_board_period->>0)::bigint;
        cq := (mv->'cursors'->p_board_period->>1)::bigint;
    ELSIF up THEN
        cs := hi; cq := 0;
    ELSE
        cs := lo; cq := 9223372036854775807;
    END IF;

    -- One statement: pick the next players past the cursor in move order (the
    -- ORDER BY matches the (board_period, score DESC, seq) index, forwards or backwards),
    -- move them. The period lock keeps writers out
    -- meanwhile, so a step is kept to a few hundred players.
    IF up THEN
        WITH moving AS (
            SELECT p.user_id FROM player_scores p
             WHERE p.board_period = p_board_period AND p.score >= lo AND p.score < hi
               AND p.score <= cs AND (p.score < cs OR p.seq > cq)  -- "p.score <= cs" bounds the index scan
             ORDER BY p.score DESC, p.seq ASC LIMIT p_limit
        ), moved AS (
            UPDATE player_scores p
               SET version = p.version + 1, shard = mv->>'dest', epoch = layout.epoch, updated_at = now()
              FROM moving m WHERE p.board_period = p_board_period AND p.user_id = m.user_id
            RETURNING p.user_id, p.score, p.version, p.seq
        )
        SELECT array_agg(moved.user_id), array_agg(moved.score), array_agg(moved.version), array_agg(moved.seq)
          INTO uids, scores, versions, seqs FROM moved;
    ELSE
        WITH moving AS (
            SELECT p.user_id FROM player_scores p
             WHERE p.board_period = p_board_period AND p.score >= lo AND p.score < hi
               AND p.score >= cs AND (p.score > cs OR p.seq < cq)
             ORDER BY p.score ASC, p.seq DESC LIMIT p_limit
        ), moved AS (
            UPDATE player_scores p
               SET version = p.version + 1, shard = mv->>'dest', epoch = layout.epoch, updated_at = now()
              FROM moving m WHERE p.board_period = p_board_period AND p.user_id = m.user_id
            RETURNING p.user_id, p.score, p.version, p.seq
        )
        SELECT array_agg(moved.user_id), array_agg(moved.score), array_agg(moved.version), array_agg(moved.seq)
          INTO uids, scores, versions, seqs FROM moved;
    END IF;

    IF uids IS NOT NULL THEN
        INSERT INTO redis_outbox (board_periods, user_ids)
        VALUES (array_fill(p_board_period, ARRAY[array_length(uids, 1)]), uids)
        RETURNING redis_outbox.id INTO work_id;
    END IF;
    FOR k IN 1..coalesce(array_length(uids, 1), 0) LOOP
        -- The cursor ends on the last player in move order.
        IF last_score IS NULL
           OR (up AND (scores[k] < last_score OR (scores[k] = last_score AND seqs[k] > last_seq)))
           OR (NOT up AND (scores[k] > last_score OR (scores[k] = last_score AND seqs[k] < last_seq))) THEN
            last_score := scores[k];
            last_seq := seqs[k];
        END IF;
        user_id := uids[k]; score := scores[k]; version := versions[k]; seq := seqs[k];
        shard := mv->>'dest'; prev_shard := mv->>'source'; outbox_id := work_id;
        RETURN NEXT;
    END LOOP;
    IF last_score IS NOT NULL THEN
        UPDATE shard_layout
           SET move = jsonb_set(move, ARRAY['cursors', p_board_period], jsonb_build_array(last_score, last_seq)),
               updated_at = now()
         WHERE id = 1;
    END IF;
END $$;
