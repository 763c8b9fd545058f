"""The pipelined script connection against a real redis-server: every caller gets its
own answer however many share the socket, and a lost script cache, a killed server, a
frozen one and a replica are each survived or reported as redis-py would."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError

from router.shards.pipelined import PipelinedScripts, pipelined_scripts_for
from shard_manager.local.binaries import require_redis_server
from shard_manager.local.processes import RedisServer, free_port

# Answers with its own arguments, so each caller can tell its answer from another's.
ECHO = "return {KEYS[1], ARGV[1]}"


@pytest.fixture
def server(tmp_path) -> Iterator[RedisServer]:
    redis = RedisServer(require_redis_server(), free_port(), tmp_path / "redis", appendonly=False)
    redis.start()
    try:
        yield redis
    finally:
        if redis.proc is not None and redis.proc.poll() is None:
            os.kill(redis.proc.pid, signal.SIGCONT)
        redis.kill()


def _scripts(port: int, **options) -> PipelinedScripts:
    async def resolve() -> tuple[str, int]:
        return "127.0.0.1", port

    return PipelinedScripts(resolve, connect_timeout_s=1.0, **options)


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


def test_concurrent_callers_each_get_their_own_answer(server):
    async def run() -> None:
        scripts = _scripts(server.port)
        answers = await asyncio.gather(
            *(scripts.evalsha(_sha(ECHO), ECHO, [f"key-{n}"], [f"arg-{n}"]) for n in range(500))
        )
        assert answers == [[f"key-{n}", f"arg-{n}"] for n in range(500)]
        await scripts.close()

    asyncio.run(run())


def test_a_lost_script_cache_is_filled_again(server):
    async def run() -> None:
        scripts = _scripts(server.port)
        assert await scripts.evalsha(_sha(ECHO), ECHO, ["k"], ["a"]) == ["k", "a"]
        assert await scripts.evalsha(_sha("return {1, 2}"), "return {1, 2}", [], []) == [1, 2]
        await scripts.close()

    asyncio.run(run())


def test_an_error_answer_is_raised_and_the_connection_goes_on(server):
    async def run() -> None:
        scripts = _scripts(server.port)
        setting = "return redis.call('SET', KEYS[1], 'text')"
        failing = "return redis.call('INCR', KEYS[1])"
        await scripts.evalsha(_sha(setting), setting, ["t"], [])
        with pytest.raises(ResponseError):
            await scripts.evalsha(_sha(failing), failing, ["t"], [])
        assert await scripts.evalsha(_sha(ECHO), ECHO, ["k"], ["after"]) == ["k", "after"]
        await scripts.close()

    asyncio.run(run())


def test_a_killed_server_fails_calls_and_a_restarted_one_is_reached_again(server):
    async def run() -> None:
        scripts = _scripts(server.port)
        assert await scripts.evalsha(_sha(ECHO), ECHO, ["k"], ["before"]) == ["k", "before"]
        server.kill()
        with pytest.raises(RedisConnectionError):
            await scripts.evalsha(_sha(ECHO), ECHO, ["k"], ["while down"])
        server.start()
        # The restarted server has no scripts cached, and the old socket is gone.
        assert await scripts.evalsha(_sha(ECHO), ECHO, ["k"], ["after"]) == ["k", "after"]
        await scripts.close()

    asyncio.run(run())


def test_a_caller_that_stops_waiting_never_shifts_the_answers_of_the_next(server):
    async def run() -> None:
        scripts = _scripts(server.port)
        assert await scripts.evalsha(_sha(ECHO), ECHO, ["k"], ["warm"]) == ["k", "warm"]
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await scripts.evalsha(_sha(ECHO), ECHO, ["k"], ["frozen"])
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        # The frozen call's answer comes late: the next callers read their own answers.
        answers = await asyncio.gather(*(scripts.evalsha(_sha(ECHO), ECHO, ["k"], [f"n{n}"]) for n in range(20)))
        assert answers == [["k", f"n{n}"] for n in range(20)]
        await scripts.close()

    asyncio.run(run())


def test_a_replica_refuses_writes_and_the_connection_is_dropped(server, tmp_path):
    replica = RedisServer(
        require_redis_server(), free_port(), tmp_path / "replica", appendonly=False, replica_of=server.port
    )
    replica.start()
    try:

        async def run() -> None:
            scripts = _scripts(replica.port)
            writing = "return redis.call('SET', KEYS[1], ARGV[1])"
            with pytest.raises(ReadOnlyError):
                await scripts.evalsha(_sha(writing), writing, ["w"], ["v"])
            assert scripts._wire is None or not scripts._wire.usable
            await scripts.close()

        asyncio.run(run())
    finally:
        replica.kill()


class _LossyProxy:
    """Forwards 127.0.0.1:port to the server; while `losing`, what callers send is
    dropped on the floor and the connection stays up (a command lost on the way)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.losing = False
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, client_reader, client_writer) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pump(reader, writer, lossy: bool) -> None:
            while data := await reader.read(65536):
                if not (lossy and self.losing):
                    writer.write(data)
            writer.close()

        await asyncio.gather(
            pump(client_reader, server_writer, True), pump(server_reader, client_writer, False), return_exceptions=True
        )

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()


def test_a_command_lost_on_the_way_never_shifts_the_answers_of_the_next(server):
    async def run() -> None:
        proxy = _LossyProxy(server.port)
        await proxy.start()
        scripts = _scripts(proxy.port)
        assert await scripts.evalsha(_sha(ECHO), ECHO, ["k"], ["warm"]) == ["k", "warm"]
        proxy.losing = True
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await scripts.evalsha(_sha(ECHO), ECHO, ["k"], ["lost"])
        proxy.losing = False
        # No answer is owed for the lost command: on the same connection the next
        # answer would go to its caller. The connection it was sent on is given up.
        async with asyncio.timeout(2):
            answers = await asyncio.gather(*(scripts.evalsha(_sha(ECHO), ECHO, ["k"], [f"n{n}"]) for n in range(20)))
        assert answers == [["k", f"n{n}"] for n in range(20)]
        await scripts.close()
        await proxy.stop()

    asyncio.run(run())


@pytest.mark.parametrize(
    ("url", "pipelined"),
    [
        ("redis://127.0.0.1:6390/3", True),
        ("rediss://127.0.0.1:6390/0", False),
        ("unix:///tmp/lb-nowhere.sock", False),
    ],
)
def test_only_plain_tcp_addresses_get_a_pipelined_connection(url, pipelined):
    client = aioredis.Redis.from_url(url)
    assert (pipelined_scripts_for(client, 1.0) is not None) is pipelined
    asyncio.run(client.aclose())
