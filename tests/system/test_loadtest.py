"""The Locust scenarios run headless against a real router and report no failures."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from shard_manager.local.processes import free_port
from tests.cluster import GAME_TOKEN

ROOT = Path(__file__).resolve().parents[2]


def _locust(host: str, prefix: Path, users: int, run_time: str, timeout: float, **env: str):
    """Locust headless on the project's scenarios, CSV under `prefix`."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(ROOT / "loadtest" / "locustfile.py"),
            "--headless",
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            run_time,
            "--host",
            host,
            "--csv",
            str(prefix),
            "--only-summary",
        ],
        env={**os.environ, "LB_GAME_TOKEN": GAME_TOKEN, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_locust_scenarios_run_clean(board, router, tmp_path):
    prefix = tmp_path / "run"
    result = _locust(router.url, prefix, users=8, run_time="6s", timeout=120, LB_LOADTEST_PLAYERS="500")
    assert result.returncode == 0, result.stderr[-3000:]
    with Path(f"{prefix}_stats.csv").open() as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    for name in ("POST /v1/scores", "GET /v1/leaderboard/top", "GET /v1/scores/{id}"):
        assert int(rows[name]["Request Count"]) > 0, name
    assert rows["Aggregated"]["Failure Count"] == "0", result.stderr[-3000:]
    summary = subprocess.run(
        [sys.executable, str(ROOT / "loadtest" / "summary.py"), str(prefix)], capture_output=True, text=True
    )
    assert "failures: 0" in summary.stdout


def test_locust_refuses_at_once_when_nothing_answers(tmp_path):
    """Pointed at a port nobody listens on, the run stops before its first user and
    says what to do, instead of timing refusals for its whole run time."""
    host = f"http://127.0.0.1:{free_port()}"
    # A timeout well under the run time asked for: it must not run it.
    result = _locust(host, tmp_path / "run", users=2, run_time="60s", timeout=50)
    assert result.returncode != 0
    assert f"nothing answers at {host}/readyz" in result.stderr + result.stdout
    assert "make up" in result.stderr + result.stdout
