"""Prometheus metrics. With several router processes, set PROMETHEUS_MULTIPROC_DIR
(the launcher does) so /metrics sums every process's numbers."""

from __future__ import annotations

import json
import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

HTTP_REQUESTS = Counter("lb_http_requests_total", "HTTP requests", ["route", "method", "status"])
HTTP_SECONDS = Histogram(
    "lb_http_request_seconds",
    "HTTP request latency",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SHARD_OPS = Counter("lb_shard_operations_total", "Redis calls per shard", ["shard", "op"])
SHARD_ERRORS = Counter("lb_shard_errors_total", "Redis calls that failed, per shard", ["shard", "op"])
GROUP_EVENTS = Histogram(
    "lb_group_commit_events",
    "Events per PostgreSQL group commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000),
)
GROUP_SECONDS = Histogram(
    "lb_group_commit_seconds",
    "PostgreSQL group commit latency",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
GROUP_LINGER_SECONDS = Histogram(
    "lb_group_linger_seconds",
    "How long a group-commit flusher waited for the writers it had just answered to send again",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05),
)
TOP_PAGES = Counter(
    "lb_top_pages_total",
    "Live top pages answered: reused (checked current against the shards), rendered, or stale_ok "
    "(served unchecked under the LB_TOP_CACHE_TTL_S opt-in)",
    ["outcome"],
)
PLAYERS_MOVED = Counter("lb_players_moved_total", "Players a write moved to another shard")
RECONCILER_BACKLOG = Gauge(
    "lb_reconciler_backlog",
    "Outbox rows (groups) past the settle time at the last reconciler pass",
    multiprocess_mode="max",
)
RECONCILER_REPAIRED = Counter("lb_reconciler_repaired_total", "Players the reconciler put right")
RATE_LIMITED = Counter("lb_rate_limited_total", "Requests refused by a rate limit", ["limit"])
CIRCUIT_OPEN = Gauge(
    "lb_circuit_open",
    "1 while calls to this server fail fast because it stopped answering (shard:<id>, rate_limits)",
    ["target"],
    multiprocess_mode="max",
)
CIRCUITS_OPENED = Counter(
    "lb_circuit_opened_total", "Times a server stopped answering and its breaker opened", ["target"]
)
SHARD_REPAIRS = Counter(
    "lb_shard_repairs_total",
    "Self-healing repairs of a shard from PostgreSQL, by why they ran (restarted, lost_data) and how they ended",
    ["shard", "reason", "outcome"],
)
SHARD_REPAIR_PLAYERS = Counter(
    "lb_shard_repair_players_total", "Players a self-healing repair checked against PostgreSQL", ["shard"]
)
SHARD_REPAIRING = Gauge(
    "lb_shard_repairing", "1 while this router repairs the shard from PostgreSQL", ["shard"], multiprocess_mode="max"
)
LAYOUT_EPOCH = Gauge("lb_layout_epoch", "Shard layout epoch this router serves", multiprocess_mode="min")


# Where the local cluster's supervisor (shard_manager/local/supervision.py) keeps its
# restart counts, handed to the router it starts.
SUPERVISOR_STATE_ENV = "LB_SUPERVISOR_STATE"


def supervisor_state(path: Path | None = None) -> dict[str, dict]:
    """The supervisor's counts per process, or {} outside a local cluster."""
    path = path or (Path(os.environ[SUPERVISOR_STATE_ENV]) if os.environ.get(SUPERVISOR_STATE_ENV) else None)
    if path is None:
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _local_restarts() -> bytes:
    state = supervisor_state()
    if not state:
        return b""
    lines = [
        "# HELP lb_local_restarts_total Restarts of the local cluster's processes by its supervisor",
        "# TYPE lb_local_restarts_total counter",
    ]
    lines += [f'lb_local_restarts_total{{process="{name}"}} {proc["restarts"]}' for name, proc in state.items()]
    return ("\n".join(lines) + "\n").encode()


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry) + _local_restarts(), CONTENT_TYPE_LATEST
    return generate_latest() + _local_restarts(), CONTENT_TYPE_LATEST
