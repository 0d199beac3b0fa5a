"""What the Redis backend promises beyond the contract: scripts that survive a script-cache
flush, one hash tag per queue, nothing left behind, the server's clock, URLs with users,
passwords and TLS, failing fast when Redis is away, and take-over's two phases."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

import toniq
from tests.redis_server import RedisServer
from toniq.backends import from_url
from toniq.backends.redis import RedisBackend, parse_url, script_source
from toniq.errors import ConfigurationError, EnqueueError, StoreError
from toniq.job import HELD, NODE_LOST, JobError, JobState, NewJob, NodeInfo, Outcome
from toniq.serialization import dumps_unsigned as dumps
from toniq.serialization import make_job

W = "redis.W"
V = "redis.V"


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    """A server of this module's own: these tests flush scripts and add ACL users."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def client(server: RedisServer) -> Iterator[redis.Redis]:
    client = server.client()
    yield client
    client.flushall()
    client.close()


@pytest.fixture
def backend(server: RedisServer, client: redis.Redis) -> Iterator[RedisBackend]:
    backend = RedisBackend(server.url(queue="q"))
    yield backend
    backend.close()


def stored_keys(client: redis.Redis, prefix: str = "toniq:{q}:") -> set[str]:
    """The keys on the server, without the queue's prefix (which they must all have), and
    without "idle": the wake-up flag an empty claim leaves, which expires within 30 s."""
    keys = {k.decode() if isinstance(k, bytes) else k for k in client.keys("*")}
    assert all(k.startswith(prefix) for k in keys), keys
    if prefix + "idle" in keys:
        assert 0 < client.pttl(prefix + "idle") <= 30_000
    return {k.removeprefix(prefix) for k in keys} - {"idle"}


def new(n: int = 1, worker: str = W, run_at: float | None = None) -> list[NewJob]:
    stamp = time.monotonic_ns()
    return [
        NewJob(f"job-{stamp}-{i}", worker, dumps((i,), {}), time.time(), run_at) for i in range(n)
    ]


def node(backend: RedisBackend, name: str = "n1", workers: tuple[str, ...] = (W,)) -> str:
    now = time.time()
    backend.register_node(NodeInfo(name, "host", 1, now, now, workers))
    return name


def test_every_script_has_a_header_naming_its_keys_and_arguments() -> None:
    for name in ("enqueue", "claim", "ack", "hand_back", "take_over", "prune_failed"):
        source = script_source(name)
        assert f"-- {name}.lua:" in source and "KEYS[1]" in source and "ARGV[1]" in source


def test_a_script_carries_only_the_helpers_it_names() -> None:
    # Redis runs a script's whole text on every call: helpers it does not use cost time.
    assert "local function" not in script_source("unregister_node").split("-- unregister")[0]
    heartbeat = script_source("heartbeat")
    assert "local function now()" in heartbeat and "local function fmt(" in heartbeat
    assert "local function place(" not in heartbeat
    claim = script_source("claim")
    for helper in ("now", "place", "first_between", "hmget", "call_in_chunks"):
        assert f"local function {helper}(" in claim
    assert "local CHUNK = " in claim  # a helper's own helpers come along
    assert "local function reason_json(" not in claim


def test_calls_from_one_thread_reuse_one_connection(
    backend: RedisBackend, client: redis.Redis
) -> None:
    backend.enqueue(new(1))
    before = len(client.client_list())
    for _ in range(20):
        backend.enqueue(new(1))
        backend.claim(node(backend), {W: 1})
    assert len(client.client_list()) == before


def test_closing_while_other_threads_enqueue_leaves_no_connection_open(
    backend: RedisBackend, client: redis.Redis
) -> None:
    before = len(client.client_list())
    errors: list[BaseException] = []
    started = threading.Barrier(5)

    def enqueue_until_closed() -> None:
        started.wait()
        while True:
            try:
                backend.enqueue(new(1))
            except StoreError:  # closed: EnqueueError says the job was not stored
                return
            except BaseException as exc:  # anything else is the bug
                errors.append(exc)
                return

    threads = [threading.Thread(target=enqueue_until_closed) for _ in range(4)]
    for thread in threads:
        thread.start()
    started.wait()
    while backend.counts().get(W, {}).get("available", 0) < 200:
        pass  # let the threads hold and return connections for a while
    backend.close()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert not backend._lanes
    # Each thread held its own connection at some point; none outlives close(). Redis sees
    # a closed connection at a later turn of its event loop, which may come after it
    # answers CLIENT LIST (seen once on Redis 6.2): asked again for a few seconds.
    deadline = time.monotonic() + 5
    while len(client.client_list()) > before and time.monotonic() < deadline:
        pass
    assert len(client.client_list()) <= before


def test_a_forked_child_uses_connections_of_its_own(backend: RedisBackend) -> None:
    import os

    backend.enqueue(new(1))  # the parent now holds an idle connection
    parents = backend._lanes[0]._sock.getsockname()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            backend.enqueue(new(5))
            own = backend._lanes[0]._sock.getsockname() != parents
            os._exit(0 if own else 2)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # 2: it wrote on the parent's socket
    backend.enqueue(new(1))  # the parent's connection is still in step
    assert backend.counts() == {W: {"available": 7}}


def lane_address(backend: RedisBackend) -> str:
    """host:port of the one idle connection's local end, as CLIENT LIST names it."""
    (conn,) = backend._lanes
    host, port = conn._sock.getsockname()[:2]
    return f"{host}:{port}"


def test_an_idle_connection_the_server_closed_is_replaced_before_anything_is_sent(
    backend: RedisBackend, client: redis.Redis
) -> None:
    backend.enqueue(new(1))
    before = lane_address(backend)
    assert client.client_kill(before)  # as a restart or the server's idle timeout would
    backend.enqueue(new(1))  # not an error: nothing had been sent on the closed one
    assert lane_address(backend) != before
    assert backend.counts() == {W: {"available": 2}}


