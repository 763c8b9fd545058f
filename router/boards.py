"""A board: its id, order, default operator and windows. Plain values, no I/O.

Scores are integers in [0, 2^53-1]. Below the API every score is a *stored* score,
for which higher is always better: a `desc` board stores the score itself, an `asc`
board (lower is better: race times, strokes) stores 2^53-1 - score. So PostgreSQL's
placement, the rebalancer's moves, Redis's sorted sets and the rank formula never
need to know a board's order; `shown` turns a stored score back at the edge.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from router.errors import InvalidInput
from router.periods import WINDOWS, board_period, live_periods, period_start
from router.shardmap import ShardMapError, read_config_file

MAX_SCORE = 2**53 - 1
ORDERS = ("desc", "asc")
OPERATORS = ("incr", "best", "set")
BOARD_ID = re.compile(r"^[a-z0-9_.-]{1,64}$")
LEGACY_BOARD = "global"
"""The board the original endpoints (`/v1/scores`, `/v1/leaderboard/top`, `?month=`) serve."""


def check_board_id(board_id: str, field: str = "board") -> str:
    if not BOARD_ID.match(board_id):
        raise InvalidInput(field, f"must be 1-64 characters of [a-z0-9_.-], got {board_id!r}")
    return board_id


@dataclass(frozen=True, slots=True)
class Board:
    id: str
    order: str = "desc"
    operator: str = "incr"
    windows: tuple[str, ...] = ("monthly",)
    closed: bool = False

    @classmethod
    def checked(cls, board_id: str, order: str, operator: str, windows: list[str] | tuple[str, ...]) -> Board:
        """A board from untrusted config: 422 naming the field that is wrong."""
        check_board_id(board_id, "id")
        if order not in ORDERS:
            raise InvalidInput("order", f"must be one of {', '.join(ORDERS)}, got {order!r}")
        if operator not in OPERATORS:
            raise InvalidInput("operator", f"must be one of {', '.join(OPERATORS)}, got {operator!r}")
        if not windows:
            raise InvalidInput("windows", "must name at least one of " + ", ".join(WINDOWS))
        for window in windows:
            if window not in WINDOWS:
                raise InvalidInput("windows", f"must be among {', '.join(WINDOWS)}, got {window!r}")
        if len(set(windows)) != len(windows):
            raise InvalidInput("windows", "must not repeat a window")
        return cls(board_id, order, operator, tuple(windows))

    @property
    def default_window(self) -> str:
        return self.windows[0]

    def stored(self, score: int) -> int:
        return MAX_SCORE - score if self.order == "asc" else score

    def shown(self, stored: int) -> int:
        """The score as players see it, from a stored one (the same map: it is its own inverse)."""
        return MAX_SCORE - stored if self.order == "asc" else stored

    def board_periods(self, moment: datetime) -> tuple[str, ...]:
        """The board period an event at `moment` updates in each window, in window order."""
        return tuple(board_period(self.id, window, period_start(window, moment)) for window in self.windows)

    def live_board_periods(self, now: datetime) -> list[str]:
        """Every board period of this board that accepts events now (served from Redis)."""
        return [board_period(self.id, window, start) for window in self.windows for start in live_periods(window, now)]

    def check_window(self, window: str | None, field: str = "window") -> str:
        if window is None:
            return self.default_window
        if window not in self.windows:
            raise InvalidInput(field, f"board {self.id} has the windows {', '.join(self.windows)}, not {window!r}")
        return window


LEGACY = Board(LEGACY_BOARD)


def boards_from_config(raw: Any) -> list[Board]:
    """The `boards:` section of the shard map file (optional): a list of
    `{id, order?, operator?, windows?}`, defaults as for `PUT /v1/admin/boards/{id}`.
    A wrong entry raises ShardMapError naming its key, e.g. `boards[2].order`."""
    entries = raw.get("boards") if isinstance(raw, Mapping) else None
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ShardMapError("boards", "must be a list of boards")
    boards, seen = [], set()
    for i, entry in enumerate(entries):
        key = f"boards[{i}]"
        if not isinstance(entry, Mapping):
            raise ShardMapError(key, "must be a mapping with id, order, operator, windows")
        unknown = set(entry) - {"id", "order", "operator", "windows"}
        if unknown:
            raise ShardMapError(f"{key}.{sorted(unknown)[0]}", "unknown key")
        windows = entry.get("windows", ["all"])
        if not isinstance(windows, list):
            raise ShardMapError(f"{key}.windows", "must be a list, e.g. [daily, all]")
        try:
            board = Board.checked(
                str(entry.get("id", "")), entry.get("order", "desc"), entry.get("operator", "incr"), windows
            )
        except InvalidInput as exc:
            raise ShardMapError(f"{key}.{exc.field}", exc.reason) from exc
        if board.id in seen:
            raise ShardMapError(f"{key}.id", f"board {board.id} is listed twice")
        seen.add(board.id)
        boards.append(board)
    return boards


def load_boards_file(path: str | Path) -> list[Board]:
    return boards_from_config(read_config_file(Path(path)))
