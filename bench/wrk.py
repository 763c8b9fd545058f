"""HTTP load from wrk, a C load generator, when it is installed.

On two cores a Python load generator spends CPU the router then lacks; wrk spends a
fraction of it, so what it measures is the server. Requests are made by a Lua script
per scenario; wrk threads all start with the same random seed, so each thread gets
its own id in `setup()` and puts it into the ids it generates (otherwise threads
would send each other's writes, answered as duplicates).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

RESULT_TAG = "WRK_RESULT "

_COMMON = """
local next_thread = 1
function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
end
function init(args)
  math.randomseed(thread_id * 7919 + 17)
  sent = 0
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,"p50_us":%d,"p99_us":%d}\\n',
    "WRK_RESULT ", summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    errors: int  # socket errors, timeouts and non-2xx/3xx answers
    seconds: float
    p50_s: float
    p99_s: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def median_latency(self) -> float:
        return self.p50_s

    def percentile(self, p: float) -> float:
        if p == 50:
            return self.p50_s
        if p == 99:
            return self.p99_s
        raise ValueError("wrk results carry p50 and p99 only")


def available() -> str | None:
    """wrk's version line, or None if it is not installed."""
    path = shutil.which("wrk")
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    text = (out.stdout or out.stderr).strip()
    # "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) ...": the name and version are enough.
    return " ".join(text.split()[:2]) if text else "wrk"


def get_script(path: str) -> str:
    return _COMMON + f'request = function() return wrk.format("GET", "{path}") end\n'


def rank_script(players: int, prefix: str, path: str = "/v1/scores/") -> str:
    """GET `path`{id} (/v1/scores/{id}, or a board's) for random players <prefix>0 .. <prefix><players - 1>."""
    return _COMMON + (
        f'request = function()\n  return wrk.format("GET", "{path}{prefix}" .. math.random(0, {players - 1}))\nend\n'
    )


def score_script(token: str, run_id: str, players: int, prefix: str = "p", path: str = "/v1/scores") -> str:
    """POST `path` (/v1/scores, or a board's /v1/boards/{board}/scores) for random
    players, each with a match_id no other request uses."""
    return _COMMON + (
        "request = function()\n"
        "  sent = sent + 1\n"
        f'  local body = string.format(\'{{"user_id":"{prefix}%d","match_id":"{run_id}-%d-%d","score":%d}}\',\n'
        f"    math.random(0, {players - 1}), thread_id, sent, math.random(1, 40))\n"
        f'  return wrk.format("POST", "{path}", {{["X-Game-Service-Token"] = "{token}", '
        '["Content-Type"] = "application/json"}, body)\n'
        "end\n"
    )


def run(url: str, script: str, *, connections: int, seconds: float, threads: int = 1) -> WrkResult:
    """One timed run of wrk against `url` (scheme, host and port), with `script`."""
    with tempfile.TemporaryDirectory(prefix="lb-wrk-") as tmp:
        script_path = Path(tmp) / "scenario.lua"
        script_path.write_text(script)
        out = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{max(connections, threads)}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                str(script_path),
                url,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=seconds + 60,
        )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith(RESULT_TAG)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result (exit {out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    data = json.loads(line.removeprefix(RESULT_TAG))
    return WrkResult(
        requests=data["requests"],
        errors=data["errors"] + data["non2xx"],
        seconds=data["duration_us"] / 1e6,
        p50_s=data["p50_us"] / 1e6,
        p99_s=data["p99_us"] / 1e6,
    )
