-- The outbox holds one row per group commit (and per rebalance step) instead of one
-- per player. With a row per player every event cost an upsert in the group and a
-- delete on acknowledgement: measured on 1,000-event batches, PostgreSQL's CPU per
-- event went from 63-71 us to 46-50 us without them. A row per group is one insert
-- and one delete however many players it holds.
--
-- Acknowledgement gets simpler too. A row stands for exactly one group's Redis work,
-- and only the router that ran the group (once every state of it is on the shards)
-- or the reconciler (once it has checked and repaired every player in it) deletes
-- it. Another group's row for the same player is another row, so finishing a later
-- version can never clear the record of an earlier one that is still unfinished,
-- which is what 001's first_version guarded against.
--
-- Rolling upgrade: routers from before this migration still write through
-- lb_apply_events (they select its columns by name) and call the four-argument
-- lb_ack_outbox, which now does nothing; their groups' rows are finished by an
-- upgraded router's reconciler after LB_RECONCILE_SETTLE_S. Their own reconciler
-- and archiving fail (the per-player columns are gone) until they are replaced.

ALTER TABLE redis_outbox RENAME TO redis_outbox_players;
CREATE TABLE redis_outbox (
    id         bigserial   PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    months     date[]      NOT NULL,  -- with user_ids: the (month, player) pairs of the group
    user_ids   text[]      NOT NULL
);
INSERT INTO redis_outbox (created_at, months, user_ids)
SELECT min(created_at), array_agg(month), array_agg(user_id) FROM redis_outbox_players HAVING count(*) > 0;
DROP TABLE redis_outbox_players;

CREATE OR REPLACE FUNCTION lb_ack_outbox(
    p_months date[], p_user_ids text[], p_min_versions bigint[], p_versions bigint[]
) RETURNS int LANGUAGE sql AS $$
    SELECT 0;
$$;

CREATE FUNCTION lb_ack_outbox(p_ids bigint[]) RETURNS int LANGUAGE sql AS $$
    WITH deleted AS (DELETE FROM redis_outbox WHERE id = ANY (p_ids) RETURNING 1)
    SELECT count(*)::int FROM deleted;
$$;

-- Both functions answer with one more column (the outbox row), so they are replaced.
DROP FUNCTION lb_apply_events(text[], text[], date[], text[], bigint[], timestamptz[], int[]);
DROP FUNCTION lb_move_step(date, int);

CREATE FUNCTION lb_move_step(p_month date, p_limit int)
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
    -- move them. The month lock keeps writers out
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
        )
        SELECT array_agg(moved.user_id), array_agg(moved.score), array_agg(moved.version), array_agg(moved.seq)
          INTO uids, scores, versions, seqs FROM moved;
    END IF;

    IF uids IS NOT NULL THEN
        INSERT INTO redis_outbox (months, user_ids)
        VALUES (array_fill(p_month, ARRAY[array_length(uids, 1)]), uids)
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
           SET move = jsonb_set(move, ARRAY['cursors', p_month::text], jsonb_build_array(last_score, last_seq)),
               updated_at = now()
         WHERE id = 1;
    END IF;
END $$;

