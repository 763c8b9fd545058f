-- lb_apply_events: its present definition (last changed in migrations/006_outbox_per_group.sql).
-- Applied after the migrations by router/store/migrate.py whenever this file changes.

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
