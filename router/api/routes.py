"""The v1 API: every route, assembled from one module per resource.

Routes do validation, auth and status codes only; the logic lives in router.core,
and every domain error becomes an HTTP answer in router.api.errors.
"""

from __future__ import annotations

from fastapi import APIRouter

from router.api import admin, board_routes, boards, ops, players, scores

router = APIRouter()
for part in (ops, scores, boards, board_routes, admin, players):
    router.include_router(part.router)
