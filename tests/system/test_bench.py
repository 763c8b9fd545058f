"""`make bench` prints all six of issue 7's figures from one run against one router.

A short run on its own real cluster (one round of a second per scenario, a board
grown to 120,000 players instead of a million: more than the rounds' writers can
reach): what is checked is that every figure is there and was measured, not how
fast anything was.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import wrk

ROOT = Path(__file__).resolve().parents[2]


def test_bench_prints_every_figure_from_one_run() -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.http_bench",
            "--rounds=1",
            "--seconds=1",
            "--sweep=64",
            "--large=120000",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout

    def number(pattern: str) -> float:
        found = re.search(pattern, out)
        assert found, f"no match for {pattern!r} in:\n{out}"
        return float(found.group(1).replace(",", ""))

    assert number(r"POST / healthz ratio\s+([\d.]+)") > 0  # (1)
    assert number(r"GET /v1/scores/\{id\}\s+\d+ req/s\s+ratio ([\d.]+)") > 0  # (2)
    assert number(r"GET top-10\s+\d+ req/s\s+ratio ([\d.]+)") > 0  # (3)
    assert number(r"batch ingest\s+(\d+) events/s") > 0  # (4)
    assert number(r"rank read p50 .* ratio ([\d.]+)") > 0  # (5)
    # (5)'s second board is the grown one: at least --large players, counted on the shards
    assert number(r"rank read p50\s+[\d.]+ ms with ([\d,]+) players") >= 120_000
    assert number(r"rank read p50 .* ÷ [\d.]+ ms with ([\d,]+)") == 10_000
    # beside (5), how fast the machine ran in each phase: healthz timed in the same rounds
    assert number(r"healthz p50 beside them ([\d.]+) ÷ [\d.]+ ms") > 0
    assert number(r"large board ÷ small: ([\d.]+)") > 0
    assert number(r"Redis memory\s+([\d.]+) bytes per player in the board keys") > 0  # (6)
    assert re.search(r"^\s+64\s+\d+\s+\d+\s+[\d.]+", out, re.MULTILINE), out  # the sweep's row


@pytest.mark.skipif(wrk.available() is None, reason="bench.boards_bench measures with wrk (Debian package wrk)")
def test_the_boards_bench_prints_its_figures_from_one_run() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.boards_bench", "--rounds=1", "--seconds=1", "--boards=200"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    for pattern in (
        r"\(1\) an event on 3 windows costs ([\d.]+)x",
        r"\(2\) with 203 boards vs 3: writes ([\d.]+)x",
        r"rank reads ([\d.]+)x",
        r"\(3\) PostgreSQL (\d+) bytes per event",
        r"Redis (\d+) bytes per player per window \(20,000 players",
    ):
        found = re.search(pattern, out)
        assert found and float(found.group(1)) > 0, f"no {pattern!r} in:\n{out}"