def test_an_idle_connection_with_a_reply_waiting_is_not_used(
    backend: RedisBackend, client: redis.Redis
) -> None:
    import select

    backend.enqueue(new(1))
    before = lane_address(backend)
    (conn,) = backend._lanes
    conn.send_command("PING")  # a reply nobody reads: the connection is out of step
    assert select.select([conn._sock], [], [], 5)[0]
    jobs = new(2)
    backend.enqueue(jobs)  # its reply must not be taken for the PING's
    assert lane_address(backend) != before
    assert backend.counts() == {W: {"available": 3}}
    with pytest.raises(EnqueueError, match="exists"):  # and the next reply is its own
        backend.enqueue(jobs[:1])
    assert backend.claim(node(backend), {W: 1})[0].id.startswith("job-")


@pytest.mark.parametrize("protocol", [2, 3])
def test_replies_are_read_off_the_socket_with_the_connection_s_own_reader(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch, protocol: int
) -> None:
    # The round trip of every script reads with hiredis directly (redis-py's read_response
    # cost a tenth of an enqueue); if a redis-py release moved what it uses, this fails
    # rather than toniq silently taking the slower path.
    assert backend._pool is not None
    backend._pool.connection_kwargs["protocol"] = protocol
    backend.enqueue(new(1))
    (conn,) = backend._lanes

    def unused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("redis-py's read path was used")

    monkeypatch.setattr(conn, "read_response", unused)
    monkeypatch.setattr(conn, "send_packed_command", unused)
    jobs = new(3)
    backend.enqueue(jobs)
    with pytest.raises(EnqueueError, match="exists"):
        backend.enqueue(jobs[1:2])
    claimed = backend.claim(node(backend), {W: 4})
    assert len(claimed) == 4
    assert backend.ack("n1", [Outcome(c.id, c.token, W) for c in claimed]).accepted == 4
    assert backend._lanes[0] is conn


def push_comes_first(server: RedisServer) -> bool:
    """Whether this server sends a message that a script publishes to its caller's own
    subscription before the script's reply (Redis 6.2 and 7: before; Valkey 8: after)."""
    import hiredis

    reader = hiredis.Reader()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            hiredis.pack_command(("HELLO", "3"))
            + hiredis.pack_command(("SUBSCRIBE", "probe"))
            + hiredis.pack_command(("EVAL", "redis.call('PUBLISH', 'probe', 'x') return 7", 0))
        )
        replies: list[Any] = []

        def message() -> int | None:
            return next(
                (i for i, r in enumerate(replies) if r == [b"message", b"probe", b"x"]), None
            )

        while 7 not in replies or message() is None:
            reply = reader.gets()
            if reply is False:
                reader.feed(sock.recv(65536))
            else:
                replies.append(reply)
    return (message() or 0) < replies.index(7)


def test_a_resp3_push_with_a_reply_costs_no_job(
    server: RedisServer, backend: RedisBackend, client: redis.Redis
) -> None:
    # The lane is subscribed to the wake-up channel, and enqueue.lua publishes on it (a
    # node is idle). Where the message comes before the script's reply, it goes to
    # redis-py's push handler and the reply is read after it, on the same connection;
    # where it comes after, the connection is found with it waiting and made again.
    assert backend._pool is not None
    backend._pool.connection_kwargs["protocol"] = 3
    backend.enqueue(new(1))
    (conn,) = backend._lanes
    conn.send_command("SUBSCRIBE", "toniq:{q}:wake")
    assert conn.read_response(push_request=True)[0] in (b"subscribe", "subscribe")
    pushes: list[Any] = []
    handler = conn._parser.handle_push_response
    conn._parser.handle_push_response = lambda reply: pushes.append(reply) or handler(reply)
    before = lane_address(backend)
    client.set("toniq:{q}:idle", 1)
    jobs = new(1)
    backend.enqueue(jobs)
    assert not client.exists("toniq:{q}:idle")  # it published
    with pytest.raises(EnqueueError, match="exists"):  # the next reply is its own
        backend.enqueue(jobs)
    if push_comes_first(server):
        assert len(pushes) == 1
        assert lane_address(backend) == before  # in step all along
    else:
        assert pushes == []
        assert lane_address(backend) != before
    assert backend.counts() == {W: {"available": 2}}


def test_round_trips_work_with_redis_py_s_own_parser(
    backend: RedisBackend, client: redis.Redis
) -> None:
    from redis._parsers import _RESP2Parser, _RESP3Parser  # without hiredis

    assert backend._pool is not None
    backend._pool.connection_kwargs["parser_class"] = _RESP2Parser  # RESP3's if need be
    jobs = new(2)
    backend.enqueue(jobs)
    assert isinstance(backend._lanes[0]._parser, (_RESP2Parser, _RESP3Parser))
    with pytest.raises(EnqueueError, match="exists"):
        backend.enqueue(jobs[:1])
    client.client_kill(lane_address(backend))
    claimed = backend.claim(node(backend), {W: 2})
    assert [c.id for c in claimed] == [j.id for j in jobs]


def test_scripts_load_again_after_the_script_cache_is_flushed(
    backend: RedisBackend, client: redis.Redis
) -> None:
    jobs = new(3)
    backend.enqueue(jobs[:1])
    client.script_flush()  # e.g. a Redis restart, or a failover to a replica
    backend.enqueue(jobs[1:])
    n = node(backend)
    client.script_flush()
    claimed = backend.claim(n, {W: 3})
    assert [c.id for c in claimed] == [j.id for j in jobs]
    client.script_flush()
    assert backend.ack(n, [Outcome(c.id, c.token, W) for c in claimed]).accepted == 3
    assert backend.counts() == {W: {"done": 3}}


def test_enqueue_overlapping_calls_meanwhile_once_while_redis_works(
    backend: RedisBackend, client: redis.Redis
) -> None:
    # enqueue_many signs its next batch in `meanwhile`: between the send and the read, so
    # the batch is on its way (or stored) when it runs; once, also if the scripts are lost.
    seen: list[int] = []
    jobs = new(4)
    backend.enqueue(jobs[:1])  # loads the scripts
    backend.enqueue_overlapping(jobs[1:3], lambda: seen.append(backend.counts()[W]["available"]))
    client.script_flush()  # NOSCRIPT: loaded and sent again, meanwhile not called again
    backend.enqueue_overlapping(jobs[3:], lambda: seen.append(-1))
    assert len(seen) == 2 and seen[0] in (1, 3) and seen[1] == -1
    assert backend.counts() == {W: {"available": 4}}
    # a duplicate: the batch is refused as by enqueue(), after meanwhile ran
    with pytest.raises(EnqueueError, match="duplicate"):
        backend.enqueue_overlapping(new(1) + jobs[:1], lambda: seen.append(0))
    assert seen[-1] == 0 and backend.counts() == {W: {"available": 4}}


