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
    redis_services = {
        name: svc for name, svc in services.items() if name.startswith("redis-") and "profiles" not in svc
    }
    assert set(redis_services) == {f"redis-{s.id}" for s in shard_map.shards}
    for shard in shard_map.shards:
        command = redis_services[f"redis-{shard.id}"]["command"]
        assert int(_flag(command, "--port")) == shard.port, shard.id
        assert _flag(command, "--appendonly") == "yes", shard.id
        assert shard.host in ("127.0.0.1", "localhost")  # valid under host networking


def test_router_mounts_the_same_yaml_and_postgres_port_matches():
    services = _compose()["services"]
    router = services["router"]
    assert "./config:/app/config:ro" in router["volumes"]
    assert router["environment"]["LB_SHARDS_FILE"] == "/app/config/${LB_SHARDS_YAML:-shards.yaml}"
    pg_port = _flag(services["postgres"]["command"], "-p")
    assert f"127.0.0.1:{pg_port}/" in router["environment"]["LB_DATABASE_URL"]
    primaries = {name for name, svc in services.items() if name.startswith("redis-") and "profiles" not in svc}
    assert set(router["depends_on"]) >= primaries


def test_postgres_has_room_for_a_group_commits_player_locks():
    command = _compose()["services"]["postgres"]["command"]
    settings = dict(command[i + 1].split("=", 1) for i, arg in enumerate(command) if arg == "-c")
    assert int(settings.get("max_locks_per_transaction", 64)) >= 256


def test_the_replicas_profile_gives_every_shard_a_replica_and_three_sentinels_that_watch_it():
    plain = load_shard_map(ROOT / "config" / "shards.yaml")
    served = load_shard_map(ROOT / "config" / "shards.sentinel.yaml")
    assert served.same_layout(plain) is False  # other addresses...
    assert [(s.id, s.range) for s in served.shards] == [(s.id, s.range) for s in plain.shards]  # ...same shards
    services = _compose()["services"]
    sentinels = [svc for name, svc in services.items() if name.startswith("sentinel-")]
    assert len(sentinels) == 3 and all(svc["profiles"] == ["replicas"] for svc in sentinels)
    sentinel_ports = sorted(int(svc["environment"]["SENTINEL_PORT"]) for svc in sentinels)
    script = " ".join(sentinels[0]["command"])
    for shard, primary in zip(served.shards, plain.shards, strict=True):
        assert shard.sentinel is not None
        assert sorted(port for _, port in shard.sentinel.sentinels) == sentinel_ports
        assert f"sentinel monitor {shard.sentinel.service} 127.0.0.1 {primary.port} 2" in script
        replica = services[f"redis-{shard.id}-replica"]
        assert _flag(replica["command"], "--replicaof") == "127.0.0.1"
        assert replica["command"][replica["command"].index("--replicaof") + 2] == str(primary.port)
