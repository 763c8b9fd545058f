"""`make up` / `make down`: a fresh cluster from an empty data dir, nothing left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import redis

from router.settings import Settings
from router.shards.keys import legacy_state_key, state_key, zset_key
from shard_manager.local.launcher import REPLICA_PORT_STEP, SENTINEL_PORT_OFFSET, LocalCluster, _port_free
from shard_manager.local.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


def _session_members(sid: int) -> set[int]:
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            members.add(int(entry.name))
    return members


def _command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _parent(pid: int) -> int:
    stat = (Path("/proc") / str(pid) / "stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _manager(command: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shard_manager", command, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _shard_ports() -> list[int]:
    """Three free shard ports whose replica (1,000 above) and sentinel (20,000 above the
    lowest) ports are free too: all below the kernel's ephemeral range (32768 and up),
    where other processes' connections would come and go on them."""
    while True:
        ports = sorted(free_port(below=12_000) for _ in range(3))
        if len(set(ports)) == 3 and all(_port_free(p) for p in _derived_ports(ports)):
            return ports


def _derived_ports(shard_ports: list[int]) -> list[int]:
    """The ports `LB_REPLICAS=1` puts the replicas and sentinels of these shards on."""
    lowest = min(shard_ports)
    return [p + REPLICA_PORT_STEP for p in shard_ports] + [lowest + SENTINEL_PORT_OFFSET + i for i in range(3)]


def _server_ports(avoid: list[int]) -> tuple[int, int]:
    """PostgreSQL's and the router's ports: none of the shards' (or their replicas' and
    sentinels') ports."""
    taken = {*avoid, *_derived_ports(avoid)}
    while True:
        pg_port, http_port = free_port(), free_port()
        if len({pg_port, http_port}) == 2 and not {pg_port, http_port} & taken:
            return pg_port, http_port


def _local_cluster(tmp_path: Path, **settings: str) -> tuple[Path, list[int], int, int, dict]:
    """A data dir, a 3-shard map on free ports, and the environment `make up` reads."""
    data_dir = tmp_path / "data"
    ports = _shard_ports()
    shards_file = tmp_path / "shards.yaml"
    shards_file.write_text(
        "epoch: 1\nshards:\n"
        f"  - {{id: s0, address: 'redis://127.0.0.1:{ports[0]}/0', min_score: 0, max_score: 100}}\n"
        f"  - {{id: s1, address: 'redis://127.0.0.1:{ports[1]}/0', min_score: 100, max_score: 1000}}\n"
        f"  - {{id: s2, address: 'redis://127.0.0.1:{ports[2]}/0', min_score: 1000, max_score: null}}\n"
    )
    pg_port, http_port = _server_ports(avoid=ports)
    env = {
        **os.environ,
        "LB_DATA_DIR": str(data_dir),
        "LB_SHARDS_FILE": str(shards_file),
        "LB_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{pg_port}/leaderboard",
        "LB_HTTP_PORT": str(http_port),
        "LB_WORKERS": "1",
        **settings,
    }
    env.pop("LB_GAME_TOKENS", None)
    return data_dir, ports, pg_port, http_port, env


