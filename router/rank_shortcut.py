"""`GET /v1/scores/{user_id}` in its plain form, answered before FastAPI's routing.

After the top pages, a player's own rank is what clients poll most. In a profile of
that read, FastAPI's routing and dependency solving took more CPU than finding the
rank on the shards. This middleware answers the plain form — a well-formed user id,
no query string — with the same code the route uses (`api.player_body`, the same
token check, the same error answers); anything else (another month, a malformed id)
goes on to the route, which validates it and documents it in the OpenAPI schema.
"""

from __future__ import annotations

import re

from router.api import Unauthorized, error_response, player_body
from router.asgi import header, send_json
from router.errors import LeaderboardError
from router.schemas import USER_ID_PATTERN

PREFIX = "/v1/scores/"
_USER_ID = re.compile(USER_ID_PATTERN)


class AnswerPlainRankReads:
    def __init__(self, app) -> None:
        self.app = app
        self._route = None

    async def __call__(self, scope, receive, send):
        if not self._plain_rank_read(scope):
            return await self.app(scope, receive, send)
        if self._route is None:
            # The route (for the request metrics' label) is learnt from the first read
            # routed the usual way.
            await self.app(scope, receive, send)
            self._route = scope.get("route")
            return None
        scope["route"] = self._route
        services = scope["app"].state.services
        try:
            if not services.may_read(header(scope, b"x-read-token"), header(scope, b"x-game-service-token")):
                raise Unauthorized("a valid X-Read-Token header is required")
            body = await player_body(services, scope["path"][len(PREFIX) :], None)
        except LeaderboardError as exc:
            return await error_response(exc)(scope, receive, send)
        await send_json(send, body)
        return None

    @staticmethod
    def _plain_rank_read(scope) -> bool:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["query_string"]:
            return False
        path = scope["path"]
        return path.startswith(PREFIX) and _USER_ID.match(path[len(PREFIX) :]) is not None
