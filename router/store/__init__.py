"""PostgreSQL: the durable truth. Connection pool and calls, the layout in force, migrations."""
