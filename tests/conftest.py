"""Session fixtures: real redis-server and PostgreSQL processes on free ports in temp dirs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster import Cluster, RouterProcess, running_cluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    with running_cluster("lb-test-") as made:
        yield made


@pytest.fixture(scope="session")
def router(cluster: Cluster) -> Iterator[RouterProcess]:
    proc = cluster.router()
    yield proc
    proc.stop()


@pytest.fixture
def board(cluster: Cluster, router: RouterProcess) -> Iterator[Cluster]:
    """A clean board behind the shared router."""
    for server in cluster.shards:
        if not server.running:
            server.start()
    cluster.reset()
    yield cluster


@pytest.fixture
def api(board: Cluster, router: RouterProcess):
    with router.client() as client:
        yield client
