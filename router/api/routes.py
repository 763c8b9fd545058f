"""HTTP routes of the v1 API: validation, auth and status codes only.

The logic lives in router.core.board_service; every domain error becomes an HTTP
answer in `error_response`, the one place that knows the mapping.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ValidationError

from router.api.schemas import (
    BATCH_MAX,
    MONTH_PATTERN,
    USER_ID_PATTERN,
    BatchIn,
    BatchItemOut,
    BatchOut,
    BoardOut,
    CheckOut,
    EntryOut,
    ErrorOut,
    MonthOut,
    MonthsOut,
    PlayerOut,
    RebalanceOut,
    ScoreIn,
    ScoreOut,
    ShardOut,
    ShardsOut,
)
from router.core.page_cache import TopQuery
from router.core.ranking import Entry
from router.errors import (
    InvalidInput,
    LeaderboardError,
    MatchConflict,
    MonthNotServed,
    PeriodClosed,
    PlayerNotFound,
    RateLimited,
    ScoreRefused,
    ShardUnavailable,
    StoreUnavailable,
)
from router.events import ScoreEvent
from router.metrics import TOP_PAGES, render
from router.periods import month_label
from router.services import Services

ERRORS = {
    400: {"model": ErrorOut, "description": "The body could not be read"},
    401: {"model": ErrorOut, "description": "Missing or wrong token"},
    413: {"model": ErrorOut, "description": "Body larger than LB_MAX_BODY_BYTES"},
    429: {"model": ErrorOut, "description": "Rate limited; see Retry-After"},
    422: {"model": ErrorOut, "description": "Invalid input; `field` names what is wrong"},
    503: {"model": ErrorOut, "description": "A shard or PostgreSQL is unavailable"},
}


# Dependencies are `async def`: FastAPI runs plain `def` dependencies in a thread
# pool, and that hop was a third of a write's CPU time in a profile.
async def services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(services)]
MonthQuery = Annotated[
    str | None, Query(pattern=MONTH_PATTERN, description="YYYY-MM (UTC); default: the current month")
]
UserPath = Annotated[str, Path(pattern=USER_ID_PATTERN, description="1-64 characters of [A-Za-z0-9_.:-]")]


class Unauthorized(LeaderboardError):
    pass


# Tokens are security schemes, so the API docs offer an "Authorize" button; reading a
# header this way is also cheaper than a validated Header() parameter on every request.
_GAME_TOKEN = APIKeyHeader(
    name="X-Game-Service-Token", auto_error=False, scheme_name="GameToken", description="Writes (and reads)"
)
_READ_TOKEN = APIKeyHeader(
    name="X-Read-Token", auto_error=False, scheme_name="ReadToken", description="Reads, when LB_READ_TOKENS is set"
)
_ADMIN_TOKEN = APIKeyHeader(name="X-Admin-Token", auto_error=False, scheme_name="AdminToken")


async def require_game_token(svc: ServicesDep, token: Annotated[str | None, Security(_GAME_TOKEN)]) -> str:
    if not svc.is_game_token(token):
        raise Unauthorized("a valid X-Game-Service-Token header is required")
    assert token is not None
    return token


GameToken = Annotated[str, Depends(require_game_token)]


async def require_reader(
    svc: ServicesDep,
    read_token: Annotated[str | None, Security(_READ_TOKEN)],
    game_token: Annotated[str | None, Security(_GAME_TOKEN)],
) -> None:
    if not svc.may_read(read_token, game_token):
        raise Unauthorized("a valid X-Read-Token header is required")


async def require_admin_token(svc: ServicesDep, token: Annotated[str | None, Security(_ADMIN_TOKEN)]) -> None:
    if not svc.is_admin_token(token):
        raise Unauthorized("a valid X-Admin-Token header is required")


def _error(status: int, code: str, message: str, field: str | None = None, **headers: str) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "field": field}}
    return JSONResponse(status_code=status, content=body, headers=headers or None)


def error_response(exc: Exception) -> JSONResponse:
    match exc:
        case InvalidInput():
            return _error(422, "invalid_input", exc.reason, exc.field)
        case ScoreRefused():
            return _error(422, "score_out_of_range", exc.detail, "score")
        case Unauthorized():
            return _error(401, "unauthorized", str(exc))
        case RateLimited():
            return _error(429, "rate_limited", str(exc), **{"Retry-After": str(exc.retry_after)})
        case PlayerNotFound():
            return _error(404, "player_not_found", str(exc), "user_id")
        case MonthNotServed():
            return _error(404, "month_not_served", str(exc), "month")
        case PeriodClosed():
            return _error(409, "month_closed", str(exc), "occurred_at")
        case MatchConflict():
            return _error(409, "match_id_conflict", exc.detail, "match_id")
        case ShardUnavailable():
            return _error(
                503,
                "shard_unavailable",
                f"shard {exc.shard_id} is unavailable. Any score already recorded will be applied "
                "when it returns; resending the same match_id is safe.",
                **{"Retry-After": "1"},
            )
        case StoreUnavailable(outcome_unknown=True):
            return _error(
                503,
                "store_unavailable",
                f"PostgreSQL is unavailable ({exc.cause or 'no answer'}); whether a write was recorded is "
                "unknown: resend the same match_id (it is never counted twice).",
                **{"Retry-After": "1"},
            )
        case StoreUnavailable():
            return _error(
                503,
                "store_unavailable",
                f"PostgreSQL is unavailable ({exc.cause or 'no answer'}); nothing was recorded. Retry later.",
                **{"Retry-After": "1"},
            )
    return _error(500, "internal_error", "unexpected error")


def validation_response(exc: RequestValidationError | ValidationError) -> JSONResponse:
    first = exc.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    field = ".".join(location) or None
    message = first.get("msg", "invalid")
    if first.get("type") == "missing" and not location:
        message = "a JSON body is required"
    return JSONResponse(
        status_code=422,
        content=jsonable_encoder({"error": {"code": "invalid_input", "message": message, "field": field}}),
    )


router = APIRouter()


@router.get("/healthz", tags=["ops"], summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    body, content_type = render()
    return Response(content=body, media_type=content_type)


@router.get(
    "/readyz",
    tags=["ops"],
    response_model=CheckOut,
    responses={503: {"model": CheckOut, "description": "Something this router needs is down"}},
    summary="Readiness: every shard and PostgreSQL answer",
)
async def readyz(svc: ServicesDep) -> JSONResponse:
    names = [f"shard:{sid}" for sid in svc.shard_map.ids] + ["postgres"]
    probes = [svc.shards.ping(sid) for sid in svc.shard_map.ids] + [svc.store.ping()]
    results = await asyncio.gather(*(asyncio.wait_for(p, timeout=3) for p in probes), return_exceptions=True)
    checks = {
        name: "ok" if not isinstance(res, BaseException) else f"down: {res or type(res).__name__}"
        for name, res in zip(names, results, strict=True)
    }
    for sid, repair in svc.healer.readiness().items():
        if checks.get(f"shard:{sid}") == "ok":
            checks[f"shard:{sid}"] = f"ok; {repair}"
    for sid, why in svc.shards.unready.items():
        checks[f"shard:{sid}"] = f"reads refused: {why}"
    ready = all(v.startswith("ok") for v in checks.values())
    return JSONResponse(
        status_code=200 if ready else 503,
        content={"status": "ready" if ready else "unavailable", "checks": checks},
    )


@router.post(
    "/v1/scores",
    tags=["scores"],
    response_model=ScoreOut,
    responses={**ERRORS, 409: {"model": ErrorOut, "description": "Month closed, or match_id reused"}},
    summary="Record one match result for one player",
)
async def post_score(body: ScoreIn, svc: ServicesDep, token: GameToken) -> Response:
    return Response(await score_body(svc, token, body), media_type="application/json")


async def score_body(svc: Services, token: str, body: ScoreIn) -> bytes:
    """The answer of `POST /v1/scores` for a valid body and token; also used by `router.asgi.shortcuts`."""
    outcome = await svc.service.record(body, token)
    row = outcome.row
    assert row.score is not None
    out = ScoreOut(
        user_id=body.user_id,
        score=row.score,
        rank=outcome.rank,
        previous_rank=outcome.previous_rank,
        month=month_label(row.month),
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
    if len(body.events) > BATCH_MAX:
        raise InvalidInput("events", f"at most {BATCH_MAX} events per batch, got {len(body.events)}")
    results: list[dict | None] = [None] * len(body.events)
    accepted: list[tuple[int, ScoreEvent]] = []
    now = svc.service.now()
    for i, raw in enumerate(body.events):
        try:
            accepted.append((i, svc.service.to_event(ScoreIn.model_validate(raw), now)))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first.get("loc", ())) or None
            results[i] = _batch_item(index=i, status="refused", field=field, reason=first.get("msg"))
        except (InvalidInput, PeriodClosed) as exc:
            field = exc.field if isinstance(exc, InvalidInput) else "occurred_at"
            results[i] = _batch_item(index=i, status="refused", field=field, reason=str(exc))
    verdict = await svc.limiter.check(token, [event.user_id for _, event in accepted])
    if verdict.token_retry_after:
        raise svc.limiter.token_refusal(verdict)
    if verdict.players_retry_after:
        limit = svc.settings.rate_limit_player_per_hour
        for i, event in accepted:
            if event.user_id in verdict.players_retry_after:
                results[i] = _batch_item(
                    index=i,
                    status="refused",
                    user_id=event.user_id,
                    field="user_id",
                    reason=f"rate limited: at most {limit} events per player per hour",
                )
        accepted = [(i, e) for i, e in accepted if e.user_id not in verdict.players_retry_after]
    outcomes = await svc.service.record_batch([event for _, event in accepted])
    for (i, event), outcome in zip(accepted, outcomes, strict=True):
        row = outcome.row
        common = {"index": i, "user_id": event.user_id, "month": month_label(row.month)}
        if row.status == "refused":
            results[i] = _batch_item(**common, status="refused", field="score", reason=row.detail)
        elif row.status == "closed":
            results[i] = _batch_item(**common, status="refused", field="occurred_at", reason=row.detail)
        elif row.status == "conflict":
            results[i] = _batch_item(**common, status="conflict", field="match_id", reason=row.detail)
        elif outcome.unavailable is not None:
            results[i] = _batch_item(
                **common,
                status="unavailable",
                score=row.score,
                reason=f"{outcome.unavailable}; recorded, applied when the shard returns; resending is safe",
            )
        else:
            results[i] = _batch_item(
                **common,
                status="duplicate" if row.status == "duplicate" else "applied",
                score=row.score,
                rank=outcome.rank,
                previous_rank=outcome.previous_rank,
            )
    final = [r for r in results if r is not None]
    statuses = Counter(r["status"] for r in final)
    answer = {
        "applied": statuses["applied"],
        "duplicates": statuses["duplicate"],
        "refused": statuses["refused"] + statuses["conflict"],
        "results": final,
    }
    body = json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, media_type="application/json")


_BATCH_ITEM_FIELDS = tuple(BatchItemOut.model_fields)


def _batch_item(**values: object) -> dict:
    """A `BatchItemOut` as the dict it serialises to, every field in order. The batch
    answer is built from these and sent as is: a model per event, constructed and then
    serialised, cost 4.5 us an event against 1.6 for dicts; FastAPI's own validation
    of the answer against `response_model` (kept for the OpenAPI schema), a third of
    a batch's CPU before it was skipped."""
    return {name: values.get(name) for name in _BATCH_ITEM_FIELDS}


