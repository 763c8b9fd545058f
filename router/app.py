"""The FastAPI application: `uvicorn --factory router.app:create_app`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from router.api import error_response, router, validation_response
from router.errors import LeaderboardError
from router.services import Services
from router.settings import Settings, get_settings

log = logging.getLogger("router")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await Services.create(settings)
        app.state.services = services
        await services.start()
        try:
            yield
        finally:
            await services.stop()

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

    return app
