"""The disk probe times real fdatasyncs where it is pointed and cleans up after itself."""

from __future__ import annotations

from pathlib import Path

from bench.fsync_tail import measure


def test_times_real_flushes_in_the_directory_and_leaves_nothing_behind(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"  # created if missing, as .data is on a fresh clone
    tail = measure(data_dir, seconds=0.3)
    assert tail.flushes > 0
    assert 0 < tail.p50_ms <= tail.p99_ms <= tail.p999_ms <= tail.max_ms
    assert 0 <= tail.over_100ms <= tail.flushes
    assert list(data_dir.iterdir()) == []
