"""The hottest requests in their plain form, answered in front of FastAPI.

Profiles of a cached top page, a player's rank read and a single score write showed
FastAPI's routing, dependency solving and body handling costing as much CPU as the
work behind them, or more; and the framework's own layers in front of the routing
(its error, telemetry and body-limit middlewares) cost a write or a rank read about
a twentieth of its CPU even when a middleware inside them answered it. So one plain
ASGI app, `HotPaths`, stands in front of the FastAPI app: it answers the plain, valid
form of each of these requests with what the route itself uses
(`api.scores.player_body`, `api.scores.score_body`, `api.boards.top_body`), the same
token checks and the same error answers, and hands everything else to FastAPI — a
top-page query string the route has not validated yet, a malformed id, a body that
does not validate, another content type — whose route validates it, answers it and
documents it in the OpenAPI schema. What the framework's layers gave these answers,
`HotPaths` gives them itself: an unexpected exception becomes a logged 500 in the
error shape; request ids, metrics, the access log, the body limit and CORS wrap it
(`router.app`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable

from pydantic import ValidationError

from router.api.board_routes import board_player_body, board_score_body, board_top_body
from router.api.boards import top_body
from router.api.deps import check_game_token, check_reader
from router.api.errors import error_response
from router.api.schemas import BOARD_ID_PATTERN, USER_ID_PATTERN, ScoreIn
from router.api.scores import player_body, score_body
from router.asgi.http import BodyTooLarge, header, send_json
from router.errors import LeaderboardError

log = logging.getLogger(__name__)

TOP_PATH = "/v1/leaderboard/top"
RANK_PREFIX = "/v1/scores/"
SCORES_PATH = "/v1/scores"
_USER_ID = re.compile(USER_ID_PATTERN)
_BOARD_SCORES = re.compile(rf"/v1/boards/({BOARD_ID_PATTERN[1:-1]})/scores")
_BOARD_TOP = re.compile(rf"/v1/boards/({BOARD_ID_PATTERN[1:-1]})/top")
_BOARD_RANK = re.compile(rf"/v1/boards/({BOARD_ID_PATTERN[1:-1]})/scores/({USER_ID_PATTERN[1:-1]})")


class HotPaths:
    """In front of the FastAPI app `app`: each request one of `shortcuts` takes is
    answered by it; anything else goes to `app`."""

    def __init__(self, app, shortcuts: list[type[_Shortcut]]) -> None:
        self.app = app
        self.shortcuts = [shortcut(app) for shortcut in shortcuts]

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            for shortcut in self.shortcuts:
                if shortcut.takes(scope):
                    return await shortcut(scope, receive, send)
        return await self.app(scope, receive, send)


class _Shortcut:
    """Learns its route (the request metrics' label) from the first request routed the
    usual way; `app` is the FastAPI app, whose state holds the services."""

    def __init__(self, app) -> None:
        self.app = app
        self._route = None

    async def __call__(self, scope, receive, send):
        if self._route is None:
            await self.app(scope, receive, send)
            self._route = scope.get("route")
            return None
        scope["route"] = self._route
        started = False

        async def send_and_note(message):
            nonlocal started
            started = True
            await send(message)

        try:
            return await self.answer(self.app.state.services, scope, receive, send_and_note)
        except BodyTooLarge:
            raise  # answered 413 by RequestContext, outside
        except Exception as exc:  # noqa: BLE001 - what the framework's error middleware does for a route
            log.exception("unexpected error answering %s %s", scope["method"], scope["path"])
            if not started:
                await error_response(exc)(scope, receive, send)
            return None

    def takes(self, scope) -> bool:
        raise NotImplementedError

    async def answer(self, services, scope, receive, send) -> None:
        raise NotImplementedError


async def _answer_read(services, scope, receive, send, render: Callable[[], Awaitable[bytes]]) -> None:
    """A read's answer: the read token checked as the routes check it, then `render()`'s
    body, or the error answer the route would give."""
    try:
        check_reader(services, header(scope, b"x-read-token"), header(scope, b"x-game-service-token"))
        body = await render()
    except LeaderboardError as exc:
        return await error_response(exc)(scope, receive, send)
    await send_json(send, body)
    return None


class AnswerKnownTopPages(_Shortcut):
    """`GET /v1/leaderboard/top` with a query string the route has validated before.

    Answered with the route's own `api.boards.top_body` (which serves a kept page only after
    checking it is current); the read-token check is the route's too.
    """

    def takes(self, scope) -> bool:
        return scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == TOP_PATH

    async def answer(self, services, scope, receive, send) -> None:
        query = services.top_queries.get(scope["query_string"])
        if query is None:
            return await self.app(scope, receive, send)
        return await _answer_read(services, scope, receive, send, lambda: top_body(services, query))


class AnswerKnownBoardTopPages(_Shortcut):
    """`GET /v1/boards/{board}/top` with a query string the route has validated before
    for that board; answered with the route's own `board_top_body`."""

    def takes(self, scope) -> bool:
        return scope["type"] == "http" and scope["method"] == "GET" and _BOARD_TOP.fullmatch(scope["path"]) is not None

    async def answer(self, services, scope, receive, send) -> None:
        board = _BOARD_TOP.fullmatch(scope["path"]).group(1)  # type: ignore[union-attr]
        query = services.board_top_queries.get((board, scope["query_string"]))
        if query is None:
            return await self.app(scope, receive, send)
        return await _answer_read(services, scope, receive, send, lambda: board_top_body(services, board, query))


