"""Supervision of the local cluster's processes: one that exits is started again.

Each process is restarted with exponential backoff (from `first_backoff_s`, doubling
up to `max_backoff_s`, back to the start once it has stayed up `stable_s`), every
exit and restart is logged, and the counts are written to a small JSON file that
`shard-manager status` prints and the router exports on /metrics
(`lb_local_restarts_total`). The cluster stops only when asked to.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path


@dataclass
class Supervised:
    name: str
    start: Callable[[], None]
    exit_code: Callable[[], int | None]
    """None while the process runs; its exit status once it has exited."""
    restarts: int = 0
    last_exit: int | None = None
    last_restart: str | None = None
    failed_starts: int = 0
    _backoff_s: float = field(default=0.0, repr=False)
    _retry_at: float | None = field(default=None, repr=False)
    _up_since: float = field(default_factory=time.monotonic, repr=False)


class Supervisor:
    def __init__(
        self,
        state_file: Path,
        *,
        log: Callable[[str], None] = print,
        stopping: Callable[[], bool] = lambda: False,
        first_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        stable_s: float = 60.0,
    ) -> None:
        self.state_file = state_file
        self.log = log
        # Ctrl-C reaches the servers too; one that exits for it must not be started again.
        self.stopping = stopping
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_s = stable_s
        self.processes: list[Supervised] = []

    def watch(self, name: str, start: Callable[[], None], exit_code: Callable[[], int | None]) -> None:
        self.processes.append(Supervised(name, start, exit_code))
        self._write()

    def check(self) -> None:
        """Restart whatever has exited and is due; call it every fraction of a second."""
        now = time.monotonic()
        changed = False
        for proc in self.processes:
            code = proc.exit_code()
            if code is None:
                if proc._retry_at is None and now - proc._up_since > self.stable_s:
                    proc._backoff_s = 0.0
                continue
            if proc._retry_at is None:
                proc.last_exit = code
                proc._backoff_s = self.first_backoff_s if not proc._backoff_s else proc._backoff_s
                proc._retry_at = now + proc._backoff_s
                self.log(f"supervisor: {proc.name} exited with {code}; restarting in {proc._backoff_s:.1f} s")
                changed = True
                continue
            if now < proc._retry_at or self.stopping():
                continue
            try:
                proc.start()
            except Exception as exc:  # noqa: BLE001 - keep trying, with backoff
                proc.failed_starts += 1
                proc._backoff_s = min(self.max_backoff_s, proc._backoff_s * 2)
                proc._retry_at = time.monotonic() + proc._backoff_s
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                self.log(f"supervisor: {proc.name} did not start ({first_line}); next try in {proc._backoff_s:.1f} s")
            else:
                proc.restarts += 1
                proc.last_restart = datetime.now(UTC).isoformat(timespec="seconds")
                proc._retry_at = None
                proc._up_since = time.monotonic()
                # The next exit soon after this start waits longer.
                proc._backoff_s = min(self.max_backoff_s, proc._backoff_s * 2)
                self.log(f"supervisor: {proc.name} restarted (restart {proc.restarts})")
            changed = True
        if changed:
            self._write()

    def _write(self) -> None:
        state = {
            proc.name: {
                "restarts": proc.restarts,
                "running": proc.exit_code() is None,
                "last_exit": proc.last_exit,
                "last_restart": proc.last_restart,
                "failed_starts": proc.failed_starts,
            }
            for proc in self.processes
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1) + "\n")
        os.replace(tmp, self.state_file)
