"""`make bench-write-floor` measures each of its variants on real servers and cleans up.

A short run (a few thousand players, small groups): what is checked is that every
figure is printed and measured, not how fast anything was.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.write_floor", *args],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_prints_every_variant_measured_and_leaves_nothing_behind(tmp_path: Path) -> None:
    run = _bench(tmp_path, "--players=3000", "--group=200", "--calls=3", "--rounds=2")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    for part, name in [
        ("PostgreSQL", "lb_apply_events"),
        ("PostgreSQL", "bare writes"),
        ("PostgreSQL", "bare writes, primary keys only"),
        ("Redis", "apply script"),
        ("Redis", "bare commands"),
    ]:
        found = re.search(rf"^\s+{part}\s+{re.escape(name)}\s+([\d.]+)", out, re.MULTILINE)
        assert found, f"no {part} {name} in:\n{out}"
        assert float(found.group(1)) > 0
    assert re.search(r"leaves 66\.7 us per event .* take [\d.]+ of it .* ours [\d.]+", out), out
    assert list(tmp_path.iterdir()) == []


def test_refuses_groups_larger_than_the_board(tmp_path: Path) -> None:
    run = _bench(tmp_path, "--players=100", "--group=200")
    assert run.returncode == 2
    assert "--group cannot exceed --players" in run.stderr
