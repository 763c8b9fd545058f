"""The router's server: `leaderboard-router` (or `python -m router.serve`).

Runs `LB_WORKERS` uvicorn worker processes on `LB_HTTP_HOST:LB_HTTP_PORT`, each with a
listening socket of its own.

Why not `uvicorn --workers`: it binds one socket in its parent and every worker accepts
from it. Whichever worker wakes first takes a whole burst of new connections, and
since game services and load balancers keep pools of long-lived connections, the split
stays as it fell. With 64 connections opened at once to two workers, one worker got 55
in two tries of six, and then saturated one core while the other idled (and its group
commits were small, so each write cost more). Here each worker binds its own socket into
one SO_REUSEPORT group, and the kernel spreads new connections over the workers by a
hash of their addresses (24-40 of 64 each, in the same test). uvicorn's supervisor still
starts the workers, pings them, and replaces any that dies or stops answering.
The cost: a connection waits for the worker it was given, so while a worker is stalled
the connections the kernel gave it wait too.

One worker runs in this process, as `uvicorn` runs it.
"""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys
from collections.abc import Sequence

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from router.settings import Settings

APP = "router.serve:build_app"
# SIGTERM lets in-flight requests finish, and then the lifespan flushes queued writes.
GRACEFUL_SHUTDOWN_S = 20


def build_app():
    """Each worker's app. A worker that cannot build it (unsafe or unreadable settings)
    exits with uvicorn's startup-failure status, which stops the supervisor; any other
    exit would have it start the worker again, and fail again, for ever."""
    from router.app import create_app  # here: the supervisor itself never needs the app

    try:
        return create_app()
    except Exception:
        logging.getLogger("uvicorn.error").exception("the router cannot start")
        sys.exit(STARTUP_FAILURE)


def reuse_port_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound into the SO_REUSEPORT group of (host, port); uvicorn listens on it.
    Made with IPPROTO_TCP so that asyncio's own loop, too, turns Nagle off on what it accepts
    (it checks the listener's protocol; uvloop does so anyway)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class _OwnListener:
    """Stands in for the listening socket in the list uvicorn's supervisor hands every
    worker it starts (restarts too). The list reaches the worker pickled, and unpickling
    this binds a new socket there (`reuse_port_listener`), so each worker has one of its
    own and the supervisor is used as it is, not patched. The socket is only bound there:
    uvicorn listens on it once the app has started, so no connection waits on a worker
    that is still starting."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def __reduce__(self):
        return (reuse_port_listener, (self.host, self.port))


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on (host, port) already: a socket outside any
    SO_REUSEPORT group cannot bind then. (Inside one, a second router started by
    mistake would silently share the port with the first, so it is checked first.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    settings = Settings()
    parser = argparse.ArgumentParser(prog="leaderboard-router", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=settings.http_host, help="LB_HTTP_HOST; default %(default)s")
    parser.add_argument("--port", type=int, default=settings.http_port, help="LB_HTTP_PORT; default %(default)s")
    parser.add_argument("--workers", type=int, default=settings.workers, help="LB_WORKERS; default %(default)s")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    config = uvicorn.Config(
        APP,
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        # The router writes its own access log (router.asgi.access_log).
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    if args.workers == 1:
        server = uvicorn.Server(config)
        server.run()
        return 0 if server.started else STARTUP_FAILURE
    if not hasattr(socket, "SO_REUSEPORT") or not sys.platform.startswith("linux"):
        # Elsewhere SO_REUSEPORT does not spread connections: share one socket, as uvicorn does.
        listeners = [config.bind_socket()]
    elif port_in_use(args.host, args.port):
        print(f"leaderboard-router: {args.host}:{args.port} is in use by another program", file=sys.stderr)
        return 1
    else:
        listeners = [_OwnListener(args.host, args.port)]
    supervisor = Multiprocess(config, sockets=listeners)  # type: ignore[arg-type]
    supervisor.run()
    # The supervisor stops when a worker fails before it serves (the app cannot start):
    # say so in the exit status, as a single worker does.
    return STARTUP_FAILURE if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes) else 0


if __name__ == "__main__":
    sys.exit(main())
