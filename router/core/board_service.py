"""The use cases behind the API: record a result, read ranks, of any board. No HTTP in here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from router.boards import LEGACY, Board
from router.core.board_registry import BoardRegistry
from router.core.ranking import Entry, Page, RankReader, Standing
from router.core.shard_writes import WriteOutcome
from router.core.write_pipeline import WritePipeline
from router.errors import (
    BoardClosed,
    InvalidInput,
    LeaderboardError,
    MatchConflict,
    MonthNotServed,
    PeriodClosed,
    PlayerErased,
    PlayerHidden,
    PlayerNotFound,
    ScoreRefused,
)
from router.events import ScoreEvent
from router.periods import (
    FUTURE_SKEW,
    board_period,
    describe,
    label_of,
    live_periods,
    parse_month,
    parse_period,
    period_label,
    period_start,
    window_of,
)
from router.store.postgres import Store


class ScoreReport(Protocol):
    """One reported result, as a validated request body carries it (the API's `ScoreIn`)."""

    user_id: str
    match_id: str
    mode: str | None  # None: the board's operator
    score: int
    occurred_at: datetime | None

    def metadata_text(self) -> str | None:
        """The display data as compact JSON, or None if the report carries none."""


@dataclass(frozen=True, slots=True)
class ReadTarget:
    """What a read reads: one board period, live (served from the shards) or archived."""

    board: Board
    window: str
    board_period: str
    archived_players: int | None  # None: live

    @property
    def label(self) -> str:
        return label_of(self.board_period)

    @property
    def archived(self) -> bool:
        return self.archived_players is not None


class BoardService:
    def __init__(
        self,
        boards: BoardRegistry,
        ranks: RankReader,
        writes: WritePipeline,
        store: Store,
        now: Callable[[], datetime],
    ) -> None:
        self.boards = boards
        self.ranks = ranks
        self.writes = writes
        self.store = store
        self.now = now
        # Archived board periods: a period stays archived, but its player count is read
        # anew each time, since an admin may remove a player from an archive.
        self._archived: set[str] = set()

    # -- writes -------------------------------------------------------------------

    def to_event(self, board: Board, body: ScoreReport, now: datetime | None = None) -> ScoreEvent:
        """`now`: pass one moment for every event of a batch (reading the clock per event showed in profiles)."""
        if board.closed:
            raise BoardClosed(board.id)
        now = now or self.now()
        mode = body.mode or board.operator
        if mode in ("best", "set") and body.score < 0:
            raise InvalidInput("score", f"must be >= 0 with mode={mode}")
        occurred_at = body.occurred_at
        metadata = body.metadata_text()
        if occurred_at is None:  # the common case: now, in the current periods by definition
            return ScoreEvent(
                board.id, body.user_id, body.match_id, mode, body.score, now, board.board_periods(now), metadata
            )
        if occurred_at > now + FUTURE_SKEW:
            raise InvalidInput("occurred_at", f"is in the future ({occurred_at.isoformat()})")
        for window in board.windows:
            start = period_start(window, occurred_at)
            if start not in live_periods(window, now):
                raise PeriodClosed(period_label(window, start), _period_word(board, window))
        return ScoreEvent(
            board.id,
            body.user_id,
            body.match_id,
            mode,
            body.score,
            occurred_at,
            board.board_periods(occurred_at),
            metadata,
        )

    async def record(self, board: Board, body: ScoreReport, token: str) -> list[WriteOutcome]:
        """The event's outcome in each window of the board, in window order. `token`:
        the game token that sent it, counted against the rate limits with its group."""
        outcomes = await self.writes.submit(self.to_event(board, body), token)
        for outcome in outcomes:
            raise_for_outcome(outcome, board)
        return outcomes

    async def record_batch(self, events: Sequence[ScoreEvent]) -> list[list[WriteOutcome]]:
        return await self.writes.submit_batch(events)

    # -- reads --------------------------------------------------------------------

    async def target(self, board: Board, window: str | None, period: str | None) -> ReadTarget:
        """The board period a read with these `?window=` and `?period=` reads."""
        window = board.check_window(window)
        now = self.now()
        live = live_periods(window, now)
        if period is None:
            return ReadTarget(board, window, board_period(board.id, window, live[0]), None)
        start = parse_period(window, period)
        return await self._target(board, window, start, live, "period")

    async def month_target(self, month: str | None) -> ReadTarget:
        """The original endpoints' `?month=`: board `global`, window `monthly`."""
        board = await self.boards.get(LEGACY.id)
        live = live_periods("monthly", self.now())
        if month is None:
            return ReadTarget(board, "monthly", board_period(board.id, "monthly", live[0]), None)
        return await self._target(board, "monthly", parse_month(month), live, "month")

    async def _target(self, board: Board, window: str, start, live, field: str) -> ReadTarget:
        key = board_period(board.id, window, start)
        if start > live[0]:
            raise InvalidInput(field, f"{period_label(window, start)} has not started yet")
        if start in live and key not in self._archived and not board.closed:
            return ReadTarget(board, window, key, None)
        players = await self.store.archived_players(key)
        if players is None:
            raise MonthNotServed(period_label(window, start), field)
        self._archived.add(key)
        return ReadTarget(board, window, key, players)

    async def standing(self, target: ReadTarget, user_id: str) -> Standing:
        if not target.archived:
            me = await self.ranks.standing(target.board_period, user_id)
            return replace(me, score=target.board.shown(me.score)) if target.board.order == "asc" else me
        found = await self.store.archived_standing(target.board_period, user_id)
        if found is None:
            raise PlayerNotFound(user_id, describe(target.board_period))
        rank, score, metadata = found
        return Standing(user_id, score, rank, target.archived_players or 0, "archive", None, metadata)

    async def standings(self, target: ReadTarget, user_ids: Sequence[str]) -> tuple[int, dict[str, Entry]]:
        """(players in the period, {user_id: entry} of the listed players who have a score there)."""
        if target.archived:
            found = await self.store.archived_standings(target.board_period, user_ids)
            return target.archived_players or 0, {
                u: Entry(rank, u, score, metadata) for u, (rank, score, metadata) in found.items()
            }
        found, total = await self.ranks.standings(target.board_period, user_ids)
        board = target.board
        return total, {u: Entry(me.rank, u, board.shown(me.score), me.metadata) for u, me in found.items()}

    async def top(self, target: ReadTarget, offset: int, limit: int) -> tuple[int, list[Entry]]:
        if not target.archived:
            page = await self.ranks.top(target.board_period, offset, limit)
            return page.counts.total, shown_entries(target.board, page)
        rows = await self.store.archived_range(target.board_period, offset, limit)
        return target.archived_players or 0, [Entry(*row) for row in rows]

    async def around(self, target: ReadTarget, user_id: str, radius: int) -> tuple[int, list[Entry]]:
        if not target.archived:
            page = await self.ranks.around(target.board_period, user_id, radius)
            return page.counts.total, shown_entries(target.board, page)
        me = await self.standing(target, user_id)
        offset = max(0, me.rank - 1 - radius)
        rows = await self.store.archived_range(target.board_period, offset, me.rank + radius - offset)
        return me.total_players, [Entry(*row) for row in rows]

    async def periods(self, board: Board) -> list[tuple[str, str, str, int]]:
        """(window, period, "live" | "archived", players) of a board, live first."""
        out = []
        live_keys = set()
        if not board.closed:
            for key in board.live_board_periods(self.now()):
                live_keys.add(key)
                sizes = await self.ranks.shards.sizes(key)
                _, window, label = key.split(":")
                out.append((window, label, "live", sum(sizes.values())))
        for key, players, _ in await self.store.archived_periods(board.id):
            if key not in live_keys:
                _, window, label = key.split(":")
                out.append((window, label, "archived", players))
        return out


def _period_word(board: Board, window: str) -> str:
    """How a closed period is named: "month" for the original board (its answers are
    unchanged), else e.g. "daily period"."""
    return "month" if board.id == LEGACY.id and window == "monthly" else f"{window} period"


def shown_entries(board: Board, page: Page) -> list[Entry]:
    if board.order != "asc":
        return page.entries
    return [replace(e, score=board.shown(e.score)) for e in page.entries]


def outcome_error(outcome: WriteOutcome, board: Board) -> LeaderboardError | None:
    """The error a committed-but-not-successful outcome stands for, or None if it succeeded:
    the one classification, which a single write raises and a batch reports per event."""
    row = outcome.row
    if row.status == "conflict":
        return MatchConflict(outcome.event.match_id, row.detail or "match_id reused with different content")
    if row.status == "refused":
        return ScoreRefused(row.detail or "score refused")
    if row.status == "hidden":
        return PlayerHidden(outcome.event.user_id, board.id)
    if row.status == "erased":
        return PlayerErased()
    if row.status == "closed":
        if row.detail and row.detail.startswith("board "):
            return BoardClosed(board.id)
        return PeriodClosed(label_of(row.board_period), _period_word(board, window_of(row.board_period)))
    return outcome.unavailable


def raise_for_outcome(outcome: WriteOutcome, board: Board) -> None:
    error = outcome_error(outcome, board)
    if error is not None:
        raise error
