"""A circuit breaker: fail fast while a server does not answer, and find out in the
background when it does again.

A frozen process or a network black hole does not refuse connections: every call
waits its whole deadline. Once `failures_to_open` calls in a row have failed, the
breaker opens and callers get their error at once, instead of each of them waiting
a deadline out. While it is open a probe (one cheap call, under the same deadline)
runs every `probe_interval_s` in a background task — never on a client's request —
and the first probe that succeeds closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from router.metrics import CIRCUIT_OPEN, CIRCUITS_OPENED

log = logging.getLogger(__name__)


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        probe: Callable[[], Awaitable[object]],
        *,
        failures_to_open: int = 2,
        probe_interval_s: float = 0.5,
    ) -> None:
        self.name = name
        self._probe = probe
        self.failures_to_open = failures_to_open
        self.probe_interval_s = probe_interval_s
        self._failures = 0
        self._opened_at: float | None = None
        self._prober: asyncio.Task[None] | None = None

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def open_for_s(self) -> float:
        """How long it has been open (0 when closed)."""
        return 0.0 if self._opened_at is None else time.monotonic() - self._opened_at

    def record_success(self) -> None:
        self._failures = 0
        if self._opened_at is not None:
            self._close()

    def record_failure(self) -> None:
        self._failures += 1
        if self._opened_at is None and self._failures >= self.failures_to_open:
            self._opened_at = time.monotonic()
            CIRCUIT_OPEN.labels(self.name).set(1)
            CIRCUITS_OPENED.labels(self.name).inc()
            log.warning("%s does not answer: failing its calls fast until a probe succeeds", self.name)
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to probe from
                self._prober = asyncio.get_running_loop().create_task(self._probe_until_closed())

    def _close(self) -> None:
        log.warning("%s answers again after %.1f s", self.name, self.open_for_s())
        self._opened_at = None
        self._failures = 0
        CIRCUIT_OPEN.labels(self.name).set(0)

    async def _probe_until_closed(self) -> None:
        while self._opened_at is not None:
            await asyncio.sleep(self.probe_interval_s)
            try:
                await self._probe()
            except Exception:  # noqa: BLE001, S112 - still not answering: probe again later
                continue
            if self._opened_at is not None:
                self._close()

    def abandon(self) -> None:
        """Stop probing (the server left the layout or moved): no one will ask again."""
        if self._prober is not None:
            self._prober.cancel()

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
