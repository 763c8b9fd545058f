"""Rendered top pages, kept for a fraction of a second.

Top pages are what every client polls. Keeping the finished JSON body saves the
shard round trips and the serialisation both; an answer may lag the board by up to
the TTL (0 turns this off and every answer is exact). Ranks of single players are
never served from here.
"""

from __future__ import annotations

import time
from collections.abc import Hashable

from router.asgi import header, send_json


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


TOP_PATH = "/v1/leaderboard/top"


def query_key(query_string: bytes) -> tuple[str, bytes]:
    """The cache key of a top page by the request's exact query string."""
    return ("query", query_string)


class ServeCachedTopPages:
    """ASGI middleware: a top page rendered moments ago goes out before routing.

    Every client polls the same few top pages; with the page in memory, FastAPI's
    routing, dependency solving and parameter validation cost more than the answer.
    Only exact query strings a router rendered itself within the TTL are served, so
    nothing unvalidated gets through, and the read-token check still applies.
    """

    def __init__(self, app) -> None:
        self.app = app
        self._route = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == TOP_PATH:
            services = getattr(scope["app"].state, "services", None)
            body = services.top_pages.get(query_key(scope["query_string"])) if services else None
            tokens = header(scope, b"x-read-token"), header(scope, b"x-game-service-token")
            # The route (for the request metrics' label) is known once a page went
            # through routing in this process, which every cached page did.
            if body is not None and self._route is not None and services.may_read(*tokens):
                scope["route"] = self._route
                await send_json(send, body)
                return
            await self.app(scope, receive, send)
            self._route = self._route or scope.get("route")
            return
        await self.app(scope, receive, send)
