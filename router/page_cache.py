"""Rendered top pages, kept for a fraction of a second.

Top pages are what every client polls. Keeping the finished JSON body saves the
shard round trips and the serialisation both; an answer may lag the board by up to
the TTL (0 turns this off and every answer is exact). Ranks of single players are
never served from here.
"""

from __future__ import annotations

import time
from collections.abc import Hashable


class PageCache:
    def __init__(self, ttl_s: float, max_pages: int = 1000) -> None:
        self.ttl_s = ttl_s
        self.max_pages = max_pages
        self._pages: dict[Hashable, tuple[float, bytes]] = {}

    def get(self, key: Hashable) -> bytes | None:
        if self.ttl_s <= 0:
            return None
        found = self._pages.get(key)
        if found is None or found[0] <= time.monotonic():
            return None
        return found[1]

    def put(self, key: Hashable, body: bytes) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._pages) >= self.max_pages:
            # Pages far down the board are asked for rarely; starting over is cheaper
            # than tracking which page is least recently used.
            self._pages.clear()
        self._pages[key] = (time.monotonic() + self.ttl_s, body)


def query_key(query_string: bytes) -> tuple[str, bytes]:
    """The cache key of a top page by the request's exact query string."""
    return ("query", query_string)
