"""`router.serve`: workers with a listening socket each, against real routers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from shard_manager.local.processes import listening_sockets, tcp_sockets
from tests.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]


def _workers(pid: int) -> list[int]:
    """The router's worker processes (multiprocessing's resource tracker is a child too)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            # The parent pid is the second field after the parenthesised command name.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in command:
                found.append(int(entry.name))
    return found


def _connections_per_worker(port: int, workers: list[int]) -> Counter[int]:
    inodes = set(tcp_sockets(port, "01"))
    held: Counter[int] = Counter()
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                held[pid] += 1
    return held


def _open_while_busy(port: int, count: int, busy: int) -> list[socket.socket]:
    """`count` connections opened while worker `busy` is busy (here: stopped), as a pool
    connects while one worker is in a long GC pause or request; then each sends a request
    and reads its answer."""
    os.kill(busy, signal.SIGSTOP)
    try:
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]
        time.sleep(0.5)  # the other worker accepts whatever it can meanwhile
    finally:
        os.kill(busy, signal.SIGCONT)
    request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    for sock in socks:
        sock.sendall(request)
    for sock in socks:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    return socks


def test_connections_opened_while_a_worker_is_busy_are_spread_over_the_workers(board: Cluster):
    # uvicorn's own --workers shares one socket: a free worker accepts every connection
    # that comes while the other is busy, and keeps them as long as they live (and with
    # wrk opening 64 connections at once to an idle router, one worker got 55 in two
    # tries of six). Here each worker has its own share of them waiting for it.
    router = board.router(workers=2)
    try:
        workers = _workers(router.proc.pid)
        assert len(workers) == 2
        assert listening_sockets(router.port) == 2
        for busy in [*workers, *workers]:
            socks = _open_while_busy(router.port, 64, busy)
            try:
                held = _connections_per_worker(router.port, workers)
                assert sum(held.values()) == 64
                # A hash of 64 addresses over two sockets: 16-48 each all but always.
                assert min(held[pid] for pid in workers) >= 16, held
            finally:
                for sock in socks:
                    sock.close()
    finally:
        router.stop()


def test_a_killed_worker_is_replaced_by_one_with_a_socket_of_its_own(board: Cluster):
    router = board.router(workers=2)
    try:
        victim, survivor = _workers(router.proc.pid)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            workers = _workers(router.proc.pid)
            if len(workers) == 2 and victim not in workers and listening_sockets(router.port) == 2:
                break
            assert time.monotonic() < deadline, f"workers {workers}, {listening_sockets(router.port)} listening"
            time.sleep(0.2)
        (replacement,) = set(workers) - {survivor}
        socks = _open_while_busy(router.port, 64, survivor)
        try:
            held = _connections_per_worker(router.port, workers)
            assert min(held[replacement], held[survivor]) >= 16, held
        finally:
            for sock in socks:
                sock.close()
    finally:
        router.stop()


def test_a_second_router_on_a_taken_port_refuses_to_start(board: Cluster, router):
    # Inside one SO_REUSEPORT group the second router would silently share the port.
    result = subprocess.run(
        [sys.executable, "-m", "router.serve", "--host", "127.0.0.1", "--port", str(router.port), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "LB_DATABASE_URL": board.dsn, "LB_SHARDS_FILE": str(board.shards_file)},
    )
    assert result.returncode == 1
    assert f"127.0.0.1:{router.port} is in use" in result.stderr
    with httpx.Client(base_url=router.url, timeout=5) as api:
        assert api.get("/healthz").status_code == 200


def test_a_router_whose_app_cannot_start_exits_with_uvicorns_startup_failure(board: Cluster, tmp_path: Path):
    # Production refuses to start without strong tokens; with several workers uvicorn
    # itself would exit 0 here, as if it had been stopped.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
    env |= {
        "LB_ENV": "production",
        "LB_GAME_TOKENS": "short",
        "LB_DATABASE_URL": board.dsn,
        "LB_SHARDS_FILE": str(board.shards_file),
    }
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    free = port.getsockname()[1]
    port.close()
    result = subprocess.run(
        [sys.executable, "-m", "router.serve", "--port", str(free), "--workers", "2", "--log-level", "warning"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 3, result.stderr[-2000:]
