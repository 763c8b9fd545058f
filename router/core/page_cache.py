"""Rendered top pages, served again only while provably current.

Top pages are what every client polls. Keeping the finished JSON body saves the
range reads, the rank arithmetic and the serialisation. A page remembers the
fingerprint of the board it was computed from — every shard's member count and
generation (`ranking.BoardCounts`), which the apply script changes in the same atomic
step as the sorted set — and is served again only if a fresh read of the fingerprint,
made after the request arrived, still equals it. That read is one round trip, shared
with every other read in flight (`router.aio.coalesce`); a write acknowledged before the
request started has already changed it. So a cached page is as exact as a rendered
one, and no time-to-live is involved.

`stale_ok_s` > 0 is an explicit opt-in to the opposite: a page younger than that is
served without the check, and may then miss writes acknowledged meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar


@dataclass(frozen=True, slots=True)
class _Page:
    fingerprint: Hashable
    body: bytes
    rendered_at: float


class PageCache:
    def __init__(self, stale_ok_s: float = 0.0, max_pages: int = 1000) -> None:
        self.stale_ok_s = stale_ok_s
        self.max_pages = max_pages
        self._pages: dict[Hashable, _Page] = {}

    def recent(self, key: Hashable) -> bytes | None:
        """The page, if the stale-tolerant opt-in allows serving it unchecked."""
        if self.stale_ok_s <= 0:
            return None
        page = self._pages.get(key)
        if page is None or page.rendered_at + self.stale_ok_s <= time.monotonic():
            return None
        return page.body

    def get(self, key: Hashable, fingerprint: Hashable) -> bytes | None:
        """The page, if it was rendered from a board with this very fingerprint."""
        page = self._pages.get(key)
        if page is None or page.fingerprint != fingerprint:
            return None
        return page.body

    def put(self, key: Hashable, fingerprint: Hashable, body: bytes) -> None:
        if len(self._pages) >= self.max_pages and key not in self._pages:
            # Pages far down the board are asked for rarely; starting over is cheaper
            # than tracking which page is least recently used.
            self._pages.clear()
        self._pages[key] = _Page(fingerprint, body, time.monotonic())


class TopQuery(NamedTuple):
    month: str | None
    offset: int
    limit: int


class BoardTopQuery(NamedTuple):
    window: str | None
    period: str | None
    offset: int
    limit: int


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class KnownQueries(Generic[K, V]):
    """Top-page query strings the route has validated (for a board's route, with the
    board: `(board, query string)`), with what they parse to, so the plain form of a
    repeated request can skip routing (`router.asgi.shortcuts`) without a second
    validator that could disagree with the route's."""

    def __init__(self, max_queries: int = 1000) -> None:
        self.max_queries = max_queries
        self._queries: dict[K, V] = {}

    def learn(self, query_string: K, query: V) -> None:
        if query_string in self._queries:
            return
        if len(self._queries) >= self.max_queries:
            self._queries.clear()
        self._queries[query_string] = query

    def get(self, query_string: K) -> V | None:
        return self._queries.get(query_string)
