"""Operator tooling: the shard map, the local cluster launcher, schema migrations."""