def test_up_gives_a_ready_cluster_and_down_leaves_nothing_behind(tmp_path):
    data_dir, ports, pg_port, http_port, env = _local_cluster(tmp_path)
    base = f"http://127.0.0.1:{http_port}"
    try:
        started = _manager("up", env)
        assert started.returncode == 0, started.stdout + started.stderr
        assert httpx.get(base + "/readyz").status_code == 200
        token = (data_dir / "game_token").read_text().strip()
        assert token in started.stdout
        reply = httpx.post(
            base + "/v1/scores",
            headers={"X-Game-Service-Token": token},
            json={"user_id": "alice", "match_id": "m1", "score": 150},
        )
        assert reply.status_code == 200, reply.text

        # Supervision: a shard's server and the router's main process killed; both come
        # back by themselves, counted, and the score is still there.
        launcher_pid = int((data_dir / "cluster.pid").read_text())
        killed: set[int] = set()
        for pid in _session_members(launcher_pid):
            command = _command_line(pid)
            # redis-server sets its own title: "redis-server 127.0.0.1:PORT".
            shard_server = "redis-server" in command and f"127.0.0.1:{ports[0]}" in command
            router_main = "router.serve" in command and _parent(pid) == launcher_pid
            if shard_server or router_main:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)

        def new_router_serves() -> bool:
            # The killed router's workers can answer for a moment after it died, so wait
            # for a router main process the supervisor started anew, and for it to answer.
            routers = {
                pid
                for pid in _session_members(launcher_pid)
                if "router.serve" in _command_line(pid) and _parent(pid) == launcher_pid
            }
            if not routers - killed or not redis.Redis(port=ports[0]).ping():
                return False
            reply = httpx.get(base + "/v1/scores/alice")
            return reply.status_code == 200 and reply.json()["score"] == 150

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if new_router_serves():
                    break
            except (httpx.TransportError, redis.ConnectionError, OSError):  # OSError: a process gone meanwhile
                pass
            time.sleep(0.3)
        assert httpx.get(base + "/v1/scores/alice").json()["score"] == 150
        status = _manager("status", env)
        assert "redis s0" in status.stdout and "router" in status.stdout, status.stdout
        restarts = {
            line.split()[0] + " " + line.split()[1]: line.split("restarts ")[1].split(",")[0]
            for line in status.stdout.splitlines()
            if "restarts" in line and line.startswith("  redis")
        }
        assert restarts["redis s0"] == "1", status.stdout
        assert "  router     running    restarts 1" in status.stdout, status.stdout
        metrics = httpx.get(base + "/metrics").text
        assert 'lb_local_restarts_total{process="redis s0"} 1' in metrics

        # As an earlier version left boards: alice's state in the month's one hash.
        shard = redis.Redis(port=ports[1], decode_responses=True)
        month = datetime.now(UTC).strftime("%Y-%m")
        entry = shard.hget(state_key(month, "alice"), "alice")
        shard.hdel(state_key(month, "alice"), "alice")
        shard.hset(legacy_state_key(month), "alice", entry)
        shard.close()

        members = _session_members(launcher_pid)
        assert len(members) >= 5  # launcher, 3 redis-server, postgres, router
        stopped = _manager("down", env)
        assert stopped.returncode == 0, stopped.stderr
        assert not _session_members(launcher_pid)
        assert all(_port_free(p) for p in [*ports, pg_port, http_port])

        # Restart on the same data dir keeps the data and the token, and turns the old
        # board into buckets before the router (which refuses old boards) starts.
        assert _manager("up", env).returncode == 0
        again = httpx.get(base + "/v1/scores/alice")
        assert again.status_code == 200 and again.json()["score"] == 150
        assert f"rebuild       {month}" in (data_dir / "logs" / "cluster.log").read_text()
        shard = redis.Redis(port=ports[1], decode_responses=True)
        assert not shard.exists(legacy_state_key(month))
        assert shard.hget(state_key(month, "alice"), "alice") == entry
        shard.close()
    finally:
        _manager("down", env)
    assert all(_port_free(p) for p in [*ports, pg_port, http_port])


def test_up_refuses_ports_another_cluster_answers_on(tmp_path):
    """A router already on the port answers /readyz: `up` must not take it for its own."""

    class Ready(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_):
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    shards_file = tmp_path / "shards.yaml"
    shards_file.write_text(
        "epoch: 1\nshards:\n"
        f"  - {{id: s0, address: 'redis://127.0.0.1:{free_port()}/0', min_score: 0, max_score: null}}\n"
    )
    env = {
        **os.environ,
        "LB_DATA_DIR": str(tmp_path / "data"),
        "LB_SHARDS_FILE": str(shards_file),
        "LB_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/leaderboard",
        "LB_HTTP_PORT": str(other.server_address[1]),
    }
    try:
        started = _manager("up", env)
    finally:
        other.shutdown()
    assert started.returncode == 1, started.stdout
    assert f"port(s) {other.server_address[1]} already in use" in started.stderr
    assert "is up" not in started.stdout


def test_up_that_fails_shows_why_from_the_log(tmp_path):
    """A cluster that stops while starting: `up` prints the reason from the log, so an
    operator (or a CI run whose temporary files are gone) need not dig it out."""
    data_dir, ports, pg_port, http_port, env = _local_cluster(tmp_path, LB_ENV="production", LB_ADMIN_TOKEN="changeme")
    (data_dir / "logs").mkdir(parents=True)
    (data_dir / "logs" / "cluster.log").write_text("a line an earlier run left\n")
    try:
        started = _manager("up", env)
    finally:
        _manager("down", env)
    assert started.returncode == 1, started.stdout
    assert "the cluster exited before" in started.stderr
    assert "refusing to start in production: LB_ADMIN_TOKEN has a weak or short token" in started.stderr
    assert "an earlier run left" not in started.stderr
    assert all(_port_free(p) for p in [*ports, pg_port, http_port])


