"""Each router's copy of the boards, followed by version like the shard layout.

A write or read looks its board up in a dict, so it costs the same with one board
as with thousands. The copy is refreshed when the registry's version in PostgreSQL
moves (router.background.layout_watcher polls it) and, at most every
`miss_refresh_s`, when a request names a board this copy does not know, so a
board created through another router is usable at once.
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime

from router.boards import Board
from router.errors import BoardNotFound, LeaderboardError
from router.store.postgres import Store


class BoardRegistry:
    def __init__(self, store: Store, *, miss_refresh_s: float = 0.05) -> None:
        self.store = store
        self.miss_refresh_s = miss_refresh_s
        self._boards: dict[str, Board] = {}
        self._version: datetime | None = None
        self._refreshed_at = 0.0

    @property
    def boards(self) -> dict[str, Board]:
        return self._boards

    def live_board_periods(self, now: datetime) -> list[str]:
        """Every board period that takes events now, of every open board."""
        return [key for board in self._boards.values() if not board.closed for key in board.live_board_periods(now)]

    def learn(self, board: Board) -> None:
        """A change this router made itself: known here at once."""
        self._boards = {**self._boards, board.id: board}

    async def refresh(self) -> None:
        self._refreshed_at = time.monotonic()
        self._version, self._boards = await self.store.boards()

    async def refresh_if_changed(self) -> bool:
        if await self.store.boards_version() == self._version and self._boards:
            return False
        await self.refresh()
        return True

    async def get(self, board_id: str) -> Board:
        """The board (closed ones too); BoardNotFound if PostgreSQL does not know it either."""
        board = self._boards.get(board_id)
        if board is not None:
            return board
        if time.monotonic() - self._refreshed_at >= self.miss_refresh_s:
            with contextlib.suppress(LeaderboardError):  # PostgreSQL away: what we know is all we go by
                await self.refresh()
            board = self._boards.get(board_id)
            if board is not None:
                return board
        raise BoardNotFound(board_id)
