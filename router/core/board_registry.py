"""Each router's copy of the boards, followed by version like the shard layout.

A write or read looks its board up in a dict, so it costs the same with one board
as with thousands. The copy is refreshed when the registry's version in PostgreSQL
moves (router.background.layout_watcher polls it) and when a request names a board
this copy does not know: the request waits for a reload that began after it asked,
so a board created through another router is usable at once. Requests that miss at
the same time share one reload (a flood of unknown boards costs one query at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime

from router.boards import Board
from router.errors import BoardNotFound, LeaderboardError
from router.store.postgres import Store


class BoardRegistry:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._reload: asyncio.Future[None] | None = None
        self._reload_started = 0.0
        self._boards: dict[str, Board] = {}
        self._version: datetime | None = None
        # Changes this router made itself, with when: a refresh that read PostgreSQL
        # before such a change committed must not undo it here.
        self._learned: dict[str, tuple[float, Board]] = {}

    @property
    def boards(self) -> dict[str, Board]:
        return self._boards

    def live_board_periods(self, now: datetime) -> list[str]:
        """Every board period that takes events now, of every open board."""
        return [key for board in self._boards.values() if not board.closed for key in board.live_board_periods(now)]

    def learn(self, board: Board) -> None:
        """A change this router made itself (committed): known here at once."""
        self._learned[board.id] = (time.monotonic(), board)
        self._boards = {**self._boards, board.id: board}

    async def refresh(self) -> None:
        started = time.monotonic()
        version, boards = await self.store.boards()
        for board_id, (learned_at, board) in list(self._learned.items()):
            if learned_at >= started:
                boards[board_id] = board  # committed after our read began: ours is newer
            else:
                del self._learned[board_id]  # the read saw it
        self._version, self._boards = version, boards

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
        with contextlib.suppress(LeaderboardError):  # PostgreSQL away: what we know is all we go by
            await self._reload_since(time.monotonic())
        board = self._boards.get(board_id)
        if board is not None:
            return board
        raise BoardNotFound(board_id)

    async def _reload_since(self, asked_at: float) -> None:
        """Wait for a reload that began at or after `asked_at`, joining one that did."""
        while True:
            running = self._reload
            if running is not None and not running.done():
                await asyncio.shield(running)
                if self._reload_started >= asked_at:
                    return
                continue
            self._reload_started = time.monotonic()
            self._reload = asyncio.ensure_future(self.refresh())
            await asyncio.shield(self._reload)
            return
