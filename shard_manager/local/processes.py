"""Real redis-server and PostgreSQL processes, started and stopped from Python.

Used by the local launcher (`make run`) and by the test fixtures alike, so the
tests exercise the same start-up path operators do. Servers listen on 127.0.0.1
only. PostgreSQL refuses to run as root, so when we are root it runs as an
unprivileged system user that owns its data directory.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import redis

from shard_manager.local.binaries import PostgresBinaries

PG_SYSTEM_USERS = ("postgres", "lbpostgres")
_SOCKET_PATH_MAX = 107  # sockaddr_un's sun_path on Linux, less its terminating NUL


class ServerStartError(RuntimeError):
    pass


def free_port(below: int | None = None) -> int:
    """A port nothing listens on now, under the kernel's ephemeral range (or under `below`,
    for ports that others are derived from by adding to them). Not one the kernel would
    offer: those are the ones every outgoing connection takes its source port from, and
    one taken so between this call and the server's bind makes the bind fail."""
    top = below or _ephemeral_range_start()
    for _ in range(1000):
        port = random.randint(10_000, top - 1)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below {top}")


def _ephemeral_range_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def tcp_sockets(port: int, state: str) -> list[str]:
    """The inodes of the TCP sockets on local `port`, any address, in `state` (the
    kernel's hex code: "0A" listening, "01" established)."""
    inodes = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == state and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.append(fields[9])
    return inodes


def listening_sockets(port: int) -> int:
    """How many sockets listen on TCP `port`: a router started by `router.serve` has one
    per worker once every worker is serving."""
    return len(tcp_sockets(port, "0A"))


def log_tail(path: Path, lines: int = 20, since: int = 0) -> str:
    """The last `lines` lines of a log, of what was written from byte `since` on."""
    try:
        with open(path, "rb") as log:
            log.seek(since)
            written = log.read().decode(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(written[-lines:])


def _stop_process(proc: subprocess.Popen | None, sig: int, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _wait_until_it_answers(proc: subprocess.Popen, what: str, port: int, log_path: Path, timeout: float) -> None:
    """Until the redis-server (or sentinel) on `port` answers PING; raises if it exits first."""
    deadline = time.monotonic() + timeout
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    try:
        while True:
            if proc.poll() is not None:
                raise ServerStartError(f"{what} on port {port} exited with {proc.returncode}:\n" + log_tail(log_path))
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                pass  # not listening yet, or still loading its AOF (LOADING)
            if time.monotonic() > deadline:
                raise ServerStartError(f"{what} on port {port} not ready in {timeout}s")
            time.sleep(0.05)
    finally:
        client.close()


class _ServerProcess:
    """Stopping, killing and watching a server process started as `self.proc`."""

    proc: subprocess.Popen | None

    def stop(self, timeout: float = 15.0) -> None:
        _stop_process(self.proc, signal.SIGTERM, timeout)

    def kill(self) -> None:
        _stop_process(self.proc, signal.SIGKILL, 5)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class RedisServer(_ServerProcess):
    binary: Path
    port: int
    data_dir: Path
    appendonly: bool = True
    replica_of: int | None = None
    """The port of the primary (on 127.0.0.1) this server replicates, if any."""
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def start(self, timeout: float = 20.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(self.binary),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--daemonize",
            "no",
            "--logfile",
            str(self.log_path),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
        ]
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        # Our stdio is never handed to the server: a pipe left open would keep a
        # caller that reads our output waiting forever.
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_until_it_answers(self.proc, "redis-server", self.port, self.log_path, timeout)


@dataclass
class SentinelServer(_ServerProcess):
    """redis-server in sentinel mode, watching primaries on 127.0.0.1 by service name.

    Sentinel rewrites its config file as it learns (replicas, other sentinels, the
    current primary), so the file lives in its data dir and is written only once."""

    binary: Path
    port: int
    data_dir: Path
    monitors: dict[str, int]  # service name -> the primary's port when first started
    quorum: int = 2
    down_after_ms: int = 1000
    failover_timeout_ms: int = 3000
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def config_path(self) -> Path:
        return self.data_dir / "sentinel.conf"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "sentinel.log"

    def _write_config(self) -> None:
        lines = [f"port {self.port}", "bind 127.0.0.1", f"dir {self.data_dir}", f"logfile {self.log_path}"]
        for name, primary_port in self.monitors.items():
            lines += [
                f"sentinel monitor {name} 127.0.0.1 {primary_port} {self.quorum}",
                f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
                f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {name} 1",
            ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 20.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            self._write_config()
        self.proc = subprocess.Popen(
            [str(self.binary), str(self.config_path), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_until_it_answers(self.proc, "sentinel", self.port, self.log_path, timeout)


def unprivileged_pg_user() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as when we are root (None when we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in PG_SYSTEM_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USERS[1]],
        check=True,
    )
    return pwd.getpwnam(PG_SYSTEM_USERS[1])


def _make_reachable(path: Path) -> None:
    """Let an unprivileged server user walk down to `path` (mkdtemp makes 0700 dirs)."""
    for parent in [path, *path.parents]:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if mode & 0o001 == 0:
            parent.chmod(mode | 0o011)


@dataclass
class PostgresServer(_ServerProcess):
    binaries: PostgresBinaries
    port: int
    data_dir: Path
    durable: bool = True
    """False turns off fsync: for throw-away test databases only."""
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def dsn(self, dbname: str = "leaderboard") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    def _run_as(self) -> dict:
        user = unprivileged_pg_user()
        if user is None:
            return {}
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _prepare_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = unprivileged_pg_user()
        if user is not None:
            _make_reachable(self.data_dir)
            for path in (self.data_dir, self.pgdata, self.log_path):
                if path == self.pgdata:
                    path.mkdir(mode=0o700, exist_ok=True)
                elif path == self.log_path:
                    path.touch(exist_ok=True)
                os.chown(path, user.pw_uid, user.pw_gid)

    def initdb(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        result = subprocess.run(
            [
                str(self.binaries.initdb),
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd="/",
            **self._run_as(),
        )
        if result.returncode != 0:
            raise ServerStartError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    def socket_directory(self) -> str:
        """Where PostgreSQL puts its Unix socket: in the data directory, or nowhere when
        that path is too long for one (a socket's path holds at most 107 bytes, and a
        project checked out a few folders deep reaches that). Nothing of ours uses the
        socket; every connection goes over TCP on 127.0.0.1."""
        socket_path = self.pgdata / f".s.PGSQL.{self.port}"
        return str(self.pgdata) if len(os.fsencode(socket_path)) <= _SOCKET_PATH_MAX else ""

    def start(self, timeout: float = 60.0) -> None:
        self._prepare_dirs()
        self.initdb()
        args = [
            str(self.binaries.postgres),
            "-D",
            str(self.pgdata),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.socket_directory()}",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=256MB",
            # A group commit holds one advisory lock per player in it (up to 500).
            "-c",
            "max_locks_per_transaction=256",
        ]
        if not self.durable:
            args += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child for its lifetime
        try:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/", **self._run_as()
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"postgres on port {self.port} exited with {self.proc.returncode}:\n" + log_tail(self.log_path)
                )
            try:
                psycopg2.connect(self.dsn("postgres"), connect_timeout=2).close()
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"postgres on port {self.port} not ready in {timeout}s:\n" + log_tail(self.log_path)
                    ) from None
                time.sleep(0.1)
        self.create_database("leaderboard")

    def create_database(self, name: str) -> None:
        conn = psycopg2.connect(self.dsn("postgres"))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def stop(self, timeout: float = 30.0) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
        _stop_process(self.proc, signal.SIGINT, timeout)
