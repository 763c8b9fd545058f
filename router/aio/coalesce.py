"""Natural batching: calls that arrive while one is in flight go out together next.

Nothing waits on a timer. An idle system sends each call at once; a busy one sends
one call per in-flight round trip with everything that queued meanwhile, so the
number of round trips stops growing with the request rate. Every item is answered
by a call sent after it arrived, never by one already on the wire, so an answer is
as fresh as if the item had been sent alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741 - item, next to K and R
R = TypeVar("R")


class Coalescer(Generic[K, I, R]):
    def __init__(self, run: Callable[[K, Sequence[I]], Awaitable[Sequence[R]]]) -> None:
        """`run(key, items)` answers every item of one key in one call, in order."""
        self._run = run
        self._waiting: dict[K, list[tuple[I, asyncio.Future[R]]]] = {}
        self._flushers: dict[K, asyncio.Task[None]] = {}

    async def submit(self, key: K, item: I) -> R:
        return await self.enqueue(key, item)

    def enqueue(self, key: K, item: I) -> asyncio.Future[R]:
        """Like `submit`, as a plain future: several can be gathered without a task each."""
        answer: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append((item, answer))
        if key not in self._flushers:
            self._flushers[key] = asyncio.create_task(self._flush(key))
        return answer

    async def drain(self) -> None:
        """Wait until every call started so far has been answered."""
        while self._flushers:
            await asyncio.gather(*self._flushers.values(), return_exceptions=True)

    async def _flush(self, key: K) -> None:
        try:
            while batch := self._waiting.pop(key, None):
                try:
                    results = await self._run(key, [item for item, _ in batch])
                except BaseException as exc:  # every waiter must hear about it
                    for _, answer in batch:
                        if not answer.done():
                            answer.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, answer), result in zip(batch, results, strict=True):
                    if not answer.done():
                        answer.set_result(result)
        finally:
            del self._flushers[key]
