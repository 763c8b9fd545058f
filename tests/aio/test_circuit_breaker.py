"""The circuit breaker on its own: it opens after enough misses in a row, stays open
while its probe fails, and closes on the first probe that succeeds — in the background."""

from __future__ import annotations

import asyncio

from router.aio.circuit_breaker import CircuitBreaker


def test_it_opens_after_misses_in_a_row_and_a_successful_probe_closes_it():
    async def main():
        answering = False
        probes = 0

        async def probe():
            nonlocal probes
            probes += 1
            if not answering:
                raise ConnectionError("still down")

        breaker = CircuitBreaker("test", probe, failures_to_open=2, probe_interval_s=0.01)
        breaker.record_failure()
        breaker.record_success()  # a success in between: the count starts again
        breaker.record_failure()
        assert not breaker.is_open
        breaker.record_failure()
        assert breaker.is_open
        await asyncio.sleep(0.05)
        assert breaker.is_open and probes >= 2  # probed in the background, still failing
        answering = True
        await asyncio.sleep(0.05)
        assert not breaker.is_open and breaker.open_for_s() == 0.0
        await breaker.close()

    asyncio.run(main())


def test_an_abandoned_breaker_stops_probing():
    async def main():
        probes = 0

        async def probe():
            nonlocal probes
            probes += 1
            raise ConnectionError("down")

        breaker = CircuitBreaker("test", probe, failures_to_open=1, probe_interval_s=0.01)
        breaker.record_failure()
        await asyncio.sleep(0.05)
        breaker.abandon()
        await asyncio.sleep(0)
        seen = probes
        await asyncio.sleep(0.05)
        assert probes == seen

    asyncio.run(main())
