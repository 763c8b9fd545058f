"""Answer bodies built without FastAPI's second validation of the response model."""

from __future__ import annotations

import json

from fastapi.responses import Response
from pydantic import BaseModel

from router.api.schemas import (
    EntryOut,
)
from router.core.ranking import Entry


def json_answer(model: BaseModel) -> Response:
    """The model as the response body. Returning the model itself would have FastAPI
    validate it again against `response_model` (kept on the routes for the OpenAPI
    schema) before serialising it: for the hot routes, a cost paid for nothing."""
    return Response(model.model_dump_json().encode(), media_type="application/json")


def with_metadata(model: BaseModel) -> bytes:
    """The body of an answer about players: `metadata` is left out where a player has
    none (it is set only where there is some), so answers without display data stay
    as they always were."""
    return model.model_dump_json(exclude_unset=True).encode()


def metadata_of(raw: str | None) -> dict:
    """The keyword for an answer model: the player's display data, if any."""
    return {} if raw is None else {"metadata": json.loads(raw)}


def entries_out(entries: list[Entry]) -> list[EntryOut]:
    return [EntryOut(rank=e.rank, user_id=e.user_id, score=e.score, **metadata_of(e.metadata)) for e in entries]
