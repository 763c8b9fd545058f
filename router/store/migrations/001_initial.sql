-- The durable truth. Redis holds a rebuildable rank index over player_scores.

CREATE TABLE score_events (
    user_id     text        NOT NULL,
    -- A match_id names one result for one player; every player of a match may
    -- report the same match_id, so idempotency is per (user_id, match_id).
    match_id    text        NOT NULL,
    month       date        NOT NULL,
    mode        text        NOT NULL CHECK (mode IN ('incr', 'best')),
    value       bigint      NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    score_after bigint      NOT NULL,
    PRIMARY KEY (user_id, match_id)
);
CREATE INDEX score_events_month ON score_events (month);

CREATE TABLE player_scores (
    month      date        NOT NULL,
    user_id    text        NOT NULL,
    score      bigint      NOT NULL CHECK (score BETWEEN 0 AND 9007199254740991),
    -- Bumped only when the player's board state (score or shard) changes; Redis
    -- applies a state only if it has not seen an equal or newer version.
    version    bigint      NOT NULL,
    -- Tie-break: a new value from score_seq each time the score changes, so equal
    -- scores order by who reached them first.
    seq        bigint      NOT NULL,
    shard      text        NOT NULL,
    epoch      bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (month, user_id)
);
-- The reconciler scans recently changed players for Redis writes a crash left undone.
CREATE INDEX player_scores_updated_at ON player_scores (updated_at);

-- CACHE 1 (the default) keeps values in call order across connections; a larger
-- cache would hand out ranges per connection and break first-come tie order.
CREATE SEQUENCE score_seq AS bigint;

-- Outbox of Redis work: a row per player whose committed state may not be fully on
-- the shards yet. Written in the same transaction as the state; deleted once the
-- shards hold it. `first_version` is the oldest version the row stands for: a
-- writer that finished only later versions must not delete it, because an earlier
-- writer's removal from some old shard may still be undone (see lb_ack_outbox).
CREATE TABLE redis_outbox (
    month         date        NOT NULL,
    user_id       text        NOT NULL,
    version       bigint      NOT NULL,
    first_version bigint      NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (month, user_id)
);
CREATE INDEX redis_outbox_created_at ON redis_outbox (created_at);
