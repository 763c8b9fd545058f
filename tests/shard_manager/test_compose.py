"""docker-compose.shards.yml must describe the cluster config/shards.yaml describes."""

from __future__ import annotations

from pathlib import Path

import yaml

from router.shardmap import load_shard_map

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.shards.yml").read_text())


def _flag(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def test_every_shard_has_a_redis_service_on_its_port_with_aof():
    shard_map = load_shard_map(ROOT / "config" / "shards.yaml")
    services = _compose()["services"]
    redis_services = {name: svc for name, svc in services.items() if name.startswith("redis-")}
    assert set(redis_services) == {f"redis-{s.id}" for s in shard_map.shards}
    for shard in shard_map.shards:
        command = redis_services[f"redis-{shard.id}"]["command"]
        assert int(_flag(command, "--port")) == shard.port, shard.id
        assert _flag(command, "--appendonly") == "yes", shard.id
        assert shard.host in ("127.0.0.1", "localhost")  # valid under host networking


def test_router_mounts_the_same_yaml_and_postgres_port_matches():
    services = _compose()["services"]
    router = services["router"]
    assert "./config/shards.yaml:/app/config/shards.yaml:ro" in router["volumes"]
    assert router["environment"]["LB_SHARDS_FILE"] == "/app/config/shards.yaml"
    pg_port = _flag(services["postgres"]["command"], "-p")
    assert f"127.0.0.1:{pg_port}/" in router["environment"]["LB_DATABASE_URL"]
    assert set(router["depends_on"]) >= {name for name in services if name.startswith("redis-")}


def test_postgres_has_room_for_a_group_commits_player_locks():
    command = _compose()["services"]["postgres"]["command"]
    settings = dict(command[i + 1].split("=", 1) for i, arg in enumerate(command) if arg == "-c")
    assert int(settings.get("max_locks_per_transaction", 64)) >= 256
