-- player_scores (updated_at) has had no reader since it was made in 001: nothing looks
-- players up by when their state last changed (the reconciler follows the outbox,
-- self-healing and rebuild read by period and shard). Every new state of a player paid
-- an entry in it, on every write. The column stays: it says when a row last changed.
DROP INDEX IF EXISTS player_scores_updated_at;
