"""Access lines, written in blocks rather than one system call each.

At thousands of writes a second a line per request through `logging` (a record,
a formatter, a locked handler, a flushed write to a file both workers append to)
was a sizeable part of a write's CPU. Lines here are built directly, in the same
shape as every other log line, and written together once `flush_interval_s` has
passed since the first of them, when the block reaches `max_bytes`, and when the
router stops (as nginx's `access_log ... buffer= flush=`), in writes of whole lines
of at most PIPE_BUF bytes each.

What that trades: a line shows up to `flush_interval_s` late, and a process that
is killed outright loses at most that much of its access log. Scores are never in
it; they are in PostgreSQL before any answer goes out. With an interval of 0 every
line is written at once.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import math
import os
import select
import time
from collections.abc import Iterator
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]


class AccessLog:
    def __init__(self, fd: int, *, json_lines: bool, flush_interval_s: float, max_bytes: int = 64 * 1024) -> None:
        self.fd = fd
        self.json_lines = json_lines
        self.flush_interval_s = flush_interval_s
        self.max_bytes = max_bytes
        self._lines: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._stamped_second = -1
        self._stamp = ""
        # A worker stopped by its lifespan flushes there; this covers an exit that skips it.
        atexit.register(self.flush)

    def record(self, fields: dict[str, object]) -> None:
        line = self._format(fields)
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self.max_bytes or self.flush_interval_s <= 0:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self.flush_interval_s, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        self._size = 0
        for chunk in whole_line_chunks(lines, select.PIPE_BUF):
            view = memoryview(chunk)
            while view:
                try:
                    written = os.write(self.fd, view)
                except OSError:
                    return  # nowhere to log to; the request itself is unaffected
                view = view[written:]

    def _format(self, fields: dict[str, object]) -> bytes:
        if self.json_lines:
            now = time.time()
            second = int(now)
            if second != self._stamped_second:
                self._stamped_second = second
                self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            head = f'{{"ts": "{self._stamp}.{int(now * 1000) % 1000:03d}Z", {_HEAD}'
            return (head + "".join(f", {_json(key)}: {_json(value)}" for key, value in fields.items()) + "}\n").encode()
        details = " ".join(f"{key}={value}" for key, value in fields.items())
        return f"INFO router.access request {details}\n".encode()


_HEAD = '"level": "info", "logger": "router.access", "msg": "request"'


def _json(value: object) -> str:
    """`value` as `json.dumps(value, default=str)` writes it, for the scalars access lines
    carry, without building and walking an object per line: json.dumps of a line's
    dict was 15 us of every write's CPU, most of an access line's cost."""
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    if type(value) is int or type(value) is float and math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    return encode_basestring_ascii(str(value))


def whole_line_chunks(lines: list[bytes], limit: int) -> Iterator[bytes]:
    """The lines joined into chunks of at most `limit` bytes, never splitting a line
    (a longer line goes alone). Every worker writes to the same stderr: when that is
    a pipe (a container's log driver, a supervisor), a write of up to PIPE_BUF bytes
    is never interleaved with another process's, so no line is torn."""
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        if chunk and size + len(line) > limit:
            yield b"".join(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += len(line)
    if chunk:
        yield b"".join(chunk)