CREATE FUNCTION lb_apply_events(
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
    prev_shard text,
    outbox_id  bigint    -- the group's outbox row: acknowledge it once the shards hold every state
) LANGUAGE plpgsql
-- Planned once per connection: every join is an index probe per event, so one plan
-- suits groups of any size, and planning the round statement anew for each group
-- (which the plan cache otherwise chooses here) costs more than running small ones.
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
    -- group equal scores order by who sent first.
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
    PERFORM pg_advisory_xact_lock(hashtextextended('lb-player:' || pm::text || ':' || pu, 0))
       FROM (SELECT DISTINCT pm, pu FROM unnest(p_months, p_user_ids) AS players(pm, pu) ORDER BY 1, 2) ordered;
    -- Read after the locks (in a statement of their own, so the snapshot includes what
    -- committed before we got them): a rebalance step changes the layout only under
    -- the month's exclusive lock, so this group places every player by the layout it
    -- sees, and an archive committed before us is seen as closed.
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

    -- The group's Redis work, one row for all its players (a player whose state did
    -- not change is checked and found finished).
    INSERT INTO redis_outbox (months, user_ids) VALUES (p_months, p_user_ids) RETURNING redis_outbox.id INTO work_id;

    IF closed <> '{}' THEN
        RETURN QUERY
        SELECT t.pos::int, 'closed'::text, format('month %s is archived', to_char(t.month, 'YYYY-MM')),
               t.month, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::text, NULL::text,
               work_id
          FROM unnest(p_months) WITH ORDINALITY AS t(month, pos)
         WHERE t.month = ANY (closed);
    END IF;

    FOR r IN 1..rounds LOOP
        RETURN QUERY
        WITH inp AS (
            SELECT t.pos::int AS pos, t.user_id, t.match_id, t.month, t.mode, t.value, t.occurred,
                   seqs[t.arrival] AS new_seq
              FROM unnest(p_user_ids, p_match_ids, p_months, p_modes, p_values, p_occurred, p_arrival)
                   WITH ORDINALITY AS t(user_id, match_id, month, mode, value, occurred, arrival, pos)
             WHERE round_of[t.pos] = r AND NOT (t.month = ANY (closed))
        ), calc AS (
            -- Per event, by primary key: the player's row; an earlier event with this
            -- match_id; for a resend first recorded in another month, that month's row
            -- (a resend is answered with the state it names). Index probes per row
            -- (LATERAL ... LIMIT 1) keep the cost linear whatever the planner guesses
            -- about the arrays' length.
            SELECT inp.*, c.score AS cur_score, c.version AS cur_version, c.seq AS cur_seq, c.shard AS cur_shard,
                   pr.month AS prior_month, pr.mode AS prior_mode, pr.value AS prior_value,
                   po.score IS NOT NULL AS prior_elsewhere, po.score AS po_score, po.version AS po_version,
                   po.seq AS po_seq, po.shard AS po_shard,
                   CASE WHEN inp.mode = 'best' THEN greatest(c.score, inp.value)
                        ELSE coalesce(c.score, 0) + inp.value END AS new_score
              FROM inp
              LEFT JOIN LATERAL (
                   SELECT one.score, one.version, one.seq, one.shard FROM player_scores one
                    WHERE one.month = inp.month AND one.user_id = inp.user_id LIMIT 1) c ON true
              LEFT JOIN LATERAL (
                   SELECT e.month, e.mode, e.value FROM score_events e
                    WHERE e.user_id = inp.user_id AND e.match_id = inp.match_id LIMIT 1) pr ON true
              LEFT JOIN LATERAL (
                   SELECT other.score, other.version, other.seq, other.shard FROM player_scores other
                    WHERE pr.month <> inp.month AND other.month = pr.month AND other.user_id = inp.user_id
                    LIMIT 1) po ON true
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
        ), recorded AS (
            INSERT INTO score_events AS e (user_id, match_id, month, mode, value, occurred_at, score_after)
            SELECT p.user_id, p.match_id, p.month, p.mode, p.value, p.occurred, p.new_score
              FROM placed p WHERE p.outcome = 'applied'
            ON CONFLICT DO NOTHING
            RETURNING e.user_id
        )
        SELECT p.pos,
               -- Under the player locks neither can happen; a writer that bypassed them
               -- would, and then the whole group must be retried, not half-applied.
               CASE WHEN p.changes AND p.cur_version IS NULL AND p.user_id NOT IN (SELECT user_id FROM inserted)
                        THEN lb_retry('player ' || p.user_id || ' was created concurrently')
                    WHEN p.outcome = 'applied' AND p.user_id NOT IN (SELECT user_id FROM recorded)
                        THEN lb_retry('match_id ' || p.match_id || ' was recorded concurrently')
                    ELSE p.outcome END,
               CASE p.outcome
                    WHEN 'conflict' THEN format(
                        'match_id %s was already recorded for this user with mode=%s score=%s',
                        p.match_id, p.prior_mode, p.prior_value)
                    WHEN 'refused' THEN format(
                        'the new score would be %s, outside [0, %s]', p.new_score, max_score)
               END,
               coalesce(p.prior_month, p.month),
               CASE WHEN p.prior_elsewhere THEN p.po_score
                    WHEN p.outcome = 'applied' THEN p.new_score ELSE p.cur_score END,
               CASE WHEN p.prior_elsewhere THEN p.po_score ELSE p.cur_score END,
               CASE WHEN p.prior_elsewhere THEN p.po_version
                    WHEN p.changes THEN coalesce(p.cur_version, 0) + 1 ELSE p.cur_version END,
               CASE WHEN p.prior_elsewhere THEN p.po_version ELSE p.cur_version END,
               CASE WHEN p.prior_elsewhere THEN p.po_seq
                    WHEN p.changes THEN p.new_seq ELSE p.cur_seq END,
               CASE WHEN p.prior_elsewhere THEN p.po_shard
                    WHEN p.changes THEN p.new_shard ELSE p.cur_shard END,
               CASE WHEN p.prior_elsewhere THEN p.po_shard ELSE p.cur_shard END,
               work_id
          FROM placed p;
    END LOOP;
END $$;
