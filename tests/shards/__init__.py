"""The shard protocol: key layout, state buckets, packing."""