class AnswerPlainRankReads(_Shortcut):
    """`GET /v1/scores/{user_id}` with a well-formed id and no query string."""

    def takes(self, scope) -> bool:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["query_string"]:
            return False
        path = scope["path"]
        return path.startswith(RANK_PREFIX) and _USER_ID.match(path[len(RANK_PREFIX) :]) is not None

    async def answer(self, services, scope, receive, send) -> None:
        user_id = scope["path"][len(RANK_PREFIX) :]
        return await _answer_read(services, scope, receive, send, lambda: player_body(services, user_id, None))


class AnswerPlainBoardRankReads(_Shortcut):
    """`GET /v1/boards/{board}/scores/{user_id}` with well-formed ids and no query string."""

    def takes(self, scope) -> bool:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["query_string"]:
            return False
        return _BOARD_RANK.fullmatch(scope["path"]) is not None

    async def answer(self, services, scope, receive, send) -> None:
        board, user_id = _BOARD_RANK.fullmatch(scope["path"]).groups()  # type: ignore[union-attr]
        return await _answer_read(services, scope, receive, send, lambda: board_player_body(services, board, user_id))


class AcceptSingleScores(_Shortcut):
    """`POST /v1/scores` with no query string and a JSON body that validates.

    The body is read here; if it does not validate, the route gets it replayed and
    gives its usual 422. Bodies are parsed as FastAPI parses them (the json module,
    then the model in Python mode), so both paths accept exactly the same bodies.
    """

    def takes(self, scope) -> bool:
        return (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == SCORES_PATH
            and not scope["query_string"]
        )

    async def answer(self, services, scope, receive, send) -> None:
        raw = await _read_body(receive)
        if raw is None:
            return None  # the client went away before sending its body
        body = _valid_score(scope, raw)
        if body is None:
            return await self.app(scope, _replay(raw, receive), send)
        token = header(scope, b"x-game-service-token")
        try:
            answer = await self.record(services, check_game_token(services, token), body, scope)
        except LeaderboardError as exc:
            return await error_response(exc)(scope, receive, send)
        await send_json(send, answer)
        return None

    async def record(self, services, token: str, body: ScoreIn, scope) -> bytes:
        return await score_body(services, token, body)


class AcceptSingleBoardScores(AcceptSingleScores):
    """`POST /v1/boards/{board}/scores` with a well-formed board id, no query string and a
    JSON body that validates; as `AcceptSingleScores`, with the board route's answer."""

    def takes(self, scope) -> bool:
        return (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and not scope["query_string"]
            and _BOARD_SCORES.fullmatch(scope["path"]) is not None
        )

    async def record(self, services, token: str, body: ScoreIn, scope) -> bytes:
        board = _BOARD_SCORES.fullmatch(scope["path"]).group(1)  # type: ignore[union-attr]
        return await board_score_body(services, token, board, body)


def _valid_score(scope, raw: bytes) -> ScoreIn | None:
    # Only the plain JSON media type (parameters such as charset aside); the route
    # decides what any other content type means.
    media_type = (header(scope, b"content-type") or "application/json").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        return None
    try:
        return ScoreIn.model_validate(json.loads(raw))
    except (ValueError, ValidationError):  # also UnicodeDecodeError and JSONDecodeError
        return None


async def _read_body(receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(raw: bytes, receive):
    """A `receive` that hands the route the body already read, then the real channel."""
    pending = True

    async def replayed():
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replayed
