"""Routes of the many-boards API (`/v1/boards/...`, `/v1/admin/boards/...`).

The original routes (`/v1/scores`, `/v1/leaderboard/top`, `?month=`) serve board
`global` and keep their answers; these name the board in the path and the window and
period in the query.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from router.api.answers import entries_out, json_answer, metadata_of, with_metadata
from router.api.boards import exact_top_page
from router.api.deps import GameToken, ServicesDep, UserPath, require_admin_token, require_reader
from router.api.errors import ERRORS, REFUSED_PLAYER
from router.api.schemas import (
    BOARD_ID_PATTERN,
    BatchIn,
    BatchOut,
    BoardConfigOut,
    BoardIn,
    BoardPageOut,
    BoardPlayerOut,
    BoardScoreOut,
    BoardsOut,
    ErrorOut,
    ListEntryOut,
    RangeOut,
    RanksIn,
    RanksOut,
    ScoreIn,
)
from router.api.scores import batch_body, windows_out
from router.background.seasons import archive_period, unarchived_periods_of
from router.boards import Board, parse_ranges
from router.core.page_cache import BoardTopQuery
from router.core.ranking import Entry
from router.services import Services
from router.shardmap import ShardMap

router = APIRouter()

NOT_FOUND = {404: {"model": ErrorOut, "description": "No such board (or, for a player, no score in that period)"}}

BoardPath = Annotated[str, Path(pattern=BOARD_ID_PATTERN, description="1-64 characters of [a-z0-9_.-]")]
WindowQuery = Annotated[
    str | None, Query(pattern=r"^(all|monthly|weekly|daily)$", description="Default: the board's first window")
]
PeriodQuery = Annotated[
    str | None,
    Query(max_length=16, description="all, 2026-12, 2026-W49 or 2026-12-01 (per window); default: the current one"),
]


async def _configs(svc: Services, boards: list[Board]) -> list[BoardConfigOut]:
    """The boards' configs with their players in each window's current period: one
    PostgreSQL query for all of them, however many boards there are."""
    now = svc.service.now()
    current = {b.id: dict(zip(b.windows, b.board_periods(now), strict=True)) for b in boards if not b.closed}
    counts = await svc.store.board_players([key for periods in current.values() for key in periods.values()])
    return [
        BoardConfigOut(
            id=b.id,
            order=b.order,
            operator=b.operator,
            windows=list(b.windows),
            status="closed" if b.closed else "open",
            players={w: counts.get(key, 0) for w, key in current.get(b.id, {}).items()},
            ranges=[RangeOut(shard=s, min_score=lo, max_score=hi) for s, lo, hi in _ranges(svc, b)],
        )
        for b in boards
    ]


def _ranges(svc: Services, board: Board) -> list:
    # A board's own split says it all (so a router that has not yet loaded a newer layout
    # still shows it right); only a board without one needs the layout's.
    if board.split is None:
        return board.ranges(svc.shard_map)
    return board.ranges(ShardMap.from_bounds(1, [(shard_id, "", start) for shard_id, start in board.split]))


async def _config(svc: Services, board: Board) -> BoardConfigOut:
    return (await _configs(svc, [board]))[0]


@router.get("/v1/boards", tags=["boards"], response_model=BoardsOut, dependencies=[Depends(require_reader)])
async def list_boards(svc: ServicesDep) -> Response:
    """Every board, open and closed, with its config and its players in each window's current period."""
    await svc.boards.refresh_if_changed()
    boards = sorted(svc.boards.boards.values(), key=lambda b: b.id)
    return json_answer(BoardsOut(boards=await _configs(svc, boards)))


@router.get(
    "/v1/boards/{board}",
    tags=["boards"],
    response_model=BoardConfigOut,
    dependencies=[Depends(require_reader)],
    responses={**ERRORS, **NOT_FOUND},
)
async def get_board(board: BoardPath, svc: ServicesDep) -> Response:
    return json_answer(await _config(svc, await svc.boards.get(board)))


