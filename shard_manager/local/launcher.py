"""The local cluster: one redis-server per shard, PostgreSQL and the router, on 127.0.0.1.

`run` keeps everything in the foreground until Ctrl-C (or SIGTERM) and then stops
every process it started; a process that exits meanwhile is started again
(shard_manager.local.supervision). `up` starts `run` in the background and returns once the
router's /readyz answers 200; `down` stops it. Data lives under LB_DATA_DIR, so a
restart keeps it and an empty directory gives a fresh cluster.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import yaml

from router.metrics import SUPERVISOR_STATE_ENV
from router.settings import Settings
from router.shardmap import (
    ShardMap,
    ShardMapError,
    dump_shard_map,
    load_shard_map,
    read_config_file,
    shard_map_from_dict,
)
from router.store.layout import ensure_layout
from router.store.migrate import migrate
from shard_manager.local.binaries import require_postgres, require_redis_server
from shard_manager.local.processes import (
    PostgresServer,
    RedisServer,
    SentinelServer,
    listening_sockets,
    log_tail,
)
from shard_manager.local.supervision import Supervisor
from shard_manager.rebuild import months_in_old_layout, rebuild_month

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# With LB_REPLICAS: replica k of a shard listens on its port + k * REPLICA_PORT_STEP; the
# three sentinels on the lowest shard port + SENTINEL_PORT_OFFSET and the two after it.
REPLICA_PORT_STEP = 1000
SENTINEL_PORT_OFFSET = 20000


def sentinel_service_name(shard_id: str) -> str:
    return f"lb-{shard_id}"


class LaunchError(RuntimeError):
    pass


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _stored_token(path: Path) -> str:
    """A token generated on first start and kept with the data, so restarts keep it."""
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(24)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


def wait_ready(url: str, timeout: float, alive=lambda: True) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not alive():
            raise LaunchError(f"the cluster exited before {url} was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read().decode(errors='replace')[:300]}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise LaunchError(f"{url} not ready after {timeout:.0f}s ({last})")


def wait_listening(port: int, workers: int, timeout: float, alive=lambda: True) -> None:
    """Until every router worker listens on `port`. Each worker opens its socket once its
    app has started, and connections opened before then all go to the workers already
    listening (and stay there, if they are kept alive)."""
    deadline = time.monotonic() + timeout
    while (listening := listening_sockets(port)) < workers:
        if not alive():
            raise LaunchError(f"the router exited before its {workers} workers listened on port {port}")
        if time.monotonic() > deadline:
            raise LaunchError(
                f"{listening} of the router's {workers} workers listen on port {port} after {timeout:.0f}s"
            )
        time.sleep(0.1)


class LocalCluster:
    def __init__(
        self, settings: Settings, shard_map: ShardMap | None = None, *, router_output: Path | None = None
    ) -> None:
        """`router_output`: a file for the router's log lines; default: this process's terminal."""
        self.settings = settings
        self.router_output = router_output
        self.shard_map = shard_map or load_shard_map(settings.shards_file)
        # With replicas, each shard is served as a Sentinel-managed primary: the map the
        # routers get names the sentinels, and the file's ports are the first primaries'.
        self.replica_ports = {
            shard.id: [shard.port + REPLICA_PORT_STEP * (k + 1) for k in range(settings.replicas)]
            for shard in self.shard_map.shards
        }
        first_port = min(shard.port for shard in self.shard_map.shards)
        self.sentinel_ports = [first_port + SENTINEL_PORT_OFFSET + i for i in range(3)] if settings.replicas else []
        derived = self.sentinel_ports + [port for ports in self.replica_ports.values() for port in ports]
        if derived and max(derived) > 65535:
            raise ValueError(
                f"LB_REPLICAS={settings.replicas} puts replicas {REPLICA_PORT_STEP} ports above each shard and"
                f" sentinels {SENTINEL_PORT_OFFSET} above the lowest one: port {max(derived)} does not exist;"
                " give the shards lower ports in the shard map"
            )
        self.served_map = self._served_map()
        self.data_dir = settings.data_dir.resolve()
        self.redis: list[RedisServer] = []
        self.replicas: list[tuple[str, RedisServer]] = []
        self.sentinels: list[SentinelServer] = []
        self.postgres: PostgresServer | None = None
        self.router: subprocess.Popen | None = None
        self.game_token = ""
        self.admin_token = ""
        self._shards_file_seen: float | None = None  # the shard map file's mtime when last read
        self._added: dict[str, RedisServer] = {}  # servers started for shards added to the file since

    def _served_map(self) -> ShardMap:
        if not self.sentinel_ports:
            return self.shard_map
        sentinels = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        shards = self.shard_map.to_dict()["shards"]
        for shard in shards:
            shard["address"] = f"redis+sentinel://{sentinels}/{sentinel_service_name(shard['id'])}"
        return shard_map_from_dict({"epoch": self.shard_map.epoch, "shards": shards})

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.http_host}:{self.settings.http_port}"

    def check_ports(self) -> int:
        """Refuse addresses off this machine and ports already taken; returns PostgreSQL's port."""
        for shard in self.shard_map.shards:
            if shard.sentinel is not None:
                raise LaunchError(
                    f"shard {shard.id} is at {shard.address}; the local launcher starts the servers itself from "
                    "plain redis:// addresses (LB_REPLICAS=1 adds replicas and sentinels to them)"
                )
            if shard.host not in LOOPBACK:
                raise LaunchError(
                    f"shard {shard.id} is at {shard.address}; the local launcher only starts "
                    "servers on 127.0.0.1 (use docker-compose.shards.yml for other hosts)"
                )
        db = urlparse(self.settings.database_url)
        if db.hostname not in LOOPBACK:
            raise LaunchError(f"LB_DATABASE_URL points at {db.hostname}; the local launcher runs it on 127.0.0.1")
        pg_port = db.port or 5432
        busy = [
            p
            for p in [s.port for s in self.shard_map.shards]
            + [port for ports in self.replica_ports.values() for port in ports]
            + self.sentinel_ports
            + [pg_port, self.settings.http_port]
            if not _port_free(p)
        ]
        if busy:
            raise LaunchError(
                f"port(s) {', '.join(map(str, busy))} already in use on 127.0.0.1; is a cluster already "
                "running (`make down`), or set other ports in the shard map / LB_* settings"
            )
        return pg_port

    def start(self) -> None:
        pg_port = self.check_ports()
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        redis_binary = require_redis_server()
        pg_binaries = require_postgres()
        try:
            for shard in self.shard_map.shards:
                server = RedisServer(redis_binary, shard.port, self.data_dir / "redis" / shard.id)
                server.start()
                self.redis.append(server)
                print(f"  redis-server  {shard.id:<4} {shard.address}  range {shard.range}", flush=True)
                for k, port in enumerate(self.replica_ports[shard.id]):
                    replica = RedisServer(
                        redis_binary,
                        port,
                        self.data_dir / "redis" / f"{shard.id}-replica{k + 1}",
                        replica_of=shard.port,
                    )
                    replica.start()
                    self.replicas.append((shard.id, replica))
                    print(f"  replica       {shard.id:<4} redis://127.0.0.1:{port}/0  of {shard.address}", flush=True)
            monitors = {sentinel_service_name(shard.id): shard.port for shard in self.shard_map.shards}
            for i, port in enumerate(self.sentinel_ports):
                sentinel = SentinelServer(redis_binary, port, self.data_dir / "sentinel" / str(i), monitors)
                sentinel.start()
                self.sentinels.append(sentinel)
                print(f"  sentinel      127.0.0.1:{port}  watching {', '.join(monitors)}", flush=True)
            self.postgres = PostgresServer(pg_binaries, pg_port, self.data_dir / "postgres")
            self.postgres.start()
            print(f"  postgres      {self.settings.database_url}", flush=True)
            applied = migrate(self.settings.database_url)
            if applied:
                print(f"  migrations    applied {', '.join(applied)}", flush=True)
            layout = ensure_layout(self.settings.database_url, self.served_map)
            if not layout.shard_map.same_layout(self.served_map):
                print(
                    f"  note          the layout in force (epoch {layout.epoch}) differs from "
                    f"{self.settings.shards_file}; `shard-manager plan` shows what `apply` would change",
                    flush=True,
                )
            for month in months_in_old_layout(layout.shard_map):
                # Left by an earlier version of this project; routers refuse such boards.
                print(f"  rebuild       {month:%Y-%m}: players' states into buckets (a board from before them)")
                rebuild_month(self.settings.database_url, layout.shard_map, month)
            self._start_router()
            wait_ready(self.base_url + "/readyz", timeout=60, alive=lambda: self.router.poll() is None)
            wait_listening(
                self.settings.http_port, self.settings.workers, timeout=60, alive=lambda: self.router.poll() is None
            )
        except BaseException:
            self.stop()
            raise

    @property
    def supervisor_state(self) -> Path:
        return self.data_dir / "supervisor.json"

    def _start_router(self, *, restart: bool = False) -> None:
        self.game_token = ",".join(self.settings.game_tokens) or _stored_token(self.data_dir / "game_token")
        self.admin_token = self.settings.admin_token or _stored_token(self.data_dir / "admin_token")
        metrics_dir = self.data_dir / "metrics"
        if not restart:
            # Per-process files of a previous run would add up; after a restart by the
            # supervisor they are this run's, and its counters go on from them.
            shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            SUPERVISOR_STATE_ENV: str(self.supervisor_state),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "LB_GAME_TOKENS": self.game_token,
            "LB_ADMIN_TOKEN": self.admin_token,
            "LB_SHARDS_FILE": str(self._served_map_file()),
            "LB_DATABASE_URL": self.settings.database_url,
        }
        output = open(self.router_output, "ab") if self.router_output else None  # noqa: SIM115 - closed below
        self.router = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "router.serve",
                "--host",
                self.settings.http_host,
                "--port",
                str(self.settings.http_port),
                "--workers",
                str(self.settings.workers),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            # A group of its own: if the router's main process dies, its workers live on
            # holding the port, and the whole group must go before it starts again.
            process_group=0,
        )
        if output is not None:
            output.close()  # the router holds its own descriptor

    def _served_map_file(self) -> Path:
        """The shard map the routers get: the file itself, or, with replicas, its
        Sentinel form (routers fall back on it only while PostgreSQL cannot be read)."""
        if self.served_map is self.shard_map:
            return self.settings.shards_file.resolve()
        path = self.data_dir / "shards.served.yaml"
        boards = read_config_file(self.settings.shards_file).get("boards")
        path.write_text(dump_shard_map(self.served_map) + (yaml.safe_dump({"boards": boards}) if boards else ""))
        return path

    def _restart_router(self) -> None:
        if self.router is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.router.pid, signal.SIGKILL)
            self.router.wait()
        self._start_router(restart=True)

    def supervise(self, stopping: Callable[[], bool]) -> Supervisor:
        """A supervisor that restarts any of this cluster's processes that exits."""
        supervisor = Supervisor(
            self.supervisor_state, log=lambda line: print(line, file=sys.stderr, flush=True), stopping=stopping
        )
        for shard, server in zip(self.shard_map.shards, self.redis, strict=True):
            supervisor.watch(f"redis {shard.id}", server.start, _exit_code_of(server))
        for shard_id, replica in self.replicas:
            supervisor.watch(f"replica {shard_id}:{replica.port}", replica.start, _exit_code_of(replica))
        for sentinel in self.sentinels:
            supervisor.watch(f"sentinel {sentinel.port}", sentinel.start, _exit_code_of(sentinel))
        if self.postgres is not None:
            supervisor.watch("postgres", self.postgres.start, _exit_code_of(self.postgres))
        supervisor.watch(
            "router",
            self._restart_router,
            lambda: -1 if self.router is None else self.router.poll(),
        )
        return supervisor

    def start_listed_servers(self, supervisor: Supervisor) -> list[str]:
        """The redis-servers for shards the shard map file lists now and this cluster does
        not run yet: started and supervised like the others, so that an operator who adds
        a shard to the file can `shard-manager apply` it at once. Returns the shard ids
        started. Only plain 127.0.0.1 addresses, and not with replicas (restart for that)."""
        path = self.settings.shards_file
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return []
        if mtime == self._shards_file_seen:
            return []
        self._shards_file_seen = mtime
        try:
            listed = load_shard_map(path)
        except ShardMapError as exc:
            print(f"  note          {path} cannot be read ({exc}); no servers started from it", flush=True)
            return []
        running = {shard.id for shard in self.shard_map.shards} | set(self._added)
        started = []
        for shard in listed.shards:
            if shard.id in running or shard.sentinel is not None or shard.host not in LOOPBACK:
                continue
            if self.settings.replicas:
                print(
                    f"  note          {shard.id} is new in {path}: restart the cluster to give it replicas", flush=True
                )
                continue
            if not _port_free(shard.port):
                print(f"  note          {shard.id} is new in {path}, but port {shard.port} is taken", flush=True)
                continue
            server = RedisServer(require_redis_server(), shard.port, self.data_dir / "redis" / shard.id)
            server.start()
            self._added[shard.id] = server
            supervisor.watch(f"redis {shard.id}", server.start, _exit_code_of(server))
            print(
                f"  redis-server  {shard.id:<4} {shard.address}  new in {path}: started;"
                f" `shard-manager apply {path}` splits onto it",
                flush=True,
            )
            started.append(shard.id)
        return started

    def stop(self) -> None:
        if self.router is not None and self.router.poll() is None:
            # SIGTERM: uvicorn stops accepting, finishes in-flight requests, then the
            # lifespan flushes queued writes before the process exits.
            self.router.send_signal(signal.SIGTERM)
            try:
                self.router.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.router.kill()
                self.router.wait()
        if self.router is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.router.pid, signal.SIGKILL)  # workers whose main process died
        for sentinel in self.sentinels:
            sentinel.stop()  # first, so that no failover starts while the servers stop
        for _, replica in self.replicas:
            replica.stop()
        for server in [*self.redis, *self._added.values()]:
            server.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def banner(self) -> str:
        first_token = self.game_token.split(",")[0]
        return "\n".join(
            [
                "",
                f"Leaderboard cluster is up: {len(self.shard_map.shards)} shards"
                + (f" ({self.settings.replicas} replica(s) each, 3 sentinels)" if self.sentinels else "")
                + f", PostgreSQL, router with {self.settings.workers} worker(s)",
                f"  API docs   {self.base_url}/docs",
                f"  readiness  {self.base_url}/readyz",
                f"  game token {first_token}",
                f"  admin token {self.admin_token}",
                f"  data       {self.data_dir}",
                "A process that exits is restarted; `.venv/bin/shard-manager status` shows the restarts.",
                "Try:",
                f"  curl -s -X POST {self.base_url}/v1/scores -H 'X-Game-Service-Token: {first_token}' \\",
                '       -H "Content-Type: application/json" -d \'{"user_id": "alice", "match_id": "m1", "score": 3}\'',
                f"  curl -s {self.base_url}/v1/leaderboard/top",
                "",
            ]
        )


