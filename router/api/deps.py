"""What the routes depend on: the router's services, the path and query parameters
they share, and the token checks — plain functions that the fast lanes
(router.asgi.shortcuts) call too, and FastAPI dependencies over them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request, Security
from fastapi.security import APIKeyHeader

from router.api.errors import Unauthorized
from router.api.schemas import (
    MONTH_PATTERN,
    USER_ID_PATTERN,
)
from router.services import Services


# Dependencies are `async def`: FastAPI runs plain `def` dependencies in a thread
# pool, and that hop was a third of a write's CPU time in a profile.
async def services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(services)]


MonthQuery = Annotated[
    str | None, Query(pattern=MONTH_PATTERN, description="YYYY-MM (UTC); default: the current month")
]


UserPath = Annotated[str, Path(pattern=USER_ID_PATTERN, description="1-64 characters of [A-Za-z0-9_.:-]")]


# Tokens are security schemes, so the API docs offer an "Authorize" button; reading a
# header this way is also cheaper than a validated Header() parameter on every request.
_GAME_TOKEN = APIKeyHeader(
    name="X-Game-Service-Token", auto_error=False, scheme_name="GameToken", description="Writes (and reads)"
)


_READ_TOKEN = APIKeyHeader(
    name="X-Read-Token", auto_error=False, scheme_name="ReadToken", description="Reads, when LB_READ_TOKENS is set"
)


_ADMIN_TOKEN = APIKeyHeader(name="X-Admin-Token", auto_error=False, scheme_name="AdminToken")


def check_game_token(svc: Services, token: str | None) -> str:
    if not svc.is_game_token(token):
        raise Unauthorized("a valid X-Game-Service-Token header is required")
    assert token is not None
    return token


def check_reader(svc: Services, read_token: str | None, game_token: str | None) -> None:
    if not svc.may_read(read_token, game_token):
        raise Unauthorized("a valid X-Read-Token header is required")


def check_admin(svc: Services, token: str | None) -> str:
    """The admin token's name (what the audit records as `who`)."""
    name = svc.admin_name(token)
    if name is None:
        raise Unauthorized("a valid X-Admin-Token header is required")
    return name


async def require_game_token(svc: ServicesDep, token: Annotated[str | None, Security(_GAME_TOKEN)]) -> str:
    return check_game_token(svc, token)


GameToken = Annotated[str, Depends(require_game_token)]


async def require_reader(
    svc: ServicesDep,
    read_token: Annotated[str | None, Security(_READ_TOKEN)],
    game_token: Annotated[str | None, Security(_GAME_TOKEN)],
) -> None:
    check_reader(svc, read_token, game_token)


async def require_admin_token(svc: ServicesDep, token: Annotated[str | None, Security(_ADMIN_TOKEN)]) -> str:
    return check_admin(svc, token)


AdminName = Annotated[str, Depends(require_admin_token)]