@router.put(
    "/v1/admin/boards/{board}",
    tags=["admin"],
    response_model=BoardConfigOut,
    dependencies=[Depends(require_admin_token)],
    responses={
        **ERRORS,
        409: {"model": ErrorOut, "description": "Order, windows or ranges of a board with scores"},
    },
    summary="Create a board or change it (order, windows and ranges only while it has no scores)",
)
async def put_board(board: BoardPath, body: BoardIn, svc: ServicesDep) -> Response:
    wanted = Board.checked(board, body.order, body.operator, body.windows)
    ranges = None if body.ranges is None else parse_ranges([r.model_dump() for r in body.ranges])
    stored, _ = await svc.store.put_board(wanted, ranges)
    svc.boards.learn(stored)
    return json_answer(await _config(svc, stored))


@router.delete(
    "/v1/admin/boards/{board}",
    tags=["admin"],
    response_model=BoardConfigOut,
    dependencies=[Depends(require_admin_token)],
    responses={**ERRORS, **NOT_FOUND},
    summary="Close a board: it takes no more events, its standings are archived and stay readable",
)
async def delete_board(board: BoardPath, svc: ServicesDep) -> Response:
    found = await svc.boards.get(board)
    await svc.store.close_board(found.id)
    closed = replace(found, closed=True)
    svc.boards.learn(closed)
    dsn, now = svc.settings.database_url, svc.service.now()

    def archive_all() -> None:
        for key in unarchived_periods_of(dsn, found.id):
            archive_period(dsn, key, now, closing=True)

    await asyncio.to_thread(archive_all)
    return json_answer(await _config(svc, closed))


@router.post(
    "/v1/boards/{board}/scores",
    tags=["boards"],
    response_model=BoardScoreOut,
    responses={
        **ERRORS,
        **NOT_FOUND,
        **REFUSED_PLAYER,
        409: {"model": ErrorOut, "description": "Period or board closed, or match_id reused"},
    },
    summary="Record one result on a board: every window of the board, in one commit",
)
async def post_board_score(board: BoardPath, body: ScoreIn, svc: ServicesDep, token: GameToken) -> Response:
    return Response(await board_score_body(svc, token, board, body), media_type="application/json")


async def board_score_body(svc: Services, token: str, board: str, body: ScoreIn) -> bytes:
    """The answer of `POST /v1/boards/{board}/scores` for a valid body and token; also
    used by `router.asgi.shortcuts`."""
    found = await svc.boards.get(board)
    outcomes = await svc.service.record(found, body, token)
    out = BoardScoreOut(
        user_id=body.user_id,
        board=found.id,
        duplicate=outcomes[0].row.status == "duplicate",
        windows=windows_out(found, outcomes),
    )
    return out.model_dump_json().encode()


@router.post(
    "/v1/boards/{board}/scores/batch",
    tags=["boards"],
    response_model=BatchOut,
    responses={**ERRORS, **NOT_FOUND},
    summary="Record up to 1000 results on a board; one result per event",
)
async def post_board_batch(board: BoardPath, body: BatchIn, svc: ServicesDep, token: GameToken) -> Response:
    await svc.boards.get(board)
    return Response(await batch_body(svc, token, body.events, board), media_type="application/json")


@router.get(
    "/v1/boards/{board}/scores/{user_id}",
    tags=["boards"],
    response_model=BoardPlayerOut,
    dependencies=[Depends(require_reader)],
    responses={**ERRORS, **NOT_FOUND},
)
async def get_board_player(
    board: BoardPath, user_id: UserPath, svc: ServicesDep, window: WindowQuery = None, period: PeriodQuery = None
) -> Response:
    return Response(await board_player_body(svc, board, user_id, window, period), media_type="application/json")