def run_foreground(settings: Settings) -> int:
    cluster = LocalCluster(settings)
    stopping = False

    def _stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print("Starting the local cluster...", flush=True)
    try:
        cluster.start()
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(cluster.banner() + "Press Ctrl-C to stop everything.\n", flush=True)
    supervisor = cluster.supervise(lambda: stopping)
    cluster.start_listed_servers(supervisor)  # reads the file's mtime: what it lists now runs
    try:
        while not stopping:
            supervisor.check()
            cluster.start_listed_servers(supervisor)
            time.sleep(0.2)
    finally:
        print("Stopping the local cluster...", flush=True)
        cluster.stop()
        print("Stopped.", flush=True)
    return 0


def _exit_code_of(server: RedisServer | SentinelServer | PostgresServer):
    def exit_code() -> int | None:
        if server.proc is None:
            return -1
        return server.proc.poll()

    return exit_code


def _session_members(session_id: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) == session_id and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def _pid_file(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "cluster.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) still answers signal 0.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True


def up(settings: Settings) -> int:
    pid_file = _pid_file(settings)
    if pid_file.exists() and _alive(int(pid_file.read_text())):
        print(f"already running (pid {pid_file.read_text().strip()}); `make down` stops it")
        return 0
    # Checked here, not only in the child: another cluster on these ports would answer
    # /readyz below before the child had failed, and be reported as this one.
    try:
        LocalCluster(settings).check_ports()
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    logs = settings.data_dir.resolve() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "cluster.log", "ab") as log:
        run_starts_at = log.tell()
        proc = subprocess.Popen(
            [sys.executable, "-m", "shard_manager", "run"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    pid_file.write_text(f"{proc.pid}\n")
    url = f"http://{settings.http_host}:{settings.http_port}/readyz"
    try:
        wait_ready(url, timeout=180, alive=lambda: proc.poll() is None)
        wait_listening(settings.http_port, settings.workers, timeout=60, alive=lambda: proc.poll() is None)
    except LaunchError as exc:
        down(settings)
        print(f"error: {exc}; see {logs / 'cluster.log'}; its last lines:", file=sys.stderr)
        # Only this run's lines: the log keeps earlier runs' above them.
        tail = log_tail(logs / "cluster.log", lines=25, since=run_starts_at) or "(nothing)"
        print("\n".join(f"  | {line}" for line in tail.splitlines()), file=sys.stderr)
        return 1
    token = ",".join(settings.game_tokens) or (settings.data_dir / "game_token").read_text().strip()
    print(f"Cluster is up (pid {proc.pid}); logs in {logs / 'cluster.log'}")
    print(f"  API docs   http://{settings.http_host}:{settings.http_port}/docs")
    print(f"  game token {token.split(',')[0]}")
    print("`make down` stops it.")
    return 0


def down(settings: Settings) -> int:
    pid_file = _pid_file(settings)
    if not pid_file.exists():
        print("nothing to stop (no cluster.pid)")
        return 0
    pid = int(pid_file.read_text())
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    # The launcher leads its own session: anything left in it goes too (the router
    # runs in a process group of its own within that session).
    for leftover in _session_members(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(leftover, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    print("Cluster stopped.")
    return 0
