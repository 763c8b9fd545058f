-- lb_apply_events: its present definition (last changed in migrations/011_display_data.sql).
-- Applied after the migrations by router/store/migrate.py whenever this file changes.

-- Commits a group of events. An event names its board; it updates one row per window
-- of that board (p_row_events: which event, 1-based; p_row_periods: the board period
-- of that window, in the board's window order), all in this one transaction.
-- p_metadata: each event's display data (compact JSON; NULL, or a NULL array: none,
-- the entries keep theirs); a change of it alone is a new state of the player (version
-- + 1, same tie-break), since the shards serve it with the entries.
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
    p_row_periods text[],
    p_metadata    text[] DEFAULT NULL
) RETURNS TABLE (
    idx          int,      -- the row (event, window), 1-based, as sent
    event        int,      -- the event it belongs to, 1-based
    status       text,     -- applied | duplicate | conflict | refused | closed | hidden | erased (the event's, on each of its rows)
    detail       text,
    board_period text,     -- for a resend: the period the original event went to
    score        bigint,   -- stored (higher is better) score after the event; NULL when closed, hidden or erased
    prev_score   bigint,   -- NULL when the player had no score in that period
    version      bigint,
    prev_version bigint,   -- the version before this event (NULL: none)
    seq          bigint,
    shard        text,
    prev_shard   text,
    metadata     text,     -- the display data after the event (NULL: none)
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
    hidden_events int[] := '{}';
    erased_events int[] := '{}';
    has_removed boolean;
    rounds int;
    r int;
    work_id bigint;
    -- The audit log is partitioned by month of arrival (UTC). A resend is looked for in
    -- this month's partition and the one before: always found within 28 days of the
    -- original, and the lookup costs two index probes however old the log grows (bounded
    -- on both sides, so the months made ahead and the default partition are pruned too).
    this_month constant date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    resends_from constant date := (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month')::date;
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
    -- Shared per player: hiding, removing and erasing a player hold it exclusively
    -- (lb_player_lock), so an event either commits before such an action (which then
    -- sees its rows) or after it (and is judged by it).
    PERFORM pg_advisory_xact_lock_shared(lb_player_lock(pu))
       FROM (SELECT DISTINCT unnest(p_user_ids) AS pu ORDER BY 1) users;
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

    -- Hidden (on this board or every board) and erased players take no events. Each
    -- list is read only when its table has a row at all: one probe per group, not per event.
    IF EXISTS (SELECT 1 FROM hidden_players) THEN
        SELECT coalesce(array_agg(t.pos::int), '{}') INTO hidden_events
          FROM unnest(p_boards, p_user_ids) WITH ORDINALITY AS t(board, user_id, pos)
         WHERE EXISTS (SELECT 1 FROM hidden_players h WHERE h.user_id = t.user_id AND h.board IN (t.board, '*'));
    END IF;
    IF EXISTS (SELECT 1 FROM erased_players) THEN
        SELECT coalesce(array_agg(t.pos::int), '{}') INTO erased_events
          FROM unnest(p_user_ids) WITH ORDINALITY AS t(user_id, pos)
         WHERE EXISTS (SELECT 1 FROM erased_players x WHERE x.user_hash = lb_user_hash(t.user_id));
    END IF;
    -- A player whose entry was removed starts again above the version of its tombstone.
    has_removed := EXISTS (SELECT 1 FROM removed_scores);

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
                   seqs[p_arrival[x.e]] AS new_seq, p_boards[x.e] = ANY (asc_boards) AS flip,
                   p_metadata[x.e] AS meta
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
                   c.metadata AS cur_metadata,
                   po.score IS NOT NULL AS prior_elsewhere, po.score AS po_score, po.version AS po_version,
                   po.seq AS po_seq, po.shard AS po_shard, po.metadata AS po_metadata, rm.version AS floor_version,
                   CASE s.mode
                        WHEN 'best' THEN greatest(c.score, CASE WHEN s.flip THEN max_score - s.value ELSE s.value END)
                        WHEN 'set' THEN CASE WHEN s.flip THEN max_score - s.value ELSE s.value END
                        ELSE CASE WHEN s.flip THEN coalesce(c.score, max_score) - s.value
                                  ELSE coalesce(c.score, 0) + s.value END
                   END AS new_score
              FROM rows_in s
              LEFT JOIN LATERAL (
                   SELECT e.mode, e.value, e.board_periods FROM score_events e
                    WHERE e.board = s.board AND e.user_id = s.user_id AND e.match_id = s.match_id
                      AND e.recorded_month >= resends_from AND e.recorded_month <= this_month
                    LIMIT 1) pr ON true
              LEFT JOIN LATERAL (
                   SELECT one.score, one.version, one.seq, one.shard, one.metadata FROM player_scores one
                    WHERE one.board_period = s.bp AND one.user_id = s.user_id LIMIT 1) c ON true
              LEFT JOIN LATERAL (
                   SELECT other.score, other.version, other.seq, other.shard, other.metadata FROM player_scores other
                    WHERE pr.board_periods[s.w] <> s.bp AND other.board_period = pr.board_periods[s.w]
                      AND other.user_id = s.user_id
                    LIMIT 1) po ON true
              LEFT JOIN LATERAL (
                   SELECT gone.version FROM removed_scores gone
                    WHERE has_removed AND c.version IS NULL AND gone.board_period = s.bp AND gone.user_id = s.user_id
                    LIMIT 1) rm ON true
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
                        WHEN j.pos = ANY (erased_events) THEN 'erased'
                        WHEN j.pos = ANY (hidden_events) THEN 'hidden'
                        WHEN j.prior_mode IS NOT NULL THEN
                            CASE WHEN j.prior_mode = j.mode AND j.prior_value = j.value
                                 THEN 'duplicate' ELSE 'conflict' END
                        WHEN j.out_of_range THEN 'refused'
                        ELSE 'applied' END AS outcome
              FROM judged j
        ), changing AS (
            -- A new score takes the event's tie-break; new display data alone keeps the old one.
            SELECT d.*, d.outcome = 'applied' AND (d.new_score IS DISTINCT FROM d.cur_score
                                                   OR (d.meta IS NOT NULL AND d.meta IS DISTINCT FROM d.cur_metadata))
                       AS changes,
                   CASE WHEN d.new_score IS DISTINCT FROM d.cur_score THEN d.new_seq ELSE d.cur_seq END AS eff_seq,
                   coalesce(d.meta, d.cur_metadata) AS new_metadata
              FROM decided d
        ), placed AS (
            SELECT d.*,
                   CASE WHEN d.changes
                        THEN lb_layout_shard(d.bp, d.new_score, d.eff_seq, splits->d.board,
                                             CASE WHEN d.board = ANY (moving_boards) THEN layout_move END)
                   END AS new_shard
              FROM changing d
        ), inserted AS (
            INSERT INTO player_scores AS ps (board_period, user_id, score, version, seq, shard, epoch, metadata)
            SELECT p.bp, p.user_id, p.new_score, coalesce(p.floor_version, 0) + 1, p.new_seq, p.new_shard, layout_epoch,
                   p.new_metadata
              FROM placed p WHERE p.changes AND p.cur_version IS NULL
            ON CONFLICT DO NOTHING
            RETURNING ps.board_period, ps.user_id
        ), registered AS (
            -- Which periods a player has a state in, found by player (to hide them on
            -- every board, or erase them): written when a state is created, so updates,
            -- the bulk of the writes, pay nothing for it (an index on
            -- player_scores (user_id) cost every update an entry).
            INSERT INTO player_periods (user_id, board_period)
            SELECT i.user_id, i.board_period FROM inserted i
            ON CONFLICT DO NOTHING
        ), updated AS (
            UPDATE player_scores ps
               SET score = p.new_score, version = p.cur_version + 1, seq = p.eff_seq,
                   shard = p.new_shard, epoch = layout_epoch, metadata = p.new_metadata, updated_at = now()
              FROM placed p
             WHERE p.changes AND p.cur_version IS NOT NULL AND ps.board_period = p.bp AND ps.user_id = p.user_id
        ), recorded AS (
            -- One audit row per event, naming every period it updated and the score
            -- (as the board shows it) it left in each.
            INSERT INTO score_events AS e (board, user_id, match_id, board_periods, mode, value, occurred_at,
                                           scores_after, recorded_month)
            SELECT p.board, p.user_id, p.match_id, array_agg(p.bp ORDER BY p.w), p.mode, p.value, p.occurred,
                   array_agg(CASE WHEN p.flip THEN max_score - p.new_score ELSE p.new_score END ORDER BY p.w),
                   this_month
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
                    WHEN 'hidden' THEN format('player %s is hidden on board %s', p.user_id, p.board)
                    WHEN 'erased' THEN 'this user id was erased; it takes no more events'
               END,
               CASE WHEN p.outcome IN ('closed', 'hidden', 'erased') THEN p.bp ELSE coalesce(p.prior_periods[p.w], p.bp) END,
               CASE WHEN p.outcome IN ('closed', 'hidden', 'erased') THEN NULL
                    WHEN p.prior_elsewhere THEN p.po_score
                    WHEN p.outcome = 'applied' THEN p.new_score ELSE p.cur_score END,
               CASE WHEN p.outcome IN ('closed', 'hidden', 'erased') THEN NULL
                    WHEN p.prior_elsewhere THEN p.po_score ELSE p.cur_score END,
               CASE WHEN p.outcome IN ('closed', 'hidden', 'erased') THEN NULL
                    WHEN p.prior_elsewhere THEN p.po_version
                    WHEN p.changes THEN coalesce(p.cur_version, p.floor_version, 0) + 1 ELSE p.cur_version END,
               CASE WHEN p.outcome IN ('closed', 'hidden', 'erased') THEN NULL
                    WHEN p.prior_elsewhere THEN p.po_version ELSE p.cur_version END,
               CASE WHEN p.outcome IN ('closed', 'hidden', 'erased') THEN NULL
                    WHEN p.prior_elsewhere THEN p.po_seq
                    WHEN p.changes THEN p.eff_seq ELSE p.cur_seq END,
               CASE WHEN p.outcome IN ('closed', 'hidden', 'erased') THEN NULL
                    WHEN p.prior_elsewhere THEN p.po_shard
                    WHEN p.changes THEN p.new_shard ELSE p.cur_shard END,
               CASE WHEN p.outcome IN ('closed', 'hidden', 'erased') THEN NULL
                    WHEN p.prior_elsewhere THEN p.po_shard ELSE p.cur_shard END,
               CASE WHEN p.outcome IN ('closed', 'hidden', 'erased') THEN NULL
                    WHEN p.prior_elsewhere THEN p.po_metadata
                    WHEN p.changes THEN p.new_metadata ELSE p.cur_metadata END,
               work_id
          FROM placed p;
    END LOOP;
END $$;