# -- enqueue from a coroutine ------------------------------------------------------------


def thread_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Make asyncio.to_thread record its calls and run them (so a test can tell whether the
    loop's own path was taken)."""
    calls: list[Any] = []
    real = asyncio.to_thread

    async def recorded(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        calls.append(fn)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", recorded)
    return calls


def test_enqueue_one_async_waits_for_redis_on_the_event_loop(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = thread_calls(monkeypatch)

    async def enqueue(jobs: list[NewJob]) -> None:
        for job in jobs:
            await backend.enqueue_one_async(job)

    first, jobs = new(1), new(20)
    asyncio.run(enqueue(first))  # no idle connection yet: a thread makes one
    assert len(threads) == 1
    (conn,) = backend._lanes

    def unused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("redis-py's read path was used")

    monkeypatch.setattr(conn, "read_response", unused)
    monkeypatch.setattr(conn, "send_packed_command", unused)
    asyncio.run(enqueue(jobs))  # on the loop, on that connection
    assert len(threads) == 1 and backend._lanes[0] is conn
    with pytest.raises(EnqueueError, match="exists"):  # errors as enqueue() raises them
        asyncio.run(enqueue(jobs[3:4]))
    assert backend.counts() == {W: {"available": 21}}
    claimed = backend.claim(node(backend), {W: 21})
    assert [c.id for c in claimed] == [j.id for j in first + jobs]  # in order, each once
    assert len(threads) == 1


def test_enqueue_one_async_takes_a_thread_for_a_big_payload_or_a_stale_connection(
    backend: RedisBackend, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from toniq.backends.redis import LOOP_SEND_MAX

    threads = thread_calls(monkeypatch)
    backend.enqueue(new(1))
    (big,) = new(1)
    big.payload = dumps((b"x" * LOOP_SEND_MAX,), {})
    asyncio.run(backend.enqueue_one_async(big))  # not sent from the loop: it could block
    assert len(threads) == 1
    client.client_kill(lane_address(backend))  # a restart, or the server's idle timeout
    asyncio.run(backend.enqueue_one_async(new(1)[0]))  # connected again, in the thread
    assert len(threads) == 2
    client.script_flush()  # NOSCRIPT from the loop's path: sent again (once) from a thread
    asyncio.run(backend.enqueue_one_async(new(1)[0]))
    assert len(threads) == 3
    asyncio.run(backend.enqueue_one_async(new(1)[0]))
    assert len(threads) == 3
    assert backend.counts() == {W: {"available": 5}}
    assert backend.get_job(big.id) is not None


def test_a_cancelled_or_timed_out_enqueue_async_leaves_no_connection_out_of_step(
    tmp_path: Path,
) -> None:
    import os
    import signal

    with RedisServer(directory=tmp_path) as srv:
        backend = RedisBackend(srv.url(timeout="0.5"))
        assert srv.process is not None
        pid = srv.process.pid
        try:
            backend.enqueue(new(1))
            (sent, late, after) = new(3)

            async def cancel_while_redis_is_frozen() -> None:
                task = asyncio.create_task(backend.enqueue_one_async(sent))
                while backend._lanes:  # until it took the idle connection and sent
                    await asyncio.sleep(0)
                await asyncio.sleep(0)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

            os.kill(pid, signal.SIGSTOP)
            try:
                asyncio.run(cancel_while_redis_is_frozen())
            finally:
                os.kill(pid, signal.SIGCONT)
            assert not backend._lanes  # its connection was closed, not put back
            # What was sent ran once Redis went on; the cancelled call's reply is not read
            # as the next call's.
            asyncio.run(backend.enqueue_one_async(late))
            assert backend.get_job(sent.id) is not None and backend.get_job(late.id) is not None
            with pytest.raises(EnqueueError, match="exists"):
                asyncio.run(backend.enqueue_one_async(late))

            # No reply within the URL's timeout: EnqueueError, as enqueue() raises it.
            os.kill(pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(EnqueueError, match=r"within 0\.5s; the job may or may not"):
                    asyncio.run(backend.enqueue_one_async(after))
                assert time.monotonic() - started < 2
            finally:
                os.kill(pid, signal.SIGCONT)
            asyncio.run(backend.enqueue_one_async(new(1)[0]))
            assert backend.get_job(after.id) is not None  # it was sent: it ran
            with pytest.raises(EnqueueError, match="exists"):
                asyncio.run(backend.enqueue_one_async(after))
        finally:
            backend.close()


class _SlowReplies:
    """A TCP proxy to ``port`` that, while ``pause`` is set, sends each piece of a reply as
    its first byte, then the rest ``pause`` seconds later."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.pause: float | None = None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                server = socket.create_connection(("127.0.0.1", self.upstream))
                for src, dst, down in ((client, server, False), (server, client, True)):
                    threading.Thread(target=self._pump, args=(src, dst, down), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, down: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                pause = self.pause if down else None
                if pause and len(data) > 1:
                    dst.sendall(data[:1])
                    time.sleep(pause)
                    data = data[1:]
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)


def test_enqueue_async_keeps_the_loop_running_while_a_reply_comes_in_pieces(
    server: RedisServer, client: redis.Redis
) -> None:
    proxy = _SlowReplies(server.port)
    backend = RedisBackend(f"redis://127.0.0.1:{proxy.port}/0?queue=q&timeout=5")
    try:
        backend.enqueue(new(1))  # the idle connection the loop's path takes

        async def enqueue_and_tick() -> tuple[float, float]:
            gaps: list[float] = []
            done = asyncio.Event()

            async def tick() -> None:
                last = time.monotonic()
                while not done.is_set():
                    await asyncio.sleep(0.005)
                    gaps.append(time.monotonic() - last)
                    last = time.monotonic()

            ticking = asyncio.create_task(tick())
            proxy.pause = 0.4
            started = time.monotonic()
            await backend.enqueue_one_async(new(1)[0])
            took = time.monotonic() - started
            done.set()
            await ticking
            return took, max(gaps)

        took, longest = asyncio.run(enqueue_and_tick())
        proxy.pause = None
        assert took >= 0.4  # the reply did come in two pieces
        assert longest < 0.2  # and the loop ran meanwhile: no read waited on the socket
        assert backend.counts() == {W: {"available": 2}}
    finally:
        backend.close()
        proxy.listener.close()


def test_enqueue_async_in_flight_by_the_hundred_keeps_the_connections_bounded(
    backend: RedisBackend, client: redis.Redis
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from toniq.backends.redis import LOOP_CALLS_MAX

    backend.enqueue(new(1))
    threads = 4  # the loop's executor, where a call that finds no idle connection connects

    async def many() -> None:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(threads))
        room = asyncio.Semaphore(100)  # 100 in flight all along

        async def one(job: NewJob) -> None:
            async with room:
                await backend.enqueue_one_async(job)

        await asyncio.gather(*(one(job) for job in new(2_000)))

    asyncio.run(many())
    assert backend.counts() == {W: {"available": 2_001}}
    # At most one connection per call on the loop, and one per thread (without the bound,
    # each call in flight could hold one: 50 in one try).
    assert len(backend._lanes) <= LOOP_CALLS_MAX + threads
    mine = [c for c in client.client_list() if c["cmd"] != "client|list"]
    assert len(mine) <= 16 + threads + 1  # and the one of redis-py's pool (counts())


def test_all_keys_of_a_queue_share_one_hash_tag(backend: RedisBackend, client: redis.Redis) -> None:
    n = node(backend)
    backend.enqueue(new(4) + new(1, run_at=HELD) + new(1, "other.Worker"))
    claimed = backend.claim(n, {W: 3})
    error = JobError.reason("ValueError", "no", attempt=1, node=n)
    backend.ack(
        n,
        [
            Outcome(claimed[0].id, claimed[0].token, W),
            Outcome(claimed[1].id, claimed[1].token, W, error, retry_in=60),
            Outcome(claimed[2].id, claimed[2].token, W, error),
        ],
    )
    backend.claim(n, {W: 1})  # one job stays RUNNING
    keys = stored_keys(client)
    assert len({key_slot(f"toniq:{{q}}:{k}".encode()) for k in keys}) == 1
    assert keys == {
        "jobs",
        "payloads",
        "errors",
        "seq",
        "workers",
        "available:other.Worker",
        "scheduled:redis.W",
        "claims:n1",
        "claimers",
        "failed",
        "nodes",
        "nodeinfo",
        "count:running",
        "count:failed",
        "count:done",
        "rate",
    }


def test_queues_are_apart(server: RedisServer, client: redis.Redis) -> None:
    emails, reports = RedisBackend(server.url(queue="emails")), RedisBackend(server.url())
    try:
        emails.enqueue(new(2))
        reports.enqueue(new(1))
        assert emails.counts() == {W: {"available": 2}} and reports.counts() == {
            W: {"available": 1}
        }
        assert reports.prefix == "toniq:{default}:"
    finally:
        emails.close()
        reports.close()


def test_a_finished_job_leaves_nothing_behind_but_counters(
    backend: RedisBackend, client: redis.Redis
) -> None:
    n = node(backend)
    backend.enqueue(new(50))
    while claimed := backend.claim(n, {W: 7}):
        backend.ack(n, [Outcome(c.id, c.token, W) for c in claimed])
    backend.unregister_node(n)
    # "rate", the throughput ring, is bounded and expires after two idle minutes.
    assert stored_keys(client) == {"seq", "workers", "count:done", "rate"}
    assert 0 < client.ttl("toniq:{q}:rate") <= 120
    assert backend.counts() == {W: {"done": 50}}


def test_times_survive_every_rewrite_exactly(backend: RedisBackend) -> None:
    enqueued_at = 1_712_345_678.123_456_7  # more digits than Lua's cjson keeps (14)
    job = NewJob("exact", W, b"x", enqueued_at, None, {"timeout": 0.1 + 0.2})
    backend.enqueue([job])
    (claimed,) = backend.claim(node(backend), {W: 1})
    assert claimed.enqueued_at == enqueued_at and claimed.options == {"timeout": 0.1 + 0.2}
    record = backend.get_job(job.id)
    assert record is not None and record.enqueued_at == enqueued_at
    assert record.started_at is not None and abs(record.started_at - time.time()) < 5


def test_big_batches_in_one_script(backend: RedisBackend) -> None:
    jobs = new(20_000)
    backend.enqueue(jobs)
    n = node(backend)
    claimed = backend.claim(n, {W: 15_000})
    assert [c.id for c in claimed] == [j.id for j in jobs[:15_000]]
    report = backend.ack(n, [Outcome(c.id, c.token, W) for c in claimed])
    assert report.accepted == 15_000
    assert backend.counts() == {W: {"available": 5_000, "done": 15_000}}


def test_a_claim_for_several_workers_returns_their_jobs_in_enqueue_order(
    backend: RedisBackend,
) -> None:
    jobs = [job for pair in zip(new(3, W), new(3, V), strict=True) for job in pair]
    for job in jobs:  # W, V, W, V, ...
        backend.enqueue([job])
    n = node(backend, workers=(W, V))
    assert [c.id for c in backend.claim(n, {V: 3, W: 3})] == [j.id for j in jobs]


def test_a_big_claim_keeps_the_nodes_claim_set_a_hash_table(
    backend: RedisBackend, client: redis.Redis
) -> None:
    """Redis keeps a small hash as a list whose every write scans it: a claim of many jobs
    makes the claim set a hash table from the start (see hset_many in _common.lua)."""
    n = node(backend)
    backend.enqueue(new(300))
    claimed = backend.claim(n, {W: 200})
    key = f"toniq:{{q}}:claims:{n}"
    assert client.object("encoding", key) == b"hashtable"
    assert set(client.hkeys(key)) == {c.id.encode() for c in claimed}  # no marker left
    backend.ack(n, [Outcome(c.id, c.token, W) for c in claimed])
    assert not client.exists(key)
    few = backend.claim(n, {W: 3})  # a few: kept small, as Redis likes
    assert client.object("encoding", key) in (b"listpack", b"ziplist")
    assert client.hlen(key) == len(few) == 3


def test_a_job_named_like_the_claim_set_marker_stays_in_the_claim_set(
    backend: RedisBackend, client: redis.Redis
) -> None:
    """hset_many's marker field shares the claim set with job ids, which may be any
    string: a job with its name must not be deleted with it (found in review)."""
    n = node(backend)
    ids = ["#as-table"] + [f"j{i}" for i in range(39)]
    backend.enqueue([NewJob(i, W, dumps((1,), {}), time.time()) for i in ids])
    claimed = backend.claim(n, {W: 40})
    assert {c.id for c in claimed} == set(ids)
    assert {i for i, _ in backend.held_by(n)} == set(ids)
    # The node dies: every job it held goes back.
    client.zadd("toniq:{q}:nodes", {n: 0})
    report = backend.take_over(timeout=1, max_node_deaths=3)
    assert set(report.requeued) == set(ids)
    record = backend.get_job("#as-table")
    assert record is not None and record.state is JobState.AVAILABLE


def test_heartbeats_use_the_servers_clock(backend: RedisBackend, client: redis.Redis) -> None:
    skewed = time.time() - 3600  # a node whose clock is an hour late
    backend.register_node(NodeInfo("late", "host", 1, skewed, skewed, (W,)))
    sec, usec = client.time()
    (info,) = backend.nodes()
    assert abs(info.heartbeat_at - (sec + usec / 1e6)) < 1.0
    assert backend.take_over(60, 3).dead_nodes == ()


def test_take_over_checks_again_in_its_second_phase(backend: RedisBackend) -> None:
    backend.enqueue(new(2))
    slow = node(backend, "slow")
    claimed = backend.claim(slow, {W: 2})
    time.sleep(0.25)
    candidates, workers = backend._take_over_candidates(0.2)
    assert candidates == ["slow"] and workers == [W]
    assert backend.heartbeat(slow)  # it was only slow: it beats before phase 2
    assert backend._take_over(0.2, 3, candidates, workers).requeued == ()
    time.sleep(0.25)
    report = backend.take_over(0.2, 3)
    assert report.dead_nodes == ("slow",) and sorted(report.requeued) == sorted(
        c.id for c in claimed
    )


def test_a_node_with_a_worker_not_named_in_phase_two_waits_for_the_next_round(
    backend: RedisBackend,
) -> None:
    (job,) = new(1)
    backend.enqueue([job, *new(1, "other.Worker")])
    gone = node(backend, "gone", (W, "other.Worker"))
    backend.claim(gone, {W: 1})
    time.sleep(0.25)
    candidates, workers = backend._take_over_candidates(0.2)
    assert workers == [W]
    # It claims a job of another worker between the phases: phase 2 cannot reach that
    # worker's queue, so it leaves the node whole (jobs and registration) for the next call,
    # which takes both jobs at once: each died in company.
    (other,) = backend.claim(gone, {"other.Worker": 1})
    report = backend._take_over(0.2, 3, candidates, workers)
    assert report.dead_nodes == () and report.requeued == ()
    record = backend.get_job(job.id)
    assert record is not None and record.state is JobState.RUNNING
    report = backend.take_over(0.2, 3)
    assert report.dead_nodes == ("gone",)
    assert sorted(report.requeued) == sorted([job.id, other.id])
    record = backend.get_job(job.id)
    assert record is not None and "with others" in record.errors[-1].message


def test_jobs_of_a_node_that_unregistered_without_handing_them_back(
    backend: RedisBackend,
) -> None:
    backend.enqueue(new(2))
    sloppy = node(backend, "sloppy")
    claimed = backend.claim(sloppy, {W: 2})
    backend.unregister_node(sloppy)
    report = backend.take_over(60, 3)
    assert report.dead_nodes == () and sorted(report.requeued) == sorted(c.id for c in claimed)
    record = backend.get_job(claimed[0].id)
    assert record is not None and record.errors[-1].type == NODE_LOST
    assert backend.counts() == {W: {"available": 2}}


def test_listing_keeps_fifo_order_when_some_jobs_lost_a_node(backend: RedisBackend) -> None:
    jobs = new(4)
    backend.enqueue(jobs)
    doomed = node(backend, "doomed")
    backend.claim(doomed, {W: 2})
    time.sleep(0.25)
    backend.take_over(0.2, 3)
    listed = backend.jobs(JobState.AVAILABLE)
    assert [r.id for r in listed] == [j.id for j in jobs]
    assert [r.id for r in backend.jobs(JobState.AVAILABLE, W, limit=2, offset=1)] == [
        jobs[1].id,
        jobs[2].id,
    ]


def test_url_options_and_redaction(server: RedisServer) -> None:
    target, queue, timeout = parse_url("redis://h:1/2?queue=emails&timeout=0.5&max_connections=9")
    assert (target, queue, timeout) == ("redis://h:1/2?max_connections=9", "emails", 0.5)
    assert parse_url("unix:///tmp/r.sock?db=3") == ("unix:///tmp/r.sock?db=3", "default", 2.0)
    for bad in (
        "redis://h?queue=a{b}",
        "redis://h?queue=",
        "redis://h?timeout=0",
        "redis://h?timeout=x",
    ):
        with pytest.raises(ConfigurationError):
            parse_url(bad)
    backend = from_url(f"redis://:s3cret@127.0.0.1:{server.port}/0")
    assert isinstance(backend, RedisBackend) and "s3cret" not in backend.url
    backend.close()


def test_acl_user_and_password(server: RedisServer, client: redis.Redis) -> None:
    client.acl_setuser(
        "toniq", enabled=True, passwords=["+pa:ss"], keys=["toniq:*"], commands=["+@all"]
    )
    try:
        good = from_url(f"redis://toniq:pa%3Ass@127.0.0.1:{server.port}/0")
        assert good.url == f"redis://toniq:***@127.0.0.1:{server.port}/0"
        good.enqueue(new(1))
        assert good.counts() == {W: {"available": 1}}
        good.close()
        bad = from_url(f"redis://toniq:wrong@127.0.0.1:{server.port}/0")
        with pytest.raises(EnqueueError) as caught:
            bad.enqueue(new(1))
        assert "wrong" not in str(caught.value)
        with pytest.raises(StoreError):
            bad.counts()
        bad.close()
    finally:
        client.acl_deluser("toniq")


def test_unix_socket(server: RedisServer, client: redis.Redis) -> None:
    # The session server lives in a short mkdtemp() directory, so it always has a socket.
    assert server.socket_path.exists(), f"no unix socket at {server.socket_path}"
    backend = from_url(server.unix_url(db=0) + "&queue=unix")
    try:
        (job,) = new(1)
        backend.enqueue([job])
        assert client.hexists("toniq:{unix}:jobs", job.id)
    finally:
        backend.close()


def test_tls(tmp_path: Path) -> None:
    with RedisServer(tls=True, directory=tmp_path) as server:
        backend = from_url(server.url())
        try:
            assert backend.url.startswith("rediss://")
            backend.enqueue(new(2))
            assert isinstance(backend, RedisBackend)
            claimed = backend.claim(node(backend), {W: 2})
            assert [c.attempt for c in claimed] == [1, 1]
        finally:
            backend.close()


def test_enqueue_fails_fast_when_redis_is_away() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = from_url(f"redis://127.0.0.1:{port}/0")  # nothing listens there
    started = time.monotonic()
    with pytest.raises(EnqueueError, match="cannot reach"):
        backend.enqueue(new(1))
    with pytest.raises(StoreError):
        backend.claim("n", {W: 1})
    assert time.monotonic() - started < 2


def test_enqueue_fails_within_the_timeout_when_redis_does_not_answer() -> None:
    with socket.socket() as mute:  # accepts connections, never answers
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        backend = from_url(f"redis://127.0.0.1:{mute.getsockname()[1]}/0?timeout=0.3")
        started = time.monotonic()
        with pytest.raises(EnqueueError, match=r"within 0\.3s"):
            backend.enqueue(new(1))
        assert time.monotonic() - started < 1.5
        backend.close()


def test_a_restarted_redis_is_used_again(tmp_path: Path) -> None:
    with RedisServer(["--appendonly", "yes", "--appendfsync", "always"], directory=tmp_path) as srv:
        backend = RedisBackend(srv.url())
        try:
            (job,) = new(1)
            backend.enqueue([job])
            srv.kill()
            with pytest.raises(StoreError):
                backend.counts()
            srv.restart()
            assert backend.get_job(job.id) is not None  # AOF, fsync always: kept
            backend.enqueue(new(1))
            assert backend.counts() == {W: {"available": 2}}
        finally:
            backend.close()


def test_threads_share_one_backend(backend: RedisBackend) -> None:
    backend.enqueue(new(400))
    names = [node(backend, f"t{i}") for i in range(4)]
    got: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        while claimed := backend.claim(name, {W: 5}):
            backend.ack(name, [Outcome(c.id, c.token, W) for c in claimed])
            with lock:
                got.extend(c.id for c in claimed)

    threads = [threading.Thread(target=work, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == len(set(got)) == 400
    assert backend.counts() == {W: {"done": 400}}


def test_startup_checks_warn_about_eviction_and_no_persistence(tmp_path: Path) -> None:
    from toniq.backends.redis import RedisBackend

    (tmp_path / "checks").mkdir()
    server = RedisServer(directory=tmp_path / "checks").start()
    try:
        backend = RedisBackend(server.url())
        warnings = backend.server_warnings()
        assert any("persists nothing" in w for w in warnings)  # the test server: --save ""
        client = server.client()
        client.config_set("maxmemory-policy", "allkeys-lru")
        client.config_set("appendonly", "yes")
        warnings = backend.server_warnings()
        assert any("allkeys-lru" in w and "noeviction" in w for w in warnings)
        assert not any("persist" in w for w in warnings)
        client.config_set("maxmemory-policy", "noeviction")
        assert backend.server_warnings() == []
        run_id = backend.server_id()
        assert run_id and backend.server_id() == run_id
        server.restart()
        assert backend.server_id() not in (None, run_id)
        backend.close()
    finally:
        server.stop()


def test_a_node_logs_the_startup_checks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import toniq
    from tests.conftest import FAST, backend_url

    app = toniq.Toniq(backend_url("redis", tmp_path), **FAST)
    with caplog.at_level(logging.WARNING, logger="toniq"), toniq.Node(app, workers=[]):
        pass
    app.close()
    assert "Redis persists nothing" in caplog.text


_woken = threading.Event()


def test_an_enqueue_from_another_process_wakes_an_idle_node_at_once(
    server: RedisServer, client: redis.Redis
) -> None:
    """An idle node learns of a job enqueued elsewhere from the wake-up channel, not from
    its next poll: with a 30 s poll interval the job still starts at once."""
    import toniq
    from toniq.serialization import make_job

    class Wakes(toniq.Worker, name="redis.Wakes"):
        async def perform(self) -> None:
            _woken.set()

    _woken.clear()
    url = server.url(queue="wake")
    app = toniq.Toniq(url, poll_interval=30.0)
    elsewhere = RedisBackend(url)  # another process's view: its enqueue cannot wake the node
    try:
        listener = client.pubsub(ignore_subscribe_messages=True)
        listener.subscribe("toniq:{wake}:wake")
        assert listener.get_message(timeout=5) is None  # the subscription, confirmed
        with toniq.Node(app, workers=[Wakes]) as node:
            node.drain()  # one empty claim: the node is idle and has said so
            assert client.exists("toniq:{wake}:idle")
            began = time.monotonic()
            # Two jobs in one call: a single one would be handed over (see below), not
            # announced on the channel.
            elsewhere.enqueue(
                [make_job(app.keyring, "redis.Wakes", job_id=f"w{i}") for i in (1, 2)]
            )
            assert _woken.wait(10), "the idle node was not woken"
            latency = time.monotonic() - began
        # One message for the idle spell, not one per job. (Not "idle" is gone: the node,
        # idle again once both jobs ran, may have set it anew by now.)
        messages = [listener.get_message(timeout=5), listener.get_message(timeout=0.2)]
        assert [m and m["data"] for m in messages] == [b"1", None]
        assert latency < 5, latency  # far below the 30 s poll
    finally:
        listener.close()
        elsewhere.close()
        app.close()


class _ClaimsSeen:
    """The node's backend, noting which jobs it got from claim() (not handed over)."""

    def __init__(self, backend: object) -> None:
        self._backend = backend
        self.claimed: list[str] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._backend, name)

    def claim(self, node_id: str, wants: dict[str, int], **options: object) -> list[object]:
        got = self._backend.claim(node_id, wants, **options)  # type: ignore[attr-defined]
        self.claimed += [job.id for job in got]
        return list(got)


@contextlib.contextmanager
def _armed_node(
    server: RedisServer,
    client: redis.Redis,
    queue: str,
    worker: type[Any],
    node_class: type[toniq.Node] = toniq.Node,
) -> Iterator[tuple[toniq.Node, _ClaimsSeen, RedisBackend]]:
    """A node of ``worker`` that has armed (it waits for a hand-over), its claims as
    recorded, and a second backend to enqueue from "another process"."""
    # A 60 s timeout lets one wait last the 30 s poll interval, so a job cannot come in the
    # moment between two waits (it would then come with the next claim, as it should).
    url = server.url(queue=queue, timeout="60")
    app = toniq.Toniq(url, poll_interval=30.0)
    seen = _ClaimsSeen(app.backend)
    app._backend = seen  # type: ignore[assignment]
    elsewhere = RedisBackend(url)
    try:
        with node_class(app, workers=[worker]) as node:
            node.drain()
            deadline = time.monotonic() + 10
            while not client.hexists(f"toniq:{{{queue}}}:armed", node.id):
                assert time.monotonic() < deadline, "the node never armed"
            yield node, seen, elsewhere
    finally:
        elsewhere.close()
        app.close()


class _Handed(toniq.Worker, name="redis.Handed"):
    async def perform(self) -> None:
        _woken.set()


def test_an_idle_node_gets_a_job_from_the_enqueue_itself(
    server: RedisServer, client: redis.Redis
) -> None:
    """An idle node waits on its hand-over list; a job enqueued alone (from any process) is
    leased to it by the enqueue script and pushed there: no wake-up, no claim round trip."""
    _woken.clear()
    with _armed_node(server, client, "hand", _Handed) as (node, seen, elsewhere):
        elsewhere.enqueue([make_job(node.app.keyring, "redis.Handed", job_id="h1")])
        assert _woken.wait(10), "the job handed over did not run"
        node.drain()
        assert "h1" not in seen.claimed  # it came from the enqueue, not from a claim
        assert elsewhere.get_job("h1") is None  # done and acknowledged
    # Disarmed on stop: nothing of hand-over is left.
    assert not client.keys("toniq:{hand}:handoff:*")
    assert not client.exists("toniq:{hand}:armed", "toniq:{hand}:waiting:redis.Handed")


_started: dict[str, threading.Event] = {}
_release = threading.Event()


class _Held(toniq.Worker, name="redis.Held"):
    async def perform(self, name: str) -> None:
        _started[name].set()
        await asyncio.get_running_loop().run_in_executor(None, _release.wait, 10)


def test_a_busy_node_stays_armed_for_the_room_it_has(
    server: RedisServer, client: redis.Redis
) -> None:
    """A node running a job handed over keeps waiting for the next: a job enqueued while
    the first runs is handed over too, and both run at once (no claim for either)."""
    _started.update(h1=threading.Event(), h2=threading.Event())
    _release.clear()
    try:
        with _armed_node(server, client, "busy", _Held) as (node, seen, elsewhere):
            for name in ("h1", "h2"):
                job = make_job(node.app.keyring, "redis.Held", (name,), job_id=name)
                elsewhere.enqueue([job])
                assert _started[name].wait(10), f"{name} did not start"
            assert not _release.is_set()  # h1 still runs: h2 came while the node was busy
            assert seen.claimed == []  # both came from the enqueue
            _release.set()
            node.drain()
            assert elsewhere.get_job("h1") is None and elsewhere.get_job("h2") is None
    finally:
        _release.set()


class _StopsWhenHanded(toniq.Node):
    """Told to stop just as its first hand-over lands (a SIGTERM at that moment)."""

    def _start_handed(self, jobs: list[Any]) -> None:
        super()._start_handed(jobs)
        self._begin_stop()


def test_a_stopping_node_is_handed_nothing_while_its_jobs_finish(
    server: RedisServer, client: redis.Redis
) -> None:
    """A stop disarms the node before the grace period, not after it: a job enqueued while
    the node's last jobs finish waits in the queue for another node."""
    _started.update(h1=threading.Event())
    _release.clear()
    try:
        with _armed_node(server, client, "stopping", _Held, _StopsWhenHanded) as (
            node,
            _,
            elsewhere,
        ):
            elsewhere.enqueue([make_job(node.app.keyring, "redis.Held", ("h1",), job_id="h1")])
            assert _started["h1"].wait(10), "h1 did not start"
            deadline = time.monotonic() + 5  # the grace period is 10 s, h1 runs until released
            while client.hexists("toniq:{stopping}:armed", node.id):
                assert time.monotonic() < deadline, "the stopping node stayed armed"
            elsewhere.enqueue([make_job(node.app.keyring, "redis.Held", ("h2",), job_id="h2")])
            record = elsewhere.get_job("h2")
            assert record is not None and record.state is JobState.AVAILABLE
            _release.set()
    finally:
        _release.set()


def test_a_job_handed_over_is_leased_as_a_claim_would(backend: RedisBackend) -> None:
    n1 = node(backend)
    assert backend.claim(n1, {W: 5}, arm=1.0) == []  # nothing: armed
    [job] = new(1)
    backend.enqueue([job])
    record = backend.get_job(job.id)
    assert record is not None and record.state is JobState.RUNNING
    assert record.node == n1 and record.attempt == 1
    assert backend.counts()[W]["running"] == 1
    [(held_id, token)] = backend.held_by(n1)
    [handed] = backend.wait_handoff(n1, 1.0) or []
    assert (handed.id, handed.worker, handed.token) == (job.id, W, token) and held_id == job.id
    assert (handed.payload, handed.attempt, handed.suspect) == (job.payload, 1, False)
    assert handed.enqueued_at == job.enqueued_at
    # Handed over once: the next job waits for a claim (the node is disarmed).
    backend.enqueue(new(1))
    assert backend.counts()[W]["available"] == 1
    assert backend.wait_handoff(n1, 0.01) is None
    report = backend.ack(n1, [Outcome(job.id, handed.token, W)])
    assert report.rejected == () and backend.get_job(job.id) is None


def test_an_arming_takes_as_many_jobs_as_its_slots_and_armed_nodes_take_turns(
    backend: RedisBackend, client: redis.Redis
) -> None:
    n1, n2 = node(backend, "n1"), node(backend, "n2")
    assert backend.claim(n1, {W: 5}, arm=1.0, slots=2) == []
    assert backend.claim(n2, {W: 5}, arm=1.0, slots=1) == []
    jobs = new(4)
    for job in jobs:
        backend.enqueue([job])
    # n1 armed first, then n2; n1 is still armed after its first job and waits behind n2.
    holders = []
    for job in jobs:
        record = backend.get_job(job.id)
        assert record is not None
        holders.append(record.node if record.state is JobState.RUNNING else None)
    assert holders == [n1, n2, n1, None]
    assert backend.counts()[W]["available"] == 1
    assert [j.id for j in backend.wait_handoff(n1, 1.0) or []] == [jobs[0].id]
    assert [j.id for j in backend.wait_handoff(n1, 1.0) or []] == [jobs[2].id]
    assert [j.id for j in backend.wait_handoff(n2, 1.0) or []] == [jobs[1].id]
    assert not client.hexists("toniq:{q}:armed", n1)  # both used every slot
    assert not client.hexists("toniq:{q}:armed", n2)


def test_an_arming_leaves_the_waiting_sets_of_workers_without_room(
    backend: RedisBackend,
) -> None:
    """A node armed for W and V, then (V full) armed for W only, is never handed a V job."""
    n1 = node(backend)
    assert backend.claim(n1, {W: 5, V: 5}, arm=1.0, slots=5) == []
    assert backend.claim(n1, {W: 5}, arm=1.0, slots=5, others=[W, V]) == []
    [job] = new(1, worker=V)
    backend.enqueue([job])
    record = backend.get_job(job.id)
    assert record is not None and record.state is JobState.AVAILABLE


def test_a_waiting_set_keeps_its_expiry_while_a_node_takes_turns(
    backend: RedisBackend, client: redis.Redis
) -> None:
    n1 = node(backend)
    backend.claim(n1, {W: 5}, arm=1.0, slots=3)
    backend.enqueue(new(1))  # handed over; n1 stays armed, alone in the set
    assert client.zscore("toniq:{q}:waiting:" + W, n1) is not None
    assert 0 < client.pttl("toniq:{q}:waiting:" + W) <= 2200  # a dead node leaves nothing


def test_an_arming_written_without_slots_takes_one_job(
    backend: RedisBackend, client: redis.Redis
) -> None:
    """As a claim.lua from before slots wrote it (a node of an older release)."""
    n1 = node(backend)
    backend.claim(n1, {W: 5}, arm=1.0, slots=3)
    _token, until = client.hget("toniq:{q}:armed", n1).decode().split()  # type: ignore[union-attr]
    assert float(until) > 0  # "<token> <until>", as an enqueue.lua from before slots reads it
    client.hdel("toniq:{q}:armed", f"{n1}#slots")
    jobs = new(2)
    for job in jobs:
        backend.enqueue([job])
    states = [backend.get_job(job.id).state for job in jobs]  # type: ignore[union-attr]
    assert states == [JobState.RUNNING, JobState.AVAILABLE]


def test_a_job_handed_over_after_the_wait_ended_comes_with_the_next_claim(
    backend: RedisBackend,
) -> None:
    n1 = node(backend)
    backend.claim(n1, {W: 1}, arm=1.0)
    backend.wake_handoff(n1)  # a wake-up marker nobody takes
    [job] = new(1)
    backend.enqueue([job])
    [claimed] = backend.claim(n1, {W: 1})
    assert claimed.id == job.id
    assert [(claimed.id, claimed.token)] == backend.held_by(n1)
    assert backend.claim(n1, {W: 1}) == []  # taken once; the marker is dropped
    assert backend.wait_handoff(n1, 0.01) is None


def test_disarming_gives_back_what_was_handed_over_and_not_taken(
    backend: RedisBackend, client: redis.Redis
) -> None:
    n1 = node(backend)
    backend.claim(n1, {W: 1}, arm=1.0)
    [job] = new(1)
    backend.enqueue([job])
    backend.wake_handoff(n1)  # a marker too
    assert backend.disarm(n1, [W]) == 1
    record = backend.get_job(job.id)
    assert record is not None and record.state is JobState.AVAILABLE and record.attempt == 0
    assert backend.held_by(n1) == [] and backend.counts()[W].get("running", 0) == 0
    backend.enqueue(new(1))  # disarmed: nothing more is handed over
    assert backend.counts()[W]["available"] == 2
    [first, _] = backend.claim(n1, {W: 2})
    assert first.id == job.id and first.attempt == 1  # its place in the FIFO kept
    # Nothing of hand-over is left: not the list, the arming or the waiting entry.
    assert stored_keys(client) & {"armed", f"waiting:{W}", f"handoff:{n1}"} == set()


def test_no_job_is_handed_to_a_node_whose_arming_ran_out_or_that_left(
    backend: RedisBackend, client: redis.Redis
) -> None:
    n1, n2 = node(backend, "n1"), node(backend, "n2")
    backend.claim(n1, {W: 1}, arm=0.0)  # armed for the margin only
    backend.claim(n2, {W: 1}, arm=1.0)
    backend.unregister_node(n2)
    time.sleep(0.3)  # n1's arming runs out (what is tested is the server's clock)
    [job] = new(1)
    backend.enqueue([job])
    record = backend.get_job(job.id)
    assert record is not None and record.state is JobState.AVAILABLE
    assert not client.exists("toniq:{q}:waiting:" + W)  # the stale entries are gone


def test_a_job_handed_to_a_node_that_died_is_taken_over(backend: RedisBackend) -> None:
    n1 = node(backend)
    backend.claim(n1, {W: 1}, arm=1.0)
    [job] = new(1)
    backend.enqueue([job])
    report = backend.take_over(0.0, 3)  # n1's heartbeat is older than 0 s: dead
    assert report.dead_nodes == (n1,) and report.requeued == (job.id,)
    record = backend.get_job(job.id)
    assert record is not None and record.state is JobState.AVAILABLE
