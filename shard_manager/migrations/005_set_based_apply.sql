-- lb_apply_events, set-based: a handful of statements per group instead of five per
-- event. Same signature, same answers as 004's per-event loop.
--
-- A group is applied in rounds: round k holds the k-th event of every player in the
-- group, so no round has a player twice and each round is one statement. Later rounds
-- see earlier ones' writes (each statement of a plpgsql function takes a new snapshot
-- that includes this transaction's own changes), so a player's events still apply in
-- arrival order, and a match_id repeated inside the group is a duplicate of the first.
--
-- Races with other routers are detected, not prevented. A new player that another
-- transaction inserted first (our insert waits for it, then finds the row) is common
-- when concurrent groups bring the same new players: those events alone go round
-- again in a new statement, which sees and locks the row. An event another
-- transaction recorded while we waited for the player's row lock (a resend racing
-- its original) is rare and has already changed the player's row here, so it raises
-- SQLSTATE 40001 and the caller retries the whole group, which then sees the commit.

CREATE OR REPLACE FUNCTION lb_retry(p_reason text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', p_reason USING ERRCODE = '40001';
END $$;

CREATE OR REPLACE FUNCTION lb_apply_events(
    p_user_ids  text[],
    p_match_ids text[],
    p_months    date[],
    p_modes     text[],
    p_values    bigint[],
    p_occurred  timestamptz[],
    p_arrival   int[]
) RETURNS TABLE (
    idx        int,
    status     text,     -- applied | duplicate | conflict | refused | closed
    detail     text,
    month      date,
    score      bigint,
    prev_score bigint,   -- NULL when the player had no score that month
    version    bigint,
    prev_version bigint, -- the version before this event (NULL: none)
    seq        bigint,
    shard      text,
    prev_shard text
) LANGUAGE plpgsql
-- Planned once per connection: every join is an index probe per event, so one plan
-- suits groups of any size, and planning the round statement anew for each group
-- (which the plan cache otherwise chooses here) costs more than running it.
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    max_score constant bigint := 9007199254740991;
    n int := coalesce(array_length(p_user_ids, 1), 0);
    seqs bigint[];
    closed date[];
    layout_epoch bigint;
    layout_move jsonb;
    bounds bigint[];
    shard_ids text[];
    round_of int[];   -- which pass an event is in: its round, or a later mark if it went again
    rounds int;
    r int;
    mark int;
    fresh_mark int := 0;
    passes int;
    went_again int;
    res record;
    -- The events of the current pass, in (month, user_id) order.
    w_pos int[]; w_user text[]; w_match text[]; w_month date[]; w_mode text[];
    w_value bigint[]; w_occurred timestamptz[]; w_seq bigint[];
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    -- Events arrive sorted for locking, not in the order they came in. Reserve one
    -- tie-break value per event up front and hand them out by arrival position, so
    -- within a group equal scores still order by who sent first.
    -- Rounds per user, not per (month, user): a match_id is unique per user across
    -- months, so two events of one user never share a round.
    SELECT (SELECT array_agg(v ORDER BY v) FROM (SELECT nextval('score_seq') AS v FROM generate_series(1, n)) reserved),
           array_agg(k ORDER BY pos), max(k)
      INTO seqs, round_of, rounds
      FROM (SELECT t.pos, row_number() OVER (PARTITION BY t.user_id ORDER BY t.pos)::int AS k
              FROM unnest(p_user_ids) WITH ORDINALITY AS t(user_id, pos)) numbered;
    -- Archiving a month takes this lock exclusively: a group either commits before
    -- the snapshot (and is in it) or sees the month closed. Never lost in between.
    PERFORM pg_advisory_xact_lock_shared(lb_month_lock(m))
       FROM (SELECT DISTINCT unnest(p_months) AS m ORDER BY 1) months;
    -- Read after the month locks (in a statement of its own, so its snapshot includes
    -- whatever committed before we got them): a rebalance step changes the layout
    -- only under the exclusive lock, so this group places every player by the layout
    -- it sees, and an archive committed before us is seen as closed.
    SELECT l.epoch, l.move,
           (SELECT array_agg((e.s->>'min_score')::bigint ORDER BY e.o)
              FROM jsonb_array_elements(l.shards) WITH ORDINALITY AS e(s, o)),
           (SELECT array_agg(e.s->>'id' ORDER BY e.o)
              FROM jsonb_array_elements(l.shards) WITH ORDINALITY AS e(s, o)),
           (SELECT coalesce(array_agg(a.month), '{}') FROM month_archives a WHERE a.month = ANY (p_months))
      INTO layout_epoch, layout_move, bounds, shard_ids, closed
      FROM shard_layout l WHERE l.id = 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no shard layout: start a router or run shard-manager migrate';
    END IF;

    IF closed <> '{}' THEN
        RETURN QUERY
        SELECT t.pos::int, 'closed'::text, format('month %s is archived', to_char(t.month, 'YYYY-MM')),
               t.month, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::text, NULL::text
          FROM unnest(p_months) WITH ORDINALITY AS t(month, pos)
         WHERE t.month = ANY (closed);
    END IF;

    FOR r IN 1..rounds LOOP
      mark := r;
      passes := 0;
      LOOP
        passes := passes + 1;
        fresh_mark := fresh_mark - 1;
        went_again := 0;
        -- Sorted here, not by the caller's collation: the round statement locks rows in array order.
        SELECT array_agg(t.pos::int ORDER BY t.month, t.user_id), array_agg(t.user_id ORDER BY t.month, t.user_id),
               array_agg(t.match_id ORDER BY t.month, t.user_id), array_agg(t.month ORDER BY t.month, t.user_id),
               array_agg(t.mode ORDER BY t.month, t.user_id), array_agg(t.value ORDER BY t.month, t.user_id),
               array_agg(t.occurred ORDER BY t.month, t.user_id),
               array_agg(seqs[t.arrival] ORDER BY t.month, t.user_id)
          INTO w_pos, w_user, w_match, w_month, w_mode, w_value, w_occurred, w_seq
          FROM unnest(p_user_ids, p_match_ids, p_months, p_modes, p_values, p_occurred, p_arrival)
               WITH ORDINALITY AS t(user_id, match_id, month, mode, value, occurred, arrival, pos)
         WHERE round_of[t.pos] = mark AND NOT (t.month = ANY (closed));
        EXIT WHEN w_pos IS NULL;  -- every event of this round is in a closed month
        FOR res IN
        WITH inp AS (
            SELECT * FROM unnest(w_pos, w_user, w_match, w_month, w_mode, w_value, w_occurred, w_seq)
                       AS t(pos, user_id, match_id, month, mode, value, occurred, new_seq)
        ), calc AS (
            -- Per event, by primary key: lock and read the player's row; look for an
            -- earlier event with this match_id; for a resend first recorded in another
            -- month, that month's row (a resend is answered with the state it names).
            -- Index probes per row (LATERAL ... LIMIT 1) keep the cost linear whatever
            -- the planner guesses about the arrays' length, and lock rows in the
            -- arrays' (month, user_id) order, the order every group locks in.
            SELECT inp.*, c.score AS cur_score, c.version AS cur_version, c.seq AS cur_seq, c.shard AS cur_shard,
                   pr.month AS prior_month, pr.mode AS prior_mode, pr.value AS prior_value,
                   po.score IS NOT NULL AS prior_elsewhere, po.score AS po_score, po.version AS po_version,
                   po.seq AS po_seq, po.shard AS po_shard,
                   CASE WHEN inp.mode = 'best' THEN greatest(c.score, inp.value)
                        ELSE coalesce(c.score, 0) + inp.value END AS new_score
              FROM inp
              LEFT JOIN LATERAL (
                   SELECT one.score, one.version, one.seq, one.shard FROM player_scores one
                    WHERE one.month = inp.month AND one.user_id = inp.user_id
                    LIMIT 1 FOR UPDATE) c ON true
              LEFT JOIN LATERAL (
                   SELECT e.month, e.mode, e.value FROM score_events e
                    WHERE e.user_id = inp.user_id AND e.match_id = inp.match_id) pr ON true
              LEFT JOIN LATERAL (
                   SELECT other.score, other.version, other.seq, other.shard FROM player_scores other
                    WHERE pr.month <> inp.month AND other.month = pr.month AND other.user_id = inp.user_id) po ON true
        ), decided AS (
            SELECT calc.*,
                   CASE WHEN prior_month IS NOT NULL THEN
                            CASE WHEN prior_mode = calc.mode AND prior_value = calc.value
                                 THEN 'duplicate' ELSE 'conflict' END
                        WHEN new_score < 0 OR new_score > max_score THEN 'refused'
                        ELSE 'applied' END AS outcome
              FROM calc
        ), placed AS (
            SELECT d.*, d.outcome = 'applied' AND d.new_score IS DISTINCT FROM d.cur_score AS changes,
                   CASE WHEN d.outcome = 'applied' AND d.new_score IS DISTINCT FROM d.cur_score
                        THEN lb_layout_shard(d.month, d.new_score, d.new_seq, bounds, shard_ids, layout_move)
                   END AS new_shard
              FROM decided d
        ), inserted AS (
            INSERT INTO player_scores AS ps (month, user_id, score, version, seq, shard, epoch)
            SELECT p.month, p.user_id, p.new_score, 1, p.new_seq, p.new_shard, layout_epoch
              FROM placed p WHERE p.changes AND p.cur_version IS NULL
            ON CONFLICT DO NOTHING
            RETURNING ps.user_id
        ), updated AS (
            UPDATE player_scores ps
               SET score = p.new_score, version = p.cur_version + 1, seq = p.new_seq,
                   shard = p.new_shard, epoch = layout_epoch, updated_at = now()
              FROM placed p
             WHERE p.changes AND p.cur_version IS NOT NULL AND ps.month = p.month AND ps.user_id = p.user_id
        ), outboxed AS (
            -- On conflict the row keeps its first_version and created_at: an older
            -- version may still be unfinished, and the reconciler's clock keeps running.
            INSERT INTO redis_outbox AS o (month, user_id, version, first_version)
            SELECT p.month, p.user_id, coalesce(p.cur_version, 0) + 1, coalesce(p.cur_version, 0) + 1
              FROM placed p
             WHERE p.changes AND (p.cur_version IS NOT NULL OR p.user_id IN (SELECT user_id FROM inserted))
            ON CONFLICT (month, user_id) DO UPDATE SET version = excluded.version
        ), recorded AS (
            INSERT INTO score_events AS e (user_id, match_id, month, mode, value, occurred_at, score_after)
            SELECT p.user_id, p.match_id, p.month, p.mode, p.value, p.occurred, p.new_score
              FROM placed p
             WHERE p.outcome = 'applied' AND (p.cur_version IS NOT NULL OR p.user_id IN (SELECT user_id FROM inserted))
            ON CONFLICT DO NOTHING
            RETURNING e.user_id
        )
        SELECT p.pos AS r_idx,
               CASE WHEN p.changes AND p.cur_version IS NULL AND p.user_id NOT IN (SELECT user_id FROM inserted)
                        THEN 'again'
                    WHEN p.outcome = 'applied' AND p.user_id NOT IN (SELECT user_id FROM recorded)
                        THEN lb_retry('concurrent duplicate of match_id ' || p.match_id)
                    ELSE p.outcome END AS r_status,
               CASE p.outcome
                    WHEN 'conflict' THEN format(
                        'match_id %s was already recorded for this user with mode=%s score=%s',
                        p.match_id, p.prior_mode, p.prior_value)
                    WHEN 'refused' THEN format(
                        'the new score would be %s, outside [0, %s]', p.new_score, max_score)
               END AS r_detail,
               coalesce(p.prior_month, p.month) AS r_month,
               CASE WHEN p.prior_elsewhere THEN p.po_score
                    WHEN p.outcome = 'applied' THEN p.new_score ELSE p.cur_score END AS r_score,
               CASE WHEN p.prior_elsewhere THEN p.po_score ELSE p.cur_score END AS r_prev_score,
               CASE WHEN p.prior_elsewhere THEN p.po_version
                    WHEN p.changes THEN coalesce(p.cur_version, 0) + 1 ELSE p.cur_version END AS r_version,
               CASE WHEN p.prior_elsewhere THEN p.po_version ELSE p.cur_version END AS r_prev_version,
               CASE WHEN p.prior_elsewhere THEN p.po_seq
                    WHEN p.changes THEN p.new_seq ELSE p.cur_seq END AS r_seq,
               CASE WHEN p.prior_elsewhere THEN p.po_shard
                    WHEN p.changes THEN p.new_shard ELSE p.cur_shard END AS r_shard,
               CASE WHEN p.prior_elsewhere THEN p.po_shard ELSE p.cur_shard END AS r_prev_shard
          FROM placed p
        LOOP
            IF res.r_status = 'again' THEN
                round_of[res.r_idx] := fresh_mark;
                went_again := went_again + 1;
                CONTINUE;
            END IF;
            idx := res.r_idx; status := res.r_status; detail := res.r_detail; month := res.r_month;
            score := res.r_score; prev_score := res.r_prev_score; version := res.r_version;
            prev_version := res.r_prev_version; seq := res.r_seq; shard := res.r_shard;
            prev_shard := res.r_prev_shard;
            RETURN NEXT;
        END LOOP;
        EXIT WHEN went_again = 0;
        IF passes >= 3 THEN
            RAISE EXCEPTION 'new players kept being created concurrently' USING ERRCODE = '40001';
        END IF;
        mark := fresh_mark;
      END LOOP;
    END LOOP;
END $$;