async def board_player_body(
    svc: Services, board: str, user_id: str, window: str | None = None, period: str | None = None
) -> bytes:
    """The answer of `GET /v1/boards/{board}/scores/{user_id}`; also used by `router.asgi.shortcuts`."""
    target = await svc.service.target(await svc.boards.get(board), window, period)
    me = await svc.service.standing(target, user_id)
    out = BoardPlayerOut(
        user_id=user_id,
        board=board,
        window=target.window,
        period=target.label,
        score=me.score,
        rank=me.rank,
        percentile=me.percentile,
        total_players=me.total_players,
        **metadata_of(me.metadata),
    )
    return with_metadata(out)


@router.get(
    "/v1/boards/{board}/scores/{user_id}/around",
    tags=["boards"],
    response_model=BoardPageOut,
    dependencies=[Depends(require_reader)],
    responses={**ERRORS, **NOT_FOUND},
)
async def get_board_around(
    board: BoardPath,
    user_id: UserPath,
    svc: ServicesDep,
    radius: Annotated[int, Query(ge=0, le=50)] = 4,
    window: WindowQuery = None,
    period: PeriodQuery = None,
) -> Response:
    target = await svc.service.target(await svc.boards.get(board), window, period)
    total, entries = await svc.service.around(target, user_id, radius)
    out = BoardPageOut(
        board=board, window=target.window, period=target.label, total_players=total, entries=entries_out(entries)
    )
    return Response(with_metadata(out), media_type="application/json")


@router.get(
    "/v1/boards/{board}/top",
    tags=["boards"],
    response_model=BoardPageOut,
    dependencies=[Depends(require_reader)],
    responses={**ERRORS, **NOT_FOUND},
)
async def get_board_top(
    request: Request,
    board: BoardPath,
    svc: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    window: WindowQuery = None,
    period: PeriodQuery = None,
) -> Response:
    query = BoardTopQuery(window, period, offset, limit)
    # Known to validate from now on: `router.asgi.shortcuts` may answer it before routing.
    svc.board_top_queries.learn((board, request.scope["query_string"]), query)
    return Response(await board_top_body(svc, board, query), media_type="application/json")


async def board_top_body(svc: Services, board: str, query: BoardTopQuery) -> bytes:
    """The answer of `GET /v1/boards/{board}/top`; also used by `router.asgi.shortcuts`."""
    target = await svc.service.target(await svc.boards.get(board), query.window, query.period)

    def render(total: int, entries: list[Entry]) -> bytes:
        out = BoardPageOut(
            board=board, window=target.window, period=target.label, total_players=total, entries=entries_out(entries)
        )
        return with_metadata(out)

    return await exact_top_page(svc, "boards", target, query.offset, query.limit, render)


@router.post(
    "/v1/boards/{board}/ranks",
    tags=["boards"],
    response_model=RanksOut,
    dependencies=[Depends(require_reader)],
    responses={**ERRORS, **NOT_FOUND},
    summary="Rank a list of players (a friends board): global ranks, and their order among themselves",
)
async def post_board_ranks(board: BoardPath, body: RanksIn, svc: ServicesDep) -> Response:
    target = await svc.service.target(await svc.boards.get(board), body.window, body.period)
    total, found = await svc.service.standings(target, body.user_ids)
    # Global ranks are distinct (equal scores go to who reached them first), so they
    # order the list, ties included.
    list_ranks = {user: k for k, user in enumerate(sorted(found, key=lambda u: found[u].rank), start=1)}
    entries = [
        ListEntryOut(
            user_id=user,
            rank=found[user].rank if user in found else None,
            score=found[user].score if user in found else None,
            list_rank=list_ranks.get(user),
            **metadata_of(found[user].metadata if user in found else None),
        )
        for user in dict.fromkeys(body.user_ids)
    ]
    out = RanksOut(board=board, window=target.window, period=target.label, total_players=total, entries=entries)
    return Response(with_metadata(out), media_type="application/json")
