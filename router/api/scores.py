"""Routes that record results and read one player's standing."""

from __future__ import annotations

import json
from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import ValidationError

from router.api.answers import entries_out, metadata_of, with_metadata
from router.api.deps import GameToken, MonthQuery, ServicesDep, UserPath, require_reader
from router.api.errors import ERRORS, REFUSED_PLAYER
from router.api.schemas import (
    BATCH_MAX,
    BatchIn,
    BatchItemOut,
    BatchOut,
    BoardOut,
    ErrorOut,
    PlayerOut,
    ScoreIn,
    ScoreOut,
)
from router.boards import LEGACY_BOARD, Board, check_board_id
from router.core.board_service import outcome_error
from router.core.shard_writes import WriteOutcome
from router.errors import (
    BoardClosed,
    BoardNotFound,
    InvalidInput,
    MatchConflict,
    PeriodClosed,
    PlayerErased,
    PlayerHidden,
    ScoreRefused,
    ShardUnavailable,
)
from router.events import ScoreEvent
from router.periods import label_of
from router.services import Services

router = APIRouter()


@router.post(
    "/v1/scores",
    tags=["scores"],
    response_model=ScoreOut,
    responses={
        **ERRORS,
        **REFUSED_PLAYER,
        409: {"model": ErrorOut, "description": "Month closed, or match_id reused"},
    },
    summary="Record one match result for one player",
)
async def post_score(body: ScoreIn, svc: ServicesDep, token: GameToken) -> Response:
    return Response(await score_body(svc, token, body), media_type="application/json")


async def score_body(svc: Services, token: str, body: ScoreIn) -> bytes:
    """The answer of `POST /v1/scores` for a valid body and token; also used by `router.asgi.shortcuts`."""
    (outcome,) = await svc.service.record(await svc.boards.get(LEGACY_BOARD), body, token)
    row = outcome.row
    out = ScoreOut(
        user_id=body.user_id,
        score=row.score,
        rank=outcome.rank,
        previous_rank=outcome.previous_rank,
        month=label_of(row.board_period),
        duplicate=row.status == "duplicate",
    )
    return out.model_dump_json().encode()


@router.post(
    "/v1/scores/batch",
    tags=["scores"],
    response_model=BatchOut,
    responses=ERRORS,
    summary=f"Record up to {BATCH_MAX} results; one result per event, a bad event does not sink the others",
)
async def post_batch(body: BatchIn, svc: ServicesDep, token: GameToken) -> Response:
    return Response(await batch_body(svc, token, body.events, None), media_type="application/json")


async def batch_body(svc: Services, token: str, raw_events: list[dict], path_board: str | None) -> bytes:
    """A batch's answer. Each event may name its `board` (default `global`, or the
    board in the path); an event on a board with several windows answers for each."""
    if len(raw_events) > BATCH_MAX:
        raise InvalidInput("events", f"at most {BATCH_MAX} events per batch, got {len(raw_events)}")
    results: list[dict | None] = [None] * len(raw_events)
    accepted: list[tuple[int, ScoreEvent, Board, bool]] = []
    now = svc.service.now()
    for i, raw in enumerate(raw_events):
        named = "board" in raw
        try:
            raw = dict(raw)
            board_id = raw.pop("board", path_board or LEGACY_BOARD)
            if path_board is not None and board_id != path_board:
                raise InvalidInput("board", f"this batch is for board {path_board}, not {board_id!r}")
            if not isinstance(board_id, str):
                raise InvalidInput("board", "must be a board id")
            board = await svc.boards.get(check_board_id(board_id))
            accepted.append((i, svc.service.to_event(board, ScoreIn.model_validate(raw), now), board, named))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first.get("loc", ())) or None
            results[i] = _batch_item(index=i, status="refused", field=field, reason=first.get("msg"))
        except (InvalidInput, PeriodClosed, BoardNotFound, BoardClosed) as exc:
            field = exc.field if isinstance(exc, InvalidInput) else "occurred_at"
            if isinstance(exc, BoardNotFound | BoardClosed):
                field = "board"
            results[i] = _batch_item(index=i, status="refused", field=field, reason=str(exc))
    verdict = await svc.limiter.check(token, [event.user_id for _, event, _, _ in accepted])
    if verdict.token_retry_after:
        raise svc.limiter.token_refusal(verdict)
    if verdict.players_retry_after:
        limit = svc.settings.rate_limit_player_per_hour
        for i, event, _, _ in accepted:
            if event.user_id in verdict.players_retry_after:
                results[i] = _batch_item(
                    index=i,
                    status="refused",
                    user_id=event.user_id,
                    field="user_id",
                    reason=f"rate limited: at most {limit} events per player per hour",
                )
        accepted = [a for a in accepted if a[1].user_id not in verdict.players_retry_after]
    outcomes = await svc.service.record_batch([event for _, event, _, _ in accepted])
    for (i, event, board, named), windows in zip(accepted, outcomes, strict=True):
        results[i] = _batch_result(i, event, board, windows, named or path_board is not None)
    final = [r for r in results if r is not None]
    statuses = Counter(r["status"] for r in final)
    answer = {
        "applied": statuses["applied"],
        "duplicates": statuses["duplicate"],
        "refused": statuses["refused"] + statuses["conflict"],
        "results": final,
    }
    return json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode()


