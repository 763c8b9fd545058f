"""The access-log writer on a real pipe: lines wait for the interval, the size cap or a flush."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os

import pytest

from router.asgi.access_log import AccessLog, whole_line_chunks

FIELDS = {"request_id": "r1", "method": "POST", "path": "/v1/scores", "route": "/v1/scores", "status": 200, "ms": 1.5}


@pytest.fixture
def pipe():
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, fcntl.F_SETFL, os.O_NONBLOCK)
    yield read_end, write_end
    os.close(read_end)
    os.close(write_end)


def lines_in(read_end: int) -> list[str]:
    try:
        return os.read(read_end, 1 << 20).decode().splitlines()
    except BlockingIOError:
        return []


def test_lines_wait_for_the_interval_then_go_out_together(pipe):
    read_end, write_end = pipe

    async def scenario() -> tuple[list[str], list[str]]:
        writer = AccessLog(write_end, json_lines=True, flush_interval_s=0.2)
        for n in range(3):
            writer.record({**FIELDS, "request_id": f"r{n}"})
        early = lines_in(read_end)
        await asyncio.sleep(0.5)
        return early, lines_in(read_end)

    early, later = asyncio.run(scenario())
    assert early == []
    entries = [json.loads(line) for line in later]
    assert [entry["request_id"] for entry in entries] == ["r0", "r1", "r2"]
    assert all(entry["msg"] == "request" and entry["logger"] == "router.access" for entry in entries)
    assert all(entry["ts"].endswith("Z") and entry["status"] == 200 for entry in entries)


def test_a_full_block_and_an_explicit_flush_write_at_once(pipe):
    read_end, write_end = pipe

    async def scenario() -> tuple[int, list[str]]:
        writer = AccessLog(write_end, json_lines=True, flush_interval_s=60, max_bytes=1000)
        for n in range(22):  # ~190 bytes a line: the cap is passed every five or six lines
            writer.record({**FIELDS, "request_id": f"r{n}"})
        written_by_cap = len(lines_in(read_end))
        writer.flush()
        return written_by_cap, lines_in(read_end)

    written_by_cap, rest = asyncio.run(scenario())
    assert 15 <= written_by_cap < 22
    assert written_by_cap + len(rest) == 22


def test_interval_zero_writes_each_line_and_plain_lines_carry_the_fields(pipe):
    read_end, write_end = pipe
    writer = AccessLog(write_end, json_lines=False, flush_interval_s=0)
    writer.record(FIELDS)
    (line,) = lines_in(read_end)
    assert line.startswith("INFO router.access request ")
    assert "status=200" in line and "path=/v1/scores" in line and "request_id=r1" in line


def test_blocks_go_out_in_whole_lines_no_longer_than_a_pipe_writes_atomically():
    lines = [f"line {n:04d} ".encode() + b"x" * (n % 300) + b"\n" for n in range(400)]
    lines.append(b"y" * 5000 + b"\n")  # longer than the limit: alone, whole
    chunks = list(whole_line_chunks(lines, 4096))
    assert b"".join(chunks) == b"".join(lines)
    assert all(len(chunk) <= 4096 or chunk.count(b"\n") == 1 for chunk in chunks)
    assert all(chunk.endswith(b"\n") for chunk in chunks)
    assert len(chunks) < len(lines) / 10  # still blocks, not a write per line


def test_json_lines_are_what_json_dumps_writes_for_any_field_value(pipe):
    # Lines are built without json.dumps of a dict; they must still be the same JSON,
    # byte for byte, whatever a field holds (a path with quotes or non-ASCII, a float
    # that is not finite, a value of a type JSON has no name for).
    read_end, write_end = pipe
    writer = AccessLog(write_end, json_lines=True, flush_interval_s=0)
    odd = {
        "path": '/v1/scores/"quoted"\\é\n',
        "status": 200,
        "ms": 0.1 + 0.2,
        "huge": 10**30,
        "nan": float("nan"),
        "inf": float("-inf"),
        "flag": True,
        "none": None,
        "other": object,
        "when": 1.5e-7,
    }
    writer.record(odd)
    (line,) = lines_in(read_end)
    stamp = json.loads(line)["ts"]
    expected = {"ts": stamp, "level": "info", "logger": "router.access", "msg": "request", **odd}
    assert line == json.dumps(expected, default=str)