def _json(model: BaseModel) -> Response:
    """The model as the response body. Returning the model itself would have FastAPI
    validate it again against `response_model` (kept on the routes for the OpenAPI
    schema) before serialising it: for the hot routes, a cost paid for nothing."""
    return Response(model.model_dump_json().encode(), media_type="application/json")


def _entries(entries: list[Entry]) -> list[EntryOut]:
    return [EntryOut(rank=e.rank, user_id=e.user_id, score=e.score) for e in entries]


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
    label, me = await svc.service.standing(user_id, month)
    out = PlayerOut(
        user_id=user_id,
        score=me.score,
        rank=me.rank,
        percentile=me.percentile,
        total_players=me.total_players,
        month=label,
    )
    return out.model_dump_json().encode()


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
    label, total, entries = await svc.service.around(user_id, month, radius)
    return _json(BoardOut(month=label, total_players=total, entries=_entries(entries)))


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
    label, _, archived = await svc.service.resolve_month(query.month)
    if archived:
        _, total, entries = await svc.service.top(label, query.offset, query.limit)
        return BoardOut(month=label, total_players=total, entries=_entries(entries)).model_dump_json().encode()
    key = (label, query.offset, query.limit)
    body = svc.top_pages.recent(key)
    if body is not None:
        TOP_PAGES.labels("stale_ok").inc()
        return body
    counts = await svc.board.counts(label)
    body = svc.top_pages.get(key, counts.fingerprint)
    if body is not None:
        TOP_PAGES.labels("reused").inc()
        return body
    page = await svc.board.top(label, query.offset, query.limit, counts)
    out = BoardOut(month=label, total_players=page.counts.total, entries=_entries(page.entries))
    body = out.model_dump_json().encode()
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
    months = await svc.service.months()
    return MonthsOut(months=[MonthOut(month=m, status=status, players=n) for m, status, n in months])


