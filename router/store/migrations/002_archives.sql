-- Closed months: the final board, snapshotted from player_scores, served from here
-- once the month's Redis keys are gone.
CREATE TABLE month_archives (
    month            date        PRIMARY KEY,
    players          bigint      NOT NULL,
    closed_at        timestamptz NOT NULL DEFAULT now(),
    redis_dropped_at timestamptz
);

CREATE TABLE archived_ranks (
    month   date   NOT NULL REFERENCES month_archives (month),
    rank    bigint NOT NULL,
    user_id text   NOT NULL,
    score   bigint NOT NULL,
    PRIMARY KEY (month, rank)
);
-- Rank, top and around-me reads on an archive are index lookups, like live ones.
CREATE UNIQUE INDEX archived_ranks_user ON archived_ranks (month, user_id);
