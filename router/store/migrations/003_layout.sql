-- The live shard layout: which shards exist, in score order, and where their
-- ranges start. Written by the shard manager, read by routers (to know the shards)
-- and by lb_apply_events (to place every write). While a rebalance moves one
-- boundary, `move` says which score range goes from which shard to which, and
-- per month how far it has got (a cursor in rank order), so writes during the
-- move land on the side of the cursor they belong to.
CREATE TABLE shard_layout (
    id         int         PRIMARY KEY CHECK (id = 1),
    epoch      bigint      NOT NULL,
    shards     jsonb       NOT NULL,  -- [{"id", "address", "min_score"}]; equal min_scores = empty shards
    move       jsonb,                 -- null, or see lb_layout_shard
    target     jsonb,                 -- the map an unfinished `apply` is heading to
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Moves walk each month's board in rank order; archives and quantiles read it too.
CREATE INDEX player_scores_rank ON player_scores (month, score DESC, seq);

-- Where a player with this score and tie-break belongs under a layout.
-- p_move: {"lo", "hi", "source", "dest", "up", "cursors": {"YYYY-MM-DD": [score, seq]}}
-- up = true: [lo, hi) goes from the lower shard to the upper one, highest first,
-- so the moved players are those at or above the cursor; up = false: from the
-- upper shard down, lowest first, moved = at or below the cursor. Either way the
-- players on each side stay in rank order, so global ranks stay exact mid-move.
CREATE OR REPLACE FUNCTION lb_layout_shard(
    p_month date, p_score bigint, p_seq bigint, p_bounds bigint[], p_ids text[], p_move jsonb
) RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    k int;
    cursor_at jsonb;
    cs bigint;
    cq bigint;
    moved boolean;
BEGIN
    IF p_move IS NOT NULL AND p_score >= (p_move->>'lo')::bigint AND p_score < (p_move->>'hi')::bigint THEN
        cursor_at := p_move->'cursors'->(p_month::text);
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
    FOR k IN REVERSE array_length(p_bounds, 1)..1 LOOP
        IF p_score >= p_bounds[k] THEN
            RETURN p_ids[k];
        END IF;
    END LOOP;
    RETURN p_ids[1];
END $$;

-- One step of a boundary move for one month, under the month's exclusive lock (no
-- group of that month commits meanwhile): the next p_limit players past the cursor
-- change shard (version + 1, outbox row), and the cursor advances to the last one.
-- Returns the moved players; none means this month's part of the move is done.
CREATE OR REPLACE FUNCTION lb_move_step(p_month date, p_limit int)
RETURNS TABLE (user_id text, score bigint, version bigint, seq bigint, shard text, prev_shard text)
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
BEGIN
    PERFORM pg_advisory_xact_lock(lb_month_lock(p_month));
    SELECT * INTO layout FROM shard_layout WHERE id = 1 FOR UPDATE;
    mv := layout.move;
    IF mv IS NULL THEN
        RETURN;
    END IF;
    up := (mv->>'up')::boolean;
    lo := (mv->>'lo')::bigint;
    hi := (mv->>'hi')::bigint;
    IF mv->'cursors'->(p_month::text) IS NOT NULL THEN
        cs := (mv->'cursors'->(p_month::text)->>0)::bigint;
        cq := (mv->'cursors'->(p_month::text)->>1)::bigint;
    ELSIF up THEN
        cs := hi; cq := 0;
    ELSE
        cs := lo; cq := 9223372036854775807;
    END IF;

    -- One statement: pick the next players past the cursor in move order (the
    -- ORDER BY matches the (month, score DESC, seq) index, forwards or backwards),
    -- move them, and queue their Redis work. The month lock keeps writers out
    -- meanwhile, so a step is kept to a few hundred players.
    IF up THEN
        WITH moving AS (
            SELECT p.user_id FROM player_scores p
             WHERE p.month = p_month AND p.score >= lo AND p.score < hi
               AND p.score <= cs AND (p.score < cs OR p.seq > cq)  -- "p.score <= cs" bounds the index scan
             ORDER BY p.score DESC, p.seq ASC LIMIT p_limit
        ), moved AS (
            UPDATE player_scores p
               SET version = p.version + 1, shard = mv->>'dest', epoch = layout.epoch, updated_at = now()
              FROM moving m WHERE p.month = p_month AND p.user_id = m.user_id
            RETURNING p.user_id, p.score, p.version, p.seq
        ), queued AS (
            INSERT INTO redis_outbox AS o (month, user_id, version, first_version)
            SELECT p_month, moved.user_id, moved.version, moved.version FROM moved
            ON CONFLICT (month, user_id) DO UPDATE SET version = excluded.version
        )
        SELECT array_agg(moved.user_id), array_agg(moved.score), array_agg(moved.version), array_agg(moved.seq)
          INTO uids, scores, versions, seqs FROM moved;
    ELSE
        WITH moving AS (
            SELECT p.user_id FROM player_scores p
             WHERE p.month = p_month AND p.score >= lo AND p.score < hi
               AND p.score >= cs AND (p.score > cs OR p.seq < cq)
             ORDER BY p.score ASC, p.seq DESC LIMIT p_limit
        ), moved AS (
            UPDATE player_scores p
               SET version = p.version + 1, shard = mv->>'dest', epoch = layout.epoch, updated_at = now()
              FROM moving m WHERE p.month = p_month AND p.user_id = m.user_id
            RETURNING p.user_id, p.score, p.version, p.seq
        ), queued AS (
            INSERT INTO redis_outbox AS o (month, user_id, version, first_version)
            SELECT p_month, moved.user_id, moved.version, moved.version FROM moved
            ON CONFLICT (month, user_id) DO UPDATE SET version = excluded.version
        )
        SELECT array_agg(moved.user_id), array_agg(moved.score), array_agg(moved.version), array_agg(moved.seq)
          INTO uids, scores, versions, seqs FROM moved;
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
        shard := mv->>'dest'; prev_shard := mv->>'source';
        RETURN NEXT;
    END LOOP;
    IF last_score IS NOT NULL THEN
        UPDATE shard_layout
           SET move = jsonb_set(move, ARRAY['cursors', p_month::text], jsonb_build_array(last_score, last_seq)),
               updated_at = now()
         WHERE id = 1;
    END IF;
