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
from router.shardmap import ShardMap, ShardMapError, read_config_file

MAX_SCORE = 2**53 - 1
ORDERS = ("desc", "asc")
OPERATORS = ("incr", "best", "set")
BOARD_ID = re.compile(r"^[a-z0-9_.-]{1,64}$")
Range = tuple[str, int, int | None]
"""(shard, min_score, max_score): a shard's part of a board, in scores as the board shows
them, half-open, max_score None = unbounded."""
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
    split: tuple[tuple[str, int], ...] | None = None
    """The shards the board is on, in the layout's order, each with its lower bound in
    stored scores; None: the board follows the layout's own split (the shard map file's
    ranges), as the original board does."""

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

    def split_of(self, ranges: tuple[Range, ...], shard_order: tuple[str, ...], field: str = "ranges"):
        """The stored split of `ranges` (see `parse_ranges`) over the layout's shards
        `shard_order`; InvalidInput when a shard is unknown or out of the layout's order."""
        for shard, _, _ in ranges:
            if shard not in shard_order:
                raise InvalidInput(field, f"shard {shard!r} is not in the layout ({', '.join(shard_order)})")
        if self.order == "desc":
            stored = [(shard, start) for shard, start, _ in ranges]
        else:
            # Shown [a, b) is stored (M - b, M - a]: the shard of the lowest times is on top.
            stored = [(shard, 0 if end is None else MAX_SCORE - end + 1) for shard, _, end in ranges]
        stored.sort(key=lambda item: item[1])
        positions = [shard_order.index(shard) for shard, _ in stored]
        if positions != sorted(positions):
            better = "higher" if self.order == "desc" else "lower"
            raise InvalidInput(
                field,
                f"on a{'n' if self.order == 'asc' else ''} {self.order} board {better} scores must be on shards later"
                f" in the layout's order ({', '.join(shard_order)}), so that ranks add up across shards",
            )
        return tuple(stored)

    def ranges(self, placement: ShardMap) -> list[Range]:
        """The board's ranges as it shows scores, lowest first, from its placement over the
        layout (`ShardMap.over_split`)."""
        out: list[Range] = []
        for shard_id, start in placement.split():
            end = placement.by_id(shard_id).range.end
            hi = None if end is None or end > MAX_SCORE else end
            if self.order == "desc":
                out.append((shard_id, start, hi))
            else:
                out.append(
                    (shard_id, 0 if hi is None else MAX_SCORE - hi + 1, None if start == 0 else MAX_SCORE - start + 1)
                )
        return sorted(out, key=lambda item: item[1])

    def resplit_by(self, move_board: str | None) -> bool:
        """Whether a move naming board `move_board` re-splits this board: a move names its
        board, or (None) re-splits every board that follows the layout's own split. The
        same rule as lb_apply_events's and lb_move_step's."""
        return self.split is None if move_board is None else move_board == self.id

    def check_window(self, window: str | None, field: str = "window") -> str:
        if window is None:
            return self.default_window
        if window not in self.windows:
            raise InvalidInput(field, f"board {self.id} has the windows {', '.join(self.windows)}, not {window!r}")
        return window


LEGACY = Board(LEGACY_BOARD)


