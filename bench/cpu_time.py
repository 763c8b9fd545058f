"""CPU time used by process trees, from /proc: where a benchmark's time goes.

A ratio of request rates says how fast an endpoint is against another; the CPU each
part of the system spent per request says why. Every server of the local cluster is
the root of a process tree (uvicorn's workers, PostgreSQL's backends), so the CPU of
a part is the sum over its tree. Processes that exit between two readings are
missed, which the cluster's long-lived processes never do.
"""

from __future__ import annotations

import os
import resource
from collections import defaultdict
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, user + system CPU seconds) for every process we can read."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name, in parentheses, may itself contain spaces or ')'.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        found[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS)
    return found


def cpu_seconds(roots: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each named group of process trees (by their root pids),
    plus "load generator": this process itself."""
    processes = _processes()
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (parent, _) in processes.items():
        children[parent].append(pid)
    totals: dict[str, float] = {}
    for name, pids in roots.items():
        total = 0.0
        stack = [pid for pid in pids if pid in processes]
        while stack:
            pid = stack.pop()
            total += processes[pid][1]
            stack += children[pid]
        totals[name] = total
    own = resource.getrusage(resource.RUSAGE_SELF)
    totals["load generator"] = own.ru_utime + own.ru_stime
    return totals


def per_request_us(before: dict[str, float], after: dict[str, float], requests: float) -> dict[str, float]:
    """Microseconds of CPU per request (or per event) for each part, between two readings."""
    return {name: (after[name] - before[name]) / requests * 1e6 for name in after}


def threads_cpu_seconds(pid: int) -> float:
    """CPU seconds of every thread of one process (Redis fsyncs its AOF from a thread of
    its own), from the scheduler's nanosecond counts rather than the 10 ms ticks of
    /proc/<pid>/stat: for readings a fraction of a second apart."""
    return sum(int((task / "schedstat").read_text().split()[0]) for task in Path(f"/proc/{pid}/task").iterdir()) / 1e9