def _batch_result(i: int, event: ScoreEvent, board: Board, windows: list[WriteOutcome], per_window: bool) -> dict:
    """One event's batch answer: about the board's first window (the original shape), and
    with `per_window` also its board and every window's answer."""
    outcome = windows[0]
    row = outcome.row
    score = None if row.score is None else board.shown(row.score)
    common = {"index": i, "user_id": event.user_id, "month": label_of(row.board_period)}
    if per_window:
        common["board"] = board.id
    item: dict
    match outcome_error(outcome, board):
        case ScoreRefused():
            item = _batch_item(**common, status="refused", field="score", reason=row.detail)
        case PeriodClosed() | BoardClosed():
            item = _batch_item(**common, status="refused", field="occurred_at", reason=row.detail)
        case MatchConflict():
            item = _batch_item(**common, status="conflict", field="match_id", reason=row.detail)
        case PlayerHidden() | PlayerErased():
            item = _batch_item(**common, status="refused", field="user_id", reason=row.detail)
        case ShardUnavailable() as unavailable:
            item = _batch_item(
                **common,
                status="unavailable",
                score=score,
                reason=f"{unavailable}; recorded, applied when the shard returns; resending is safe",
            )
        case _:
            item = _batch_item(
                **common,
                status="duplicate" if row.status == "duplicate" else "applied",
                score=score,
                rank=outcome.rank,
                previous_rank=outcome.previous_rank,
            )
    if per_window:
        item["windows"] = windows_out(board, windows)
    return item


def windows_out(board: Board, windows: list[WriteOutcome]) -> dict[str, dict]:
    out = {}
    for window, outcome in zip(board.windows, windows, strict=True):
        row = outcome.row
        out[window] = {
            "period": label_of(row.board_period),
            "score": None if row.score is None else board.shown(row.score),
            "rank": outcome.rank,
            "previous_rank": outcome.previous_rank,
        }
    return out


_BATCH_ITEM_FIELDS = tuple(BatchItemOut.model_fields)


def _batch_item(**values: object) -> dict:
    """A `BatchItemOut` as the dict it serialises to, every field in order. The batch
    answer is built from these and sent as is: a model per event, constructed and then
    serialised, cost 4.5 us an event against 1.6 for dicts; FastAPI's own validation
    of the answer against `response_model` (kept for the OpenAPI schema), a third of
    a batch's CPU before it was skipped."""
    return {name: values.get(name) for name in _BATCH_ITEM_FIELDS if name not in _PER_BOARD or name in values}


_PER_BOARD = ("board", "windows")  # only on events that named a board: the original answers keep their shape


@router.get(
    "/v1/scores/{user_id}",
    tags=["reads"],
    dependencies=[Depends(require_reader)],
    response_model=PlayerOut,
    responses={**ERRORS, 404: {"model": ErrorOut, "description": "No score this month"}},
    summary="A player's score, rank and percentile",
)
async def get_player(user_id: UserPath, svc: ServicesDep, month: MonthQuery = None) -> Response:
    return Response(await player_body(svc, user_id, month), media_type="application/json")


async def player_body(svc: Services, user_id: str, month: str | None) -> bytes:
    """The answer of `GET /v1/scores/{user_id}`; also used by `router.asgi.shortcuts`."""
    target = await svc.service.month_target(month)
    label, me = target.label, await svc.service.standing(target, user_id)
    out = PlayerOut(
        user_id=user_id,
        score=me.score,
        rank=me.rank,
        percentile=me.percentile,
        total_players=me.total_players,
        month=label,
        **metadata_of(me.metadata),
    )
    return with_metadata(out)


@router.get(
    "/v1/scores/{user_id}/around",
    tags=["reads"],
    dependencies=[Depends(require_reader)],
    response_model=BoardOut,
    responses={**ERRORS, 404: {"model": ErrorOut, "description": "No score this month"}},
    summary="The player and up to `radius` players on each side",
)
async def get_around(
    user_id: UserPath,
    svc: ServicesDep,
    radius: Annotated[int, Query(ge=0, le=50)] = 4,
    month: MonthQuery = None,
) -> Response:
    target = await svc.service.month_target(month)
    total, entries = await svc.service.around(target, user_id, radius)
    out = BoardOut(month=target.label, total_players=total, entries=entries_out(entries))
    return Response(with_metadata(out), media_type="application/json")
