-- One round trip applies a whole group of events: the router coalesces concurrent
-- requests (group commit) and calls this once per group.
--
-- The caller sorts events by (month, user_id), keeping each player's events in
-- arrival order, and passes each event's 1-based arrival position, so concurrent groups lock player rows in the same order and
-- cannot deadlock each other. The player row lock serialises every writer of one
-- player across all router processes; duplicate detection happens under it.

CREATE OR REPLACE FUNCTION lb_month_lock(p_month date) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT hashtextextended('lb-month:' || p_month::text, 0) $$;

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
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    max_score constant bigint := 9007199254740991;
    n int := coalesce(array_length(p_user_ids, 1), 0);
    i int;
    cur record;
    have_cur boolean;
    ev record;
    new_score bigint;
    new_shard text;
    inserted_user text;
    seqs bigint[];
    closed date[];
    layout record;
    bounds bigint[];
    shard_ids text[];
BEGIN
    -- Events arrive sorted for locking, not in the order they came in. Reserve one
    -- tie-break value per event up front and hand them out by arrival position, so
    -- within a group equal scores still order by who sent first.
    SELECT array_agg(v ORDER BY v) INTO seqs
      FROM (SELECT nextval('score_seq') AS v FROM generate_series(1, n)) reserved;
    -- Archiving a month takes this lock exclusively: a group either commits before
    -- the snapshot (and is in it) or sees the month closed. Never lost in between.
    PERFORM pg_advisory_xact_lock_shared(lb_month_lock(m))
       FROM (SELECT DISTINCT unnest(p_months) AS m ORDER BY 1) months;
    -- Read after the month locks: a rebalance step changes the layout only under
    -- the exclusive lock, so this group places every player by the layout it sees.
    SELECT * INTO layout FROM shard_layout WHERE id = 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no shard layout: start a router or run shard-manager migrate';
    END IF;
    SELECT array_agg((s->>'min_score')::bigint ORDER BY o), array_agg(s->>'id' ORDER BY o)
      INTO bounds, shard_ids FROM jsonb_array_elements(layout.shards) WITH ORDINALITY AS e(s, o);
    SELECT coalesce(array_agg(a.month), '{}') INTO closed
      FROM month_archives a WHERE a.month = ANY (p_months);

    FOR i IN 1..n LOOP
        idx := i;
        detail := NULL;
        IF p_months[i] = ANY (closed) THEN
            status := 'closed';
            detail := format('month %s is archived', to_char(p_months[i], 'YYYY-MM'));
            month := p_months[i]; score := NULL; prev_score := NULL; version := NULL; prev_version := NULL;
            seq := NULL; shard := NULL; prev_shard := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        SELECT e.month AS m, e.mode, e.value INTO ev
          FROM score_events e WHERE e.user_id = p_user_ids[i] AND e.match_id = p_match_ids[i];
        IF FOUND THEN
            SELECT ps.score, ps.version, ps.seq, ps.shard INTO cur
              FROM player_scores ps WHERE ps.month = ev.m AND ps.user_id = p_user_ids[i] FOR UPDATE;
            status := CASE WHEN ev.mode = p_modes[i] AND ev.value = p_values[i]
                           THEN 'duplicate' ELSE 'conflict' END;
            IF status = 'conflict' THEN
                detail := format('match_id %s was already recorded for this user with mode=%s score=%s',
                                 p_match_ids[i], ev.mode, ev.value);
            END IF;
            month := ev.m; score := cur.score; prev_score := cur.score; version := cur.version;
            prev_version := cur.version;
            seq := cur.seq; shard := cur.shard; prev_shard := cur.shard;
            RETURN NEXT;
            CONTINUE;
        END IF;

        SELECT ps.score, ps.version, ps.seq, ps.shard INTO cur
          FROM player_scores ps WHERE ps.month = p_months[i] AND ps.user_id = p_user_ids[i] FOR UPDATE;
        have_cur := FOUND;
        prev_version := CASE WHEN have_cur THEN cur.version END;
        IF have_cur THEN
            -- The event may have been recorded by a writer we waited on for the row lock.
            PERFORM 1 FROM score_events e WHERE e.user_id = p_user_ids[i] AND e.match_id = p_match_ids[i];
            IF FOUND THEN
                RAISE EXCEPTION 'concurrent duplicate of match_id %', p_match_ids[i]
                    USING ERRCODE = '40001';
            END IF;
        END IF;

        IF p_modes[i] = 'best' THEN
            new_score := CASE WHEN have_cur THEN greatest(cur.score, p_values[i]) ELSE p_values[i] END;
        ELSE
            new_score := CASE WHEN have_cur THEN cur.score ELSE 0 END + p_values[i];
        END IF;

        month := p_months[i];
        prev_score := CASE WHEN have_cur THEN cur.score END;
        prev_shard := CASE WHEN have_cur THEN cur.shard END;
        IF new_score < 0 OR new_score > max_score THEN
            status := 'refused';
            detail := format('the new score would be %s, outside [0, %s]', new_score, max_score);
            score := prev_score; version := cur.version; seq := cur.seq; shard := prev_shard;
            IF NOT have_cur THEN version := NULL; seq := NULL; END IF;
            RETURN NEXT;
            CONTINUE;
        END IF;

        IF NOT have_cur THEN
            new_shard := lb_layout_shard(p_months[i], new_score, seqs[p_arrival[i]], bounds, shard_ids, layout.move);
            INSERT INTO player_scores AS ps (month, user_id, score, version, seq, shard, epoch)
                 VALUES (p_months[i], p_user_ids[i], new_score, 1, seqs[p_arrival[i]], new_shard, layout.epoch)
            ON CONFLICT DO NOTHING
            RETURNING ps.version, ps.seq INTO version, seq;
            IF NOT FOUND THEN
                -- Another router created the row between our SELECT and INSERT;
                -- the caller retries the whole group, which then takes the locked path.
                RAISE EXCEPTION 'concurrent first write for user %', p_user_ids[i] USING ERRCODE = '40001';
            END IF;
            score := new_score; shard := new_shard;
        ELSIF new_score <> cur.score THEN
            new_shard := lb_layout_shard(p_months[i], new_score, seqs[p_arrival[i]], bounds, shard_ids, layout.move);
            UPDATE player_scores ps
               SET score = new_score, version = ps.version + 1, seq = seqs[p_arrival[i]],
                   shard = new_shard, epoch = layout.epoch, updated_at = now()
             WHERE ps.month = p_months[i] AND ps.user_id = p_user_ids[i]
            RETURNING ps.version, ps.seq INTO version, seq;
            score := new_score; shard := new_shard;
        ELSE
            score := cur.score; version := cur.version; seq := cur.seq; shard := cur.shard;
        END IF;

        IF version IS DISTINCT FROM cur.version OR NOT have_cur THEN
            -- On conflict the row keeps its first_version and created_at: an older
            -- version may still be unfinished, and the reconciler's clock keeps running.
            INSERT INTO redis_outbox AS o (month, user_id, version, first_version)
                 VALUES (p_months[i], p_user_ids[i], version, version)
            ON CONFLICT (month, user_id) DO UPDATE SET version = excluded.version;
        END IF;

        INSERT INTO score_events (user_id, match_id, month, mode, value, occurred_at, score_after)
             VALUES (p_user_ids[i], p_match_ids[i], p_months[i], p_modes[i], p_values[i], p_occurred[i], score)
        ON CONFLICT DO NOTHING
        RETURNING user_id INTO inserted_user;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'concurrent duplicate of match_id %', p_match_ids[i] USING ERRCODE = '40001';
        END IF;
        status := 'applied';
        RETURN NEXT;
    END LOOP;
END $$;

-- Called once the shards hold the states of versions min_version..version of a
-- player (the add on the new shard and the removals from every shard the caller
-- knows the player was on). A row whose first_version is older than min_version
-- stands for a write the caller did not finish (a crashed router's, say): it stays
-- for the reconciler, which clears every shard. SKIP LOCKED: a row another
-- transaction is rewriting stays too, and this never waits, so it cannot deadlock
-- with group commits.
CREATE OR REPLACE FUNCTION lb_ack_outbox(
    p_months date[], p_user_ids text[], p_min_versions bigint[], p_versions bigint[]
) RETURNS int LANGUAGE sql AS $$
    WITH done AS (
        SELECT o.ctid FROM redis_outbox o
          JOIN unnest(p_months, p_user_ids, p_min_versions, p_versions) AS d(month, user_id, min_version, version)
            ON o.month = d.month AND o.user_id = d.user_id
           AND o.version <= d.version AND o.first_version >= d.min_version
        FOR UPDATE OF o SKIP LOCKED
    ), deleted AS (
        DELETE FROM redis_outbox o USING done WHERE o.ctid = done.ctid RETURNING 1
    )
    SELECT count(*)::int FROM deleted;
$$;