def parse_ranges(raw: Any, field: str = "ranges") -> tuple[Range, ...]:
    """A board's ranges as an operator writes them: `[{shard, min_score, max_score}]`,
    in scores as the board shows them, covering [0, inf) without a gap or an overlap
    (the last one's max_score null); lowest first. InvalidInput names the entry."""
    if not isinstance(raw, list) or not raw:
        raise InvalidInput(field, "must be a non-empty list of {shard, min_score, max_score}")
    entries = []
    for i, entry in enumerate(raw):
        key = f"{field}[{i}]"
        if not isinstance(entry, Mapping):
            raise InvalidInput(key, "must be a mapping with shard, min_score, max_score")
        unknown = set(entry) - {"shard", "min_score", "max_score"}
        if unknown:
            raise InvalidInput(f"{key}.{sorted(unknown)[0]}", "unknown key (expected shard, min_score, max_score)")
        shard = entry.get("shard")
        if not isinstance(shard, str) or not shard.isidentifier():
            raise InvalidInput(f"{key}.shard", f"must name a shard of the layout, got {shard!r}")
        bounds = []
        for name in ("min_score", "max_score"):
            value = entry.get(name)
            if value is None and name == "max_score":
                bounds.append(None)
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SCORE:
                raise InvalidInput(f"{key}.{name}", f"must be an integer within [0, {MAX_SCORE}], got {value!r}")
            bounds.append(value)
        start, end = bounds
        if end is not None and end <= start:
            raise InvalidInput(f"{key}.max_score", f"must be greater than min_score {start}, got {end}")
        entries.append((i, shard, start, end))
    entries.sort(key=lambda e: e[2])
    seen: dict[str, int] = {}
    for k, (i, shard, start, end) in enumerate(entries):
        key = f"{field}[{i}]"
        if shard in seen:
            raise InvalidInput(f"{key}.shard", f"shard {shard} has two ranges (also {field}[{seen[shard]}])")
        seen[shard] = i
        expected = 0 if k == 0 else entries[k - 1][3]
        if start != expected:
            what = "the lowest range must start at 0" if k == 0 else f"must be {expected}, where the range below ends"
            raise InvalidInput(f"{key}.min_score", f"{what}, got {start}")
        if end is None and k + 1 < len(entries):
            raise InvalidInput(f"{key}.max_score", "only the highest range may be unbounded (null)")
    if entries[-1][3] is not None:
        raise InvalidInput(f"{field}[{entries[-1][0]}].max_score", "the highest range must be unbounded (null)")
    return tuple((shard, start, end) for _, shard, start, end in entries)


@dataclass(frozen=True, slots=True)
class BoardSpec:
    """A board as an operator asks for it (the shard map file's `boards:` section, or
    `PUT /v1/admin/boards/{id}`): its config, and its ranges if it names them."""

    board: Board
    ranges: tuple[Range, ...] | None = None


def boards_from_config(raw: Any) -> list[BoardSpec]:
    """The `boards:` section of the shard map file (optional): a list of
    `{id, order?, operator?, windows?, ranges?}`, defaults as for `PUT /v1/admin/boards/{id}`.
    A wrong entry raises ShardMapError naming its key, e.g. `boards[2].order`."""
    entries = raw.get("boards") if isinstance(raw, Mapping) else None
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ShardMapError("boards", "must be a list of boards")
    specs: list[BoardSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        key = f"boards[{i}]"
        if not isinstance(entry, Mapping):
            raise ShardMapError(key, "must be a mapping with id, order, operator, windows, ranges")
        unknown = set(entry) - {"id", "order", "operator", "windows", "ranges"}
        if unknown:
            raise ShardMapError(f"{key}.{sorted(unknown)[0]}", "unknown key")
        windows = entry.get("windows", ["all"])
        if not isinstance(windows, list):
            raise ShardMapError(f"{key}.windows", "must be a list, e.g. [daily, all]")
        try:
            board = Board.checked(
                str(entry.get("id", "")), entry.get("order", "desc"), entry.get("operator", "incr"), windows
            )
            ranges = parse_ranges(entry["ranges"]) if "ranges" in entry else None
        except InvalidInput as exc:
            raise ShardMapError(f"{key}.{exc.field}", exc.reason) from exc
        if board.id in seen:
            raise ShardMapError(f"{key}.id", f"board {board.id} is listed twice")
        seen.add(board.id)
        specs.append(BoardSpec(board, ranges))
    return specs


def load_boards_file(path: str | Path) -> list[BoardSpec]:
    return boards_from_config(read_config_file(Path(path)))
