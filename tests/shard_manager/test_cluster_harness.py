"""The suite's own clusters clean up after themselves."""

from __future__ import annotations

from tests.cluster import running_cluster


def test_test_clusters_leave_no_data_behind():
    # Each holds a PostgreSQL data directory; kept after every run, they filled /tmp.
    with running_cluster("lb-cleanup-") as made:
        workdir = made.workdir
        assert (workdir / "postgres" / "pgdata").exists()
    assert not workdir.exists()
