"""Every error answer of the API: one body shape, and the one mapping from domain
errors (router.errors) to status codes."""

from __future__ import annotations

import json

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from router.api.schemas import (
    ErrorOut,
)
from router.errors import (
    ActionOwedToShards,
    BoardClosed,
    BoardConflict,
    BoardNotFound,
    InvalidInput,
    LeaderboardError,
    MatchConflict,
    MonthNotServed,
    PeriodClosed,
    PlayerErased,
    PlayerHidden,
    PlayerNotFound,
    PlayerNotHidden,
    RateLimited,
    ScoreRefused,
    ShardUnavailable,
    StoreUnavailable,
)

REFUSED_PLAYER = {
    403: {
        "model": ErrorOut,
        "description": "The player is hidden on this board (player_hidden) or erased (player_erased)",
    }
}

ERRORS = {
    400: {"model": ErrorOut, "description": "The body could not be read"},
    401: {"model": ErrorOut, "description": "Missing or wrong token"},
    413: {"model": ErrorOut, "description": "Body larger than LB_MAX_BODY_BYTES"},
    429: {"model": ErrorOut, "description": "Rate limited; see Retry-After"},
    422: {"model": ErrorOut, "description": "Invalid input; `field` names what is wrong"},
    503: {"model": ErrorOut, "description": "A shard or PostgreSQL is unavailable"},
}


class Unauthorized(LeaderboardError):
    pass


def error_body(code: str, message: str, field: str | None = None) -> dict:
    """The one shape of every error answer (`ErrorOut`)."""
    return {"error": {"code": code, "message": message, "field": field}}


def error_bytes(code: str, message: str, field: str | None = None) -> bytes:
    """The same body, encoded, for the plain ASGI layers that answer without FastAPI."""
    return json.dumps(error_body(code, message, field)).encode()


def too_large_message(limit: int) -> str:
    return f"request bodies are limited to {limit} bytes"


def http_error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Starlette's own answers (unknown path, wrong method, unreadable body) in our error shape."""
    codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
    body = error_body(codes.get(status, "http_error"), detail)
    return JSONResponse(status_code=status, content=body, headers=headers)


def too_large_response(limit: int) -> JSONResponse:
    return _error(413, "payload_too_large", too_large_message(limit))


def _error(status: int, code: str, message: str, field: str | None = None, **headers: str) -> JSONResponse:
    return JSONResponse(status_code=status, content=error_body(code, message, field), headers=headers or None)


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
        case MonthNotServed(field="month"):
            return _error(404, "month_not_served", str(exc), "month")
        case MonthNotServed():
            return _error(404, "period_not_served", str(exc), exc.field)
        case PeriodClosed(what="month"):
            return _error(409, "month_closed", str(exc), "occurred_at")
        case PeriodClosed():
            return _error(409, "period_closed", str(exc), "occurred_at")
        case BoardNotFound():
            return _error(404, "board_not_found", str(exc), "board")
        case BoardClosed():
            return _error(409, "board_closed", str(exc), "board")
        case BoardConflict():
            return _error(409, "board_conflict", exc.reason, exc.field)
        case MatchConflict():
            return _error(409, "match_id_conflict", exc.detail, "match_id")
        case PlayerHidden():
            return _error(403, "player_hidden", str(exc), "user_id")
        case PlayerErased():
            return _error(403, "player_erased", str(exc), "user_id")
        case PlayerNotHidden():
            return _error(409, "hidden_on_every_board", exc.reason, "board")
        case ActionOwedToShards():
            return _error(
                503,
                "shard_unavailable",
                f"shard {exc.shard_id} is unavailable. The action is recorded and takes effect on that shard "
                "when it returns (the routers finish it); there is no need to repeat it.",
                **{"Retry-After": "1"},
            )
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
        content=jsonable_encoder(error_body("invalid_input", message, field)),
    )
