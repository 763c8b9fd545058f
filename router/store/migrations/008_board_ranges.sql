-- Score ranges per board. A board's `split` names the shards it is on, in the layout's
-- shard order, each with its lower bound in stored scores:
-- [{"id": "s1", "min_score": 0}, {"id": "s2", "min_score": 5000}]. NULL: the board follows
-- the layout's own split (shard_layout.shards, the shard map file's ranges), as every
-- board did before; the original board `global` keeps doing so. Boards created from now
-- on without ranges get one shard (router/store/boards.py).
--
-- A running move may name a board (move.board): it re-splits that board alone. A move
-- naming none re-splits the boards without a split of their own, as before; a move that
-- an earlier release left running is one of those and finishes as it would have.
--
-- A rolling upgrade: routers and shard managers of the previous release keep working
-- on it (no function they call changed its arguments); boards they create follow the
-- layout's split.

ALTER TABLE boards ADD COLUMN split jsonb
    CHECK (split IS NULL OR (jsonb_typeof(split) = 'array' AND jsonb_array_length(split) > 0));

DROP FUNCTION lb_layout_shard(text, bigint, bigint, bigint[], text[], jsonb);

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

-- Commits a group of events. An event names its board; it updates one row per window
-- of that board (p_row_events: which event, 1-based; p_row_periods: the board period
-- of that window, in the board's window order), all in this one transaction.
-- Scores are kept so that higher is better: an `asc` board stores 2^53-1 - score
-- (see boards.score_order), which keeps layouts, moves and Redis order-agnostic.
CREATE OR REPLACE FUNCTION lb_apply_events(
    p_boards      text[],
    p_user_ids    text[],
    p_match_ids   text[],
    p_modes       text[],
    p_values      bigint[],
    p_occurred    timestamptz[],
    p_arrival     int[],
    p_row_events  int[],
    p_row_periods text[]
) RETURNS TABLE (
    idx          int,      -- the row (event, window), 1-based, as sent
    event        int,      -- the event it belongs to, 1-based
    status       text,     -- applied | duplicate | conflict | refused | closed (the event's, on each of its rows)
    detail       text,
    board_period text,     -- for a resend: the period the original event went to
    score        bigint,   -- stored (higher is better) score after the event; NULL when closed
    prev_score   bigint,   -- NULL when the player had no score in that period
    version      bigint,
    prev_version bigint,   -- the version before this event (NULL: none)
    seq          bigint,
    shard        text,
    prev_shard   text,
    outbox_id    bigint    -- the group's outbox row: acknowledge it once the shards hold every state
) LANGUAGE plpgsql
-- Planned once per connection: every join is an index probe per row, so one plan
-- suits groups of any size, and planning the round statement anew for each group
-- (which the plan cache otherwise chooses here) costs more than running small ones.
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    max_score constant bigint := 9007199254740991;
    n int := coalesce(array_length(p_user_ids, 1), 0);
    seqs bigint[];
    archived text[];
    closed_boards text[];
    asc_boards text[];
    layout_epoch bigint;
    layout_move jsonb;
    layout_shards jsonb;
    splits jsonb;
    moving_boards text[];
    round_of int[];
    rounds int;
    r int;
    work_id bigint;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    -- Reserve one tie-break value per event up front and hand them out by arrival
    -- position (p_arrival: the array order need not be arrival order), so within a
    -- group equal scores order by who sent first; every window of an event shares it.
    -- Rounds per (board, user): a match_id is unique per board and user across
    -- periods, so two events of one player on one board never share a round.
    SELECT (SELECT array_agg(v ORDER BY v) FROM (SELECT nextval('score_seq') AS v FROM generate_series(1, n)) reserved),
           array_agg(k ORDER BY pos), max(k)
      INTO seqs, round_of, rounds
      FROM (SELECT t.pos, row_number() OVER (PARTITION BY t.board, t.user_id ORDER BY t.pos)::int AS k
              FROM unnest(p_boards, p_user_ids) WITH ORDINALITY AS t(board, user_id, pos)) numbered;
    -- Archiving a period takes this lock exclusively: a group either commits before
    -- the snapshot (and is in it) or sees the period closed. Never lost in between.
    PERFORM pg_advisory_xact_lock_shared(lb_period_lock(bp))
       FROM (SELECT DISTINCT unnest(p_row_periods) AS bp ORDER BY 1) periods;
    PERFORM pg_advisory_xact_lock(hashtextextended('lb-player:' || bp || ':' || pu, 0))
       FROM (SELECT DISTINCT p_row_periods[k] AS bp, p_user_ids[p_row_events[k]] AS pu
               FROM generate_subscripts(p_row_periods, 1) AS k ORDER BY 1, 2) ordered;
    -- Read after the locks (in a statement of their own, so the snapshot includes what
    -- committed before we got them): a rebalance step changes the layout only under
    -- the period's exclusive lock, so this group places every player by the layout it
    -- sees, and an archive committed before us is seen as closed.
    SELECT l.epoch, l.move, l.shards,
           (SELECT coalesce(array_agg(a.board_period), '{}') FROM period_archives a
             WHERE a.board_period = ANY (p_row_periods))
      INTO layout_epoch, layout_move, layout_shards, archived
      FROM shard_layout l WHERE l.id = 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no shard layout: start a router or run shard-manager migrate';
    END IF;
    -- A board that is closed (or was never created here) takes no events. Each board is
    -- placed by its own split, or the layout's where it has none; a running move
    -- re-splits the board it names, or (naming none) every board with no split of its own.
    -- (A move finishes under the exclusive locks of its board's periods, so the split and
    -- the move read here belong together for every board of this group.)
    SELECT coalesce(array_agg(wanted.id) FILTER (WHERE b.id IS NULL OR b.closed_at IS NOT NULL), '{}'),
           coalesce(array_agg(wanted.id) FILTER (WHERE b.score_order = 'asc'), '{}'),
           jsonb_object_agg(wanted.id, coalesce(b.split, layout_shards)),
           coalesce(array_agg(wanted.id) FILTER (
               WHERE layout_move IS NOT NULL AND CASE WHEN layout_move->>'board' IS NULL THEN b.split IS NULL
                                                      ELSE layout_move->>'board' = wanted.id END), '{}')
      INTO closed_boards, asc_boards, splits, moving_boards
      FROM (SELECT DISTINCT unnest(p_boards) AS id) wanted LEFT JOIN boards b ON b.id = wanted.id;

    -- The group's Redis work, one row for all its (period, player) pairs (a player
    -- whose state did not change is checked and found finished).
    INSERT INTO redis_outbox (board_periods, user_ids)
    VALUES (p_row_periods, (SELECT array_agg(p_user_ids[x.e] ORDER BY x.k)
                              FROM unnest(p_row_events) WITH ORDINALITY AS x(e, k)))
    RETURNING redis_outbox.id INTO work_id;

    FOR r IN 1..rounds LOOP
        RETURN QUERY
        WITH rows_in AS (
            -- One row per (event, window); the event's own fields by subscript, so no
            -- join between rows and events (planned without statistics, a join of two
            -- unnested arrays becomes a nested loop: quadratic in the group).
            SELECT x.k::int AS k, x.e AS pos, x.bp, row_number() OVER (PARTITION BY x.e ORDER BY x.k)::int AS w,
                   p_boards[x.e] AS board, p_user_ids[x.e] AS user_id, p_match_ids[x.e] AS match_id,
                   p_modes[x.e] AS mode, p_values[x.e] AS value, p_occurred[x.e] AS occurred,
                   seqs[p_arrival[x.e]] AS new_seq, p_boards[x.e] = ANY (asc_boards) AS flip
              FROM unnest(p_row_events, p_row_periods) WITH ORDINALITY AS x(e, bp, k)
             WHERE round_of[x.e] = r
        ), calc AS (
            -- Per row, by primary key: an earlier event with this match_id on this board;
            -- the player's state in that period; for a resend first recorded in another
            -- period, that period's state (a resend is answered with the state it names).
            -- Index probes per row (LATERAL ... LIMIT 1) keep the cost linear whatever the
            -- planner guesses about the arrays' length.
            SELECT s.*, pr.mode AS prior_mode, pr.value AS prior_value, pr.board_periods AS prior_periods,
                   c.score AS cur_score, c.version AS cur_version, c.seq AS cur_seq, c.shard AS cur_shard,
                   po.score IS NOT NULL AS prior_elsewhere, po.score AS po_score, po.version AS po_version,
                   po.seq AS po_seq, po.shard AS po_shard,
                   CASE s.mode
                        WHEN 'best' THEN greatest(c.score, CASE WHEN s.flip THEN max_score - s.value ELSE s.value END)
                        WHEN 'set' THEN CASE WHEN s.flip THEN max_score - s.value ELSE s.value END
                        ELSE CASE WHEN s.flip THEN coalesce(c.score, max_score) - s.value
                                  ELSE coalesce(c.score, 0) + s.value END
                   END AS new_score
              FROM rows_in s
              LEFT JOIN LATERAL (
                   SELECT e.mode, e.value, e.board_periods FROM score_events e
                    WHERE e.board = s.board AND e.user_id = s.user_id AND e.match_id = s.match_id LIMIT 1) pr ON true
              LEFT JOIN LATERAL (
                   SELECT one.score, one.version, one.seq, one.shard FROM player_scores one
                    WHERE one.board_period = s.bp AND one.user_id = s.user_id LIMIT 1) c ON true
              LEFT JOIN LATERAL (
                   SELECT other.score, other.version, other.seq, other.shard FROM player_scores other
                    WHERE pr.board_periods[s.w] <> s.bp AND other.board_period = pr.board_periods[s.w]
                      AND other.user_id = s.user_id
                    LIMIT 1) po ON true
        ), judged AS (
            -- An event is decided as a whole: refused if any of its windows would leave
            -- the score range, closed if any of its periods is archived.
            SELECT calc.*,
                   bool_or(calc.bp = ANY (archived)) OVER (PARTITION BY calc.pos) AS period_closed,
                   bool_or(calc.new_score < 0 OR calc.new_score > max_score) OVER (PARTITION BY calc.pos)
                       AS out_of_range,
                   max(CASE WHEN calc.new_score < 0 OR calc.new_score > max_score
                            THEN CASE WHEN calc.flip THEN max_score - calc.new_score ELSE calc.new_score END END)
                       OVER (PARTITION BY calc.pos) AS refused_score,
                   min(CASE WHEN calc.bp = ANY (archived) THEN calc.bp END) OVER (PARTITION BY calc.pos)
                       AS closed_period
              FROM calc
        ), decided AS (
            SELECT j.*,
                   CASE WHEN j.board = ANY (closed_boards) OR j.period_closed THEN 'closed'
                        WHEN j.prior_mode IS NOT NULL THEN
                            CASE WHEN j.prior_mode = j.mode AND j.prior_value = j.value
                                 THEN 'duplicate' ELSE 'conflict' END
                        WHEN j.out_of_range THEN 'refused'
                        ELSE 'applied' END AS outcome
              FROM judged j
        ), placed AS (
            SELECT d.*, d.outcome = 'applied' AND d.new_score IS DISTINCT FROM d.cur_score AS changes,
                   CASE WHEN d.outcome = 'applied' AND d.new_score IS DISTINCT FROM d.cur_score
                        THEN lb_layout_shard(d.bp, d.new_score, d.new_seq, splits->d.board,
                                             CASE WHEN d.board = ANY (moving_boards) THEN layout_move END)
                   END AS new_shard
              FROM decided d
        ), inserted AS (
            INSERT INTO player_scores AS ps (board_period, user_id, score, version, seq, shard, epoch)
            SELECT p.bp, p.user_id, p.new_score, 1, p.new_seq, p.new_shard, layout_epoch
              FROM placed p WHERE p.changes AND p.cur_version IS NULL
            ON CONFLICT DO NOTHING
            RETURNING ps.board_period, ps.user_id
        ), updated AS (
            UPDATE player_scores ps
               SET score = p.new_score, version = p.cur_version + 1, seq = p.new_seq,
                   shard = p.new_shard, epoch = layout_epoch, updated_at = now()
              FROM placed p
             WHERE p.changes AND p.cur_version IS NOT NULL AND ps.board_period = p.bp AND ps.user_id = p.user_id
        ), recorded AS (
            -- One audit row per event, naming every period it updated and the score
            -- (as the board shows it) it left in each.
            INSERT INTO score_events AS e (board, user_id, match_id, board_periods, mode, value, occurred_at,
                                           scores_after)
            SELECT p.board, p.user_id, p.match_id, array_agg(p.bp ORDER BY p.w), p.mode, p.value, p.occurred,
                   array_agg(CASE WHEN p.flip THEN max_score - p.new_score ELSE p.new_score END ORDER BY p.w)
              FROM placed p WHERE p.outcome = 'applied'
             GROUP BY p.pos, p.board, p.user_id, p.match_id, p.mode, p.value, p.occurred
            ON CONFLICT DO NOTHING
            RETURNING e.board, e.user_id, e.match_id
        )
        SELECT p.k, p.pos,
               -- (NOT IN over a subquery is hashed once; a correlated NOT EXISTS here would scan
               -- the CTE for every row, quadratic in the group.)
               -- Under the player locks neither can happen; a writer that bypassed them
               -- would, and then the whole group must be retried, not half-applied.
               CASE WHEN p.changes AND p.cur_version IS NULL
                         AND (p.bp, p.user_id) NOT IN (SELECT i.board_period, i.user_id FROM inserted i)
                        THEN lb_retry('player ' || p.user_id || ' was created concurrently')
                    WHEN p.outcome = 'applied'
                         AND (p.board, p.user_id, p.match_id) NOT IN (SELECT x.board, x.user_id, x.match_id
                                                                        FROM recorded x)
                        THEN lb_retry('match_id ' || p.match_id || ' was recorded concurrently')
                    ELSE p.outcome END,
               CASE p.outcome
                    WHEN 'closed' THEN CASE WHEN p.board = ANY (closed_boards)
                                            THEN format('board %s is closed', p.board)
                                            ELSE format('period %s is archived', p.closed_period) END
                    WHEN 'conflict' THEN format(
                        'match_id %s was already recorded for this user with mode=%s score=%s',
                        p.match_id, p.prior_mode, p.prior_value)
                    WHEN 'refused' THEN format(
                        'the new score would be %s, outside [0, %s]', p.refused_score, max_score)
               END,
               CASE WHEN p.outcome = 'closed' THEN p.bp ELSE coalesce(p.prior_periods[p.w], p.bp) END,
               CASE WHEN p.outcome = 'closed' THEN NULL
                    WHEN p.prior_elsewhere THEN p.po_score
                    WHEN p.outcome = 'applied' THEN p.new_score ELSE p.cur_score END,
               CASE WHEN p.outcome = 'closed' THEN NULL
                    WHEN p.prior_elsewhere THEN p.po_score ELSE p.cur_score END,
               CASE WHEN p.outcome = 'closed' THEN NULL
                    WHEN p.prior_elsewhere THEN p.po_version
                    WHEN p.changes THEN coalesce(p.cur_version, 0) + 1 ELSE p.cur_version END,
               CASE WHEN p.outcome = 'closed' THEN NULL
                    WHEN p.prior_elsewhere THEN p.po_version ELSE p.cur_version END,
               CASE WHEN p.outcome = 'closed' THEN NULL
                    WHEN p.prior_elsewhere THEN p.po_seq
                    WHEN p.changes THEN p.new_seq ELSE p.cur_seq END,
               CASE WHEN p.outcome = 'closed' THEN NULL
                    WHEN p.prior_elsewhere THEN p.po_shard
                    WHEN p.changes THEN p.new_shard ELSE p.cur_shard END,
               CASE WHEN p.outcome = 'closed' THEN NULL
                    WHEN p.prior_elsewhere THEN p.po_shard ELSE p.cur_shard END,
               work_id
          FROM placed p;
    END LOOP;
END $$;

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
