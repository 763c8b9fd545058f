"""PostgreSQL: the group-commit function, migrations, retries."""