END $$;

-- Ends a boundary move, under every given month's exclusive lock: if no player of
-- those months is left on the source side of the cursor, the layout takes the new
-- shard list (with the moved boundary) and a new epoch. Returns whether it ended.
CREATE OR REPLACE FUNCTION lb_move_finish(p_months date[], p_shards jsonb)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    m date;
    mv jsonb;
    cs bigint;
    cq bigint;
    left_behind boolean;
BEGIN
    FOR m IN SELECT DISTINCT x FROM unnest(p_months) AS x ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(lb_month_lock(m));
    END LOOP;
    SELECT move INTO mv FROM shard_layout WHERE id = 1 FOR UPDATE;
    IF mv IS NOT NULL THEN
        FOREACH m IN ARRAY p_months LOOP
            IF mv->'cursors'->(m::text) IS NOT NULL THEN
                cs := (mv->'cursors'->(m::text)->>0)::bigint;
                cq := (mv->'cursors'->(m::text)->>1)::bigint;
            ELSIF (mv->>'up')::boolean THEN
                cs := (mv->>'hi')::bigint; cq := 0;
            ELSE
                cs := (mv->>'lo')::bigint; cq := 9223372036854775807;
            END IF;
            IF (mv->>'up')::boolean THEN
                SELECT EXISTS (SELECT 1 FROM player_scores p
                    WHERE p.month = m AND p.score >= (mv->>'lo')::bigint AND p.score < (mv->>'hi')::bigint
                      AND p.score <= cs AND (p.score < cs OR p.seq > cq)) INTO left_behind;
            ELSE
                SELECT EXISTS (SELECT 1 FROM player_scores p
                    WHERE p.month = m AND p.score >= (mv->>'lo')::bigint AND p.score < (mv->>'hi')::bigint
                      AND p.score >= cs AND (p.score > cs OR p.seq < cq)) INTO left_behind;
            END IF;
            IF left_behind THEN
                RETURN false;
            END IF;
        END LOOP;
    END IF;
    UPDATE shard_layout SET shards = p_shards, move = NULL, epoch = epoch + 1, updated_at = now() WHERE id = 1;
    RETURN true;
END $$;
