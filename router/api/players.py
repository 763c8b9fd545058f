"""Admin routes on players: hide and unhide (on a board or every board), remove an
entry, erase a player, and the audit of those actions."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, Query

from router.api.deps import AdminName, ServicesDep, UserPath
from router.api.errors import ERRORS
from router.api.schemas import (
    BOARD_ID_PATTERN,
    REASON_PATTERN,
    AuditEntryOut,
    AuditOut,
    ErrorOut,
    HeldEntryOut,
    PlayerActionIn,
    PlayerActionOut,
    PlayerRecordOut,
)
from router.periods import split_board_period
from router.store.players import ActionResult

router = APIRouter()

BoardPath = Annotated[str, Path(pattern=BOARD_ID_PATTERN, description="1-64 characters of [a-z0-9_.-]")]
ReasonQuery = Annotated[
    str, Query(min_length=1, max_length=500, pattern=REASON_PATTERN, description="Why (kept in the audit)")
]
ANSWERS = {
    **ERRORS,
    404: {"model": ErrorOut, "description": "No such board"},
    409: {"model": ErrorOut, "description": "Hidden on every board: unhide there"},
}


def _out(result: ActionResult) -> PlayerActionOut:
    return PlayerActionOut(
        action=result.action, user_id=result.user_id, board=result.board, changed=result.changed, detail=result.detail
    )


@router.post(
    "/v1/admin/boards/{board}/players/{user_id}/hide",
    tags=["admin"],
    response_model=PlayerActionOut,
    responses=ANSWERS,
    summary="Hide a player on a board: gone from its answers, their events refused (403), history kept",
)
async def hide_on_board(board: BoardPath, user_id: UserPath, body: PlayerActionIn, svc: ServicesDep, who: AdminName):
    await svc.boards.get(board)
    return _out(await svc.players.hide(user_id, board, body.reason, who))


@router.post(
    "/v1/admin/boards/{board}/players/{user_id}/unhide",
    tags=["admin"],
    response_model=PlayerActionOut,
    responses=ANSWERS,
    summary="Show a hidden player on a board again, with their score",
)
async def unhide_on_board(board: BoardPath, user_id: UserPath, body: PlayerActionIn, svc: ServicesDep, who: AdminName):
    await svc.boards.get(board)
    return _out(await svc.players.unhide(user_id, board, body.reason, who))


@router.post(
    "/v1/admin/players/{user_id}/hide",
    tags=["admin"],
    response_model=PlayerActionOut,
    responses=ANSWERS,
    summary="Hide a player on every board, including boards made later",
)
async def hide_everywhere(user_id: UserPath, body: PlayerActionIn, svc: ServicesDep, who: AdminName):
    return _out(await svc.players.hide(user_id, None, body.reason, who))


@router.post(
    "/v1/admin/players/{user_id}/unhide",
    tags=["admin"],
    response_model=PlayerActionOut,
    responses=ANSWERS,
    summary="Undo every hiding of a player (on every board and on single boards)",
)
async def unhide_everywhere(user_id: UserPath, body: PlayerActionIn, svc: ServicesDep, who: AdminName):
    return _out(await svc.players.unhide(user_id, None, body.reason, who))


@router.delete(
    "/v1/admin/boards/{board}/players/{user_id}",
    tags=["admin"],
    response_model=PlayerActionOut,
    responses=ANSWERS,
    summary="Remove a player's entry in one period (live or archived): score, place and events",
)
async def remove_entry(
    board: BoardPath,
    user_id: UserPath,
    reason: ReasonQuery,
    svc: ServicesDep,
    who: AdminName,
    window: Annotated[str | None, Query(pattern=r"^(all|monthly|weekly|daily)$")] = None,
    period: Annotated[str | None, Query(max_length=16)] = None,
):
    target = await svc.service.target(await svc.boards.get(board), window, period)
    return _out(await svc.players.remove(user_id, target.board_period, reason, who))


@router.delete(
    "/v1/admin/players/{user_id}",
    tags=["admin"],
    response_model=PlayerActionOut,
    responses=ERRORS,
    summary="Erase a player everywhere: every board, period, archive and event; the id takes no more events",
)
async def erase_player(user_id: UserPath, reason: ReasonQuery, svc: ServicesDep, who: AdminName):
    return _out(await svc.players.erase(user_id, reason, who))


@router.get(
    "/v1/admin/players/{user_id}",
    tags=["admin"],
    response_model=PlayerRecordOut,
    responses=ERRORS,
    summary="What is held about a player: every entry on every board, hidden or not, and whether the id is erased",
)
async def get_player_record(user_id: UserPath, svc: ServicesDep, _who: AdminName) -> PlayerRecordOut:
    erased, hidden_on, held = await svc.store.player_report(user_id)
    entries = []
    for entry in held:
        board_id, window, period = split_board_period(entry.board_period)
        board = await svc.boards.get(board_id)
        entries.append(
            HeldEntryOut(
                board=board_id,
                window=window,
                period=period,
                score=board.shown(entry.score),
                hidden=entry.hidden,
                archived_rank=entry.archived_rank,
                metadata=None if entry.metadata is None else json.loads(entry.metadata),
            )
        )
    return PlayerRecordOut(user_id=user_id, erased=erased, hidden_on=hidden_on, entries=entries)


@router.get("/v1/admin/audit", tags=["admin"], response_model=AuditOut, responses=ERRORS, summary="Admin actions")
async def get_audit(
    svc: ServicesDep,
    _who: AdminName,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, description="An id: entries older than it")] = None,
    user_id: Annotated[str | None, Query(max_length=64, description="The player (or an erased one's hash)")] = None,
    board: Annotated[str | None, Query(pattern=BOARD_ID_PATTERN)] = None,
) -> AuditOut:
    entries = await svc.store.audit_log(limit=limit, before=before, subject=user_id, board=board)
    return AuditOut(
        entries=[AuditEntryOut(**vars(e)) for e in entries],
        next_before=entries[-1].id if len(entries) == limit else None,
    )
