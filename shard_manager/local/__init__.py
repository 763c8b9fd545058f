"""The local cluster: real redis-server and PostgreSQL processes, the launcher, its supervisor."""