def test_up_with_replicas_serves_each_shard_through_sentinels_and_fails_over(tmp_path):
    data_dir, ports, pg_port, http_port, env = _local_cluster(tmp_path, LB_REPLICAS="1")
    base = f"http://127.0.0.1:{http_port}"
    try:
        started = _manager("up", env)
        assert started.returncode == 0, started.stdout + started.stderr
        # `up` returns once /readyz answers; the cluster prints its banner just after it
        # sees that too, so give the line a moment to reach the log.
        deadline = time.monotonic() + 15
        while "is up" not in (log := (data_dir / "logs" / "cluster.log").read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "1 replica(s) each, 3 sentinels" in log
        token = (data_dir / "game_token").read_text().strip()
        auth = {"X-Game-Service-Token": token}
        body = {"user_id": "alice", "match_id": "m1", "score": 150}
        assert httpx.post(base + "/v1/scores", headers=auth, json=body).status_code == 200
        layout = httpx.get(
            base + "/v1/admin/shards", headers={"X-Admin-Token": (data_dir / "admin_token").read_text().strip()}
        )
        assert all(s["address"].startswith("redis+sentinel://") for s in layout.json()["shards"])

        # s1's primary hangs (a killed one would be restarted by the supervisor before
        # the sentinels gave up on it): they promote its replica, and the router follows.
        launcher_pid = int((data_dir / "cluster.pid").read_text())
        (frozen,) = [
            pid
            for pid in _session_members(launcher_pid)
            if "redis-server" in _command_line(pid) and f"127.0.0.1:{ports[1]}" in _command_line(pid)
        ]
        os.kill(frozen, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 30
            promoted = redis.Redis(port=ports[1] + REPLICA_PORT_STEP, decode_responses=True)
            while promoted.info("replication")["role"] != "master" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert promoted.info("replication")["role"] == "master"
            promoted.close()
            reply = None
            while time.monotonic() < deadline:
                reply = httpx.post(base + "/v1/scores", headers=auth, json={**body, "match_id": "m2"})
                if reply.status_code == 200:
                    break
                time.sleep(0.3)
            assert reply is not None and reply.status_code == 200, reply and reply.text
            assert httpx.get(base + "/v1/scores/alice").json()["score"] == 300
        finally:
            os.kill(frozen, signal.SIGCONT)
        status = _manager("status", env)
        assert "sentinel" in status.stdout and status.returncode == 0, status.stdout + status.stderr
    finally:
        _manager("down", env)
    assert all(_port_free(p) for p in [*ports, pg_port, http_port])


def test_replicas_whose_ports_would_not_exist_are_refused_before_anything_starts(tmp_path):
    shards_file = tmp_path / "shards.yaml"
    shards_file.write_text(
        "epoch: 1\nshards:\n  - {id: s0, address: 'redis://127.0.0.1:50000/0', min_score: 0, max_score: null}\n"
    )
    settings = Settings(data_dir=tmp_path / "data", shards_file=shards_file, replicas=1)
    with pytest.raises(ValueError, match="port 70002 does not exist"):
        LocalCluster(settings)
    assert not (tmp_path / "data").exists()


def test_a_shard_added_to_the_file_is_started_and_a_board_split_onto_it(tmp_path):
    data_dir, ports, pg_port, http_port, env = _local_cluster(tmp_path)
    base = f"http://127.0.0.1:{http_port}"
    shards_file = Path(env["LB_SHARDS_FILE"])
    try:
        started = _manager("up", env)
        assert started.returncode == 0, started.stdout + started.stderr
        token = (data_dir / "game_token").read_text().strip()
        for user, score in (("low", 50), ("high", 7000)):
            reply = httpx.post(
                base + "/v1/scores",
                headers={"X-Game-Service-Token": token},
                json={"user_id": user, "match_id": "m1", "score": score},
            )
            assert reply.status_code == 200, reply.text
        # The operator's steps from the README: add a shard to the file, then apply it.
        new_port = free_port(below=12_000)
        shards_file.write_text(
            shards_file.read_text().replace("min_score: 1000, max_score: null", "min_score: 1000, max_score: 5000")
            + f"  - {{id: s3, address: 'redis://127.0.0.1:{new_port}/0', min_score: 5000, max_score: null}}\n"
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError):
                if redis.Redis(port=new_port).ping():
                    break
            time.sleep(0.2)
        applied = _manager("apply", env, str(shards_file))
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert redis.Redis(port=new_port).zcard(zset_key(datetime.now(UTC).strftime("%Y-%m"))) == 1  # high
        assert httpx.get(base + "/v1/scores/high").json()["rank"] == 1
        assert httpx.get(base + "/v1/scores/low").json()["rank"] == 2
        status = _manager("status", env)
        assert "redis s3" in status.stdout and f"127.0.0.1:{new_port}" in status.stdout, status.stdout
    finally:
        _manager("down", env)
    assert all(_port_free(p) for p in [*ports, new_port, pg_port, http_port])
