"""Routes that read the board: top pages and the months that can be read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from router.api.answers import entries_out, with_metadata
from router.api.deps import MonthQuery, ServicesDep, require_reader
from router.api.errors import ERRORS
from router.api.schemas import (
    BoardOut,
    MonthOut,
    MonthsOut,
)
from router.boards import LEGACY_BOARD
from router.core.board_service import ReadTarget, shown_entries
from router.core.page_cache import TopQuery
from router.core.ranking import Entry
from router.metrics import TOP_PAGES
from router.services import Services

router = APIRouter()


@router.get(
    "/v1/leaderboard/top",
    tags=["reads"],
    dependencies=[Depends(require_reader)],
    response_model=BoardOut,
    responses=ERRORS,
    summary="The top of the board, paged",
)
async def get_top(
    request: Request,
    svc: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    month: MonthQuery = None,
) -> Response:
    # This exact query string is now known to validate: `router.asgi.shortcuts` may answer
    # it before routing from here on, with the same function.
    svc.top_queries.learn(request.scope["query_string"], TopQuery(month, offset, limit))
    return Response(await top_body(svc, TopQuery(month, offset, limit)), media_type="application/json")


async def top_body(svc: Services, query: TopQuery) -> bytes:
    """The answer of `GET /v1/leaderboard/top`; also used by `router.asgi.shortcuts`.

    A live page rendered before is served again only if the board's fingerprint, read
    after this request arrived, is the one it was rendered from (`router.core.page_cache`).
    """
    target = await svc.service.month_target(query.month)

    def render(total: int, entries: list[Entry]) -> bytes:
        return with_metadata(BoardOut(month=target.label, total_players=total, entries=entries_out(entries)))

    return await exact_top_page(svc, "leaderboard", target, query.offset, query.limit, render)


async def exact_top_page(
    svc: Services,
    route: str,
    target: ReadTarget,
    offset: int,
    limit: int,
    render: Callable[[int, list[Entry]], bytes],
) -> bytes:
    """A top page's body, `render(total_players, entries)`: a live page rendered before
    is served again only if the board's fingerprint, read after this request arrived,
    is the one it was rendered from (`router.core.page_cache`); an archived one is read
    from PostgreSQL. `route` keeps apart the bodies of routes that answer the same
    board period in different shapes."""
    if target.archived:
        return render(*await svc.service.top(target, offset, limit))
    key = (route, target.board_period, offset, limit)
    body = svc.top_pages.recent(key)
    if body is not None:
        TOP_PAGES.labels("stale_ok").inc()
        return body
    counts = await svc.ranks.counts(target.board_period)
    body = svc.top_pages.get(key, counts.fingerprint)
    if body is not None:
        TOP_PAGES.labels("reused").inc()
        return body
    page = await svc.ranks.top(target.board_period, offset, limit, counts)
    body = render(page.counts.total, shown_entries(target.board, page))
    if page.consistent:
        # Under the counts it was read with (a shard that changed meanwhile was counted anew).
        svc.top_pages.put(key, page.counts.fingerprint, body)
    TOP_PAGES.labels("rendered").inc()
    return body


@router.get(
    "/v1/leaderboard/months",
    tags=["reads"],
    dependencies=[Depends(require_reader)],
    response_model=MonthsOut,
    responses=ERRORS,
    summary="Months that can be read: the two live ones and every archived one",
)
async def get_months(svc: ServicesDep) -> MonthsOut:
    periods = await svc.service.periods(await svc.boards.get(LEGACY_BOARD))
    return MonthsOut(months=[MonthOut(month=label, status=status, players=n) for _, label, status, n in periods])
