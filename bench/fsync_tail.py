"""`make bench-fsync`: how long this disk takes to make a small write durable, tail included.

Every acknowledged write waits for PostgreSQL to flush its WAL (fdatasync), so a
write can never answer faster than the disk under the data directory flushes; on a
shared or networked disk that flush has rare stalls of hundreds of milliseconds,
and they show up as the write tail of `make loadtest` (every group committing at
that moment waits, and they all answer together). This appends 8 KiB blocks, the
WAL's page size, to a scratch file in that directory and times each fdatasync.

Usage: python -m bench.fsync_tail [--seconds 30] [--dir .data]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

BLOCK = b"\0" * 8192
SLOW_S = 0.1


@dataclass(frozen=True)
class FsyncTail:
    flushes: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    over_100ms: int


def measure(directory: Path, seconds: float) -> FsyncTail:
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / f"fsync-probe-{os.getpid()}"
    latencies: list[float] = []
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            os.write(fd, BLOCK)
            started = time.perf_counter()
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)
    latencies.sort()

    def at(fraction: float) -> float:
        return latencies[min(len(latencies) - 1, int(fraction * len(latencies)))] * 1000

    return FsyncTail(
        flushes=len(latencies),
        p50_ms=at(0.5),
        p99_ms=at(0.99),
        p999_ms=at(0.999),
        max_ms=latencies[-1] * 1000,
        over_100ms=sum(latency > SLOW_S for latency in latencies),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("LB_DATA_DIR", ".data")))
    args = parser.parse_args()
    tail = measure(args.dir, args.seconds)
    print(
        f"fdatasync of 8 KiB appends in {args.dir.resolve()}, {args.seconds:.0f} s: {tail.flushes} flushes, "
        f"p50 {tail.p50_ms:.2f} ms, p99 {tail.p99_ms:.2f} ms, p99.9 {tail.p999_ms:.2f} ms, "
        f"max {tail.max_ms:.1f} ms; {tail.over_100ms} over 100 ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