@router.get(
    "/v1/admin/shards",
    tags=["admin"],
    response_model=ShardsOut,
    dependencies=[Depends(require_admin_token)],
    responses=ERRORS,
    summary="The shard map with member counts and memory",
)
async def get_shards(svc: ServicesDep, month: MonthQuery = None) -> ShardsOut:
    label, _, archived = await svc.service.resolve_month(month)
    if archived:
        raise MonthNotServed(label)
    out = []
    for shard in svc.shard_map.shards:
        try:
            players = await svc.shards.size(shard.id, label)
            memory = await svc.shards.memory_used(shard.id)
            error = None
        except ShardUnavailable as exc:
            players, memory, error = None, None, str(exc)
        out.append(
            ShardOut(
                id=shard.id,
                address=shard.address,
                min_score=shard.range.start,
                max_score=shard.range.end,
                players=players,
                memory_bytes=memory,
                error=error,
            )
        )
    backlog, rebalance = None, None
    try:
        backlog = await svc.store.outbox_backlog()
        layout = await svc.store.layout()
        if layout is not None and layout.move is not None:
            mv = layout.move
            rebalance = RebalanceOut(source=mv["source"], dest=mv["dest"], min_score=mv["lo"], max_score=mv["hi"])
    except StoreUnavailable:
        pass
    return ShardsOut(epoch=svc.shard_map.epoch, month=label, shards=out, outbox_backlog=backlog, rebalance=rebalance)
