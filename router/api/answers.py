"""Answer bodies built without FastAPI's second validation of the response model."""

from __future__ import annotations

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


def entries_out(entries: list[Entry]) -> list[EntryOut]:
    return [EntryOut(rank=e.rank, user_id=e.user_id, score=e.score) for e in entries]
