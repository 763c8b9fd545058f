"""The router's ASGI application: `uvicorn --factory router.app:create_app`.

From the outside in: request ids, metrics, the access log and the body limit
(`RequestContext`), CORS when configured, the hot paths answered before the
framework (`HotPaths`), then the FastAPI app with every route."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from router.api.errors import error_response, http_error_response, too_large_response, validation_response
from router.api.routes import router
from router.asgi.access_log import AccessLog
from router.asgi.http import BodyTooLarge
from router.asgi.observability import RequestContext, configure_logging
from router.asgi.shortcuts import (
    AcceptSingleBoardScores,
    AcceptSingleScores,
    AnswerKnownBoardTopPages,
    AnswerKnownTopPages,
    AnswerPlainBoardRankReads,
    AnswerPlainRankReads,
    HotPaths,
)
from router.errors import LeaderboardError
from router.services import Services
from router.settings import Settings, check_production_safety, get_settings

log = logging.getLogger("router")


# A young-generation collection every 20,000 container allocations instead of 700: a
# batch allocates several containers per event (validated bodies, events, rows, player
# states, results), so the default collected many times per batch. With this, and the
# startup objects frozen out of every collection, the router's CPU per batch event
# was 52-57 us against 60-84 us with the defaults (three alternating runs each, CPU
# times from /proc; single writes changed by less than the noise).
GC_THRESHOLDS = (20_000, 20, 50)


def tune_garbage_collector() -> None:
    """Once the process is set up: its modules, app and clients are never garbage."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def create_app(settings: Settings | None = None) -> RequestContext:
    settings = settings or get_settings()
    configure_logging(settings.log_json)
    check_production_safety(settings)
    access_log = (
        None
        if settings.access_log == "off"
        else AccessLog(sys.stderr.fileno(), json_lines=settings.log_json, flush_interval_s=settings.access_log_flush_s)
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await Services.create(settings)
        app.state.services = services
        await services.start()
        tune_garbage_collector()
        try:
            yield
        finally:
            await services.stop()
            if access_log is not None:
                access_log.flush()

    app = FastAPI(
        title="Leaderboard cluster",
        version="1.0.0",
        description=(
            "Real-time leaderboard over score-range sharded Redis, with PostgreSQL as the "
            "source of truth. Writes need `X-Game-Service-Token`; admin calls `X-Admin-Token`."
        ),
        lifespan=lifespan,
    )
    app.include_router(router)

    @app.exception_handler(LeaderboardError)
    async def _domain_error(_: Request, exc: LeaderboardError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, BodyTooLarge):
            # A body with no declared length passed the limit while FastAPI read it.
            return too_large_response(settings.max_body_bytes)
        return http_error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    # Single writes first: the checks run in this order on every request they see.
    front: ASGIApp = HotPaths(
        app,
        [
            AcceptSingleScores,
            AnswerPlainRankReads,
            AnswerKnownTopPages,
            AcceptSingleBoardScores,
            AnswerPlainBoardRankReads,
            AnswerKnownBoardTopPages,
        ],
    )
    if settings.cors_origins:
        front = CORSMiddleware(
            front,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-Game-Service-Token", "X-Read-Token", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    return RequestContext(
        front,
        max_body_bytes=settings.max_body_bytes,
        access_log=access_log,
        only_writes=settings.access_log == "writes",
    )
