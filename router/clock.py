"""The router's clock: what decides an event's periods, which periods are live, when
one is archived. UTC, from the system; in dev, optionally moved by a file's offset so
tests can take boards through rollovers (`LB_CLOCK_OFFSET_FILE`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


def offset_clock(offset_file: Path) -> Clock:
    """The system clock plus the seconds the file holds (read at every call, so a test
    moves a running router's clock by rewriting it; missing or empty: no offset)."""

    def now() -> datetime:
        try:
            text = offset_file.read_text().strip()
        except FileNotFoundError:
            text = ""
        return datetime.now(UTC) + timedelta(seconds=float(text or 0))

    return now


def clock_for(offset_file: Path | None) -> Clock:
    return system_clock if offset_file is None else offset_clock(offset_file)
