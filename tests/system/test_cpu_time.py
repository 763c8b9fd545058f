"""The benchmark's CPU accounting sums a whole process tree, grandchildren included."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.cpu_time import cpu_seconds, per_request_us, threads_cpu_seconds

BURN = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"
# A parent that starts a grandchild burning CPU, as uvicorn starts its workers.
PARENT = f"import subprocess, sys, time\nsubprocess.run([sys.executable, '-c', {BURN!r}])\ntime.sleep(30)\n"


def test_cpu_of_a_tree_includes_its_grandchildren_and_nothing_else():
    parent = subprocess.Popen([sys.executable, "-c", PARENT])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.05)
        before = cpu_seconds({"busy": [parent.pid], "idle": [idle.pid]})
        deadline = time.monotonic() + 10
        # Sampled while the grandchild still runs: once it exits, its time leaves the tree.
        while True:
            now = cpu_seconds({"busy": [parent.pid], "idle": [idle.pid]})
            if now["busy"] - before["busy"] >= 0.2 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert now["busy"] - before["busy"] >= 0.2
        assert now["idle"] - before["idle"] < 0.1
        assert set(now) == {"busy", "idle", "load generator"}
        assert per_request_us({"x": 1.0}, {"x": 1.5}, 1000) == {"x": 500.0}
    finally:
        parent.kill()
        idle.kill()
        parent.wait()
        idle.wait()


# A process whose CPU is spent by a thread other than its main one, as Redis fsyncs
# its AOF from a thread of its own.
THREAD_BURN = (
    "import threading, time\n"
    "def burn():\n"
    "    end = time.thread_time() + 0.3\n"
    "    while time.thread_time() < end: pass\n"
    "threading.Thread(target=burn).start()\n"
    "time.sleep(30)\n"
)


def test_cpu_of_one_process_includes_every_thread():
    busy = subprocess.Popen([sys.executable, "-c", THREAD_BURN])
    try:
        time.sleep(0.05)
        before = threads_cpu_seconds(busy.pid)
        deadline = time.monotonic() + 10
        while threads_cpu_seconds(busy.pid) - before < 0.2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert threads_cpu_seconds(busy.pid) - before >= 0.2
    finally:
        busy.kill()
        busy.wait()
