"""The Redis backend on a Redis Cluster (three masters, no replicas, started by the tests):
one queue is one slot on one master, several queues spread over the masters, and what a
cluster URL accepts. The backend contract itself runs on the cluster in test_contract.py."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import redis

from tests.backends.test_redis import W, new, node
from tests.conftest import redis_cluster
from tests.redis_server import RedisCluster
from toniq.backends import from_url
from toniq.backends.redis import RedisBackend, parse_cluster
from toniq.errors import ConfigurationError, EnqueueError, StoreError
from toniq.job import HELD, JobError, Outcome


@pytest.fixture
def cluster() -> RedisCluster:
    return redis_cluster()  # the session's cluster, flushed after each test


@pytest.fixture
def masters(cluster: RedisCluster) -> Iterator[list[redis.Redis]]:
    """A plain client per master, in the cluster's order."""
    clients = [server.client() for server in cluster.servers]
    yield clients
    for client in clients:
        client.close()


def keys_by_master(masters: list[redis.Redis]) -> list[set[str]]:
    return [{k.decode() for k in client.keys("*")} for client in masters]


def owner(masters: list[redis.Redis], key: str) -> int:
    """The index of the master that serves ``key``'s slot, by CLUSTER SLOTS."""
    slot = int(masters[0].execute_command("CLUSTER KEYSLOT", key))
    for start, end, primary, *_ in masters[0].execute_command("CLUSTER SLOTS"):
        if start <= slot <= end:
            port = int(primary[1])
            return [c.connection_pool.connection_kwargs["port"] for c in masters].index(port)
    raise AssertionError(f"slot {slot} is not served")


def test_every_key_of_a_queue_hashes_to_one_slot_on_one_master(
    cluster: RedisCluster, masters: list[redis.Redis]
) -> None:
    backend = RedisBackend(cluster.url(queue="slots"))
    try:
        n = node(backend)
        backend.enqueue(new(6) + new(1, run_at=HELD) + new(1, "other.Worker"))
        claimed = backend.claim(n, {W: 4})
        error = JobError.reason("ValueError", "no", attempt=1, node=n)
        backend.ack(
            n,
            [
                Outcome(claimed[0].id, claimed[0].token, W),
                Outcome(claimed[1].id, claimed[1].token, W, error, retry_in=60),
                Outcome(claimed[2].id, claimed[2].token, W, error),
            ],
        )
        backend.claim(n, {W: 1})  # RUNNING jobs of a node that then dies...
        node(backend, "dead")
        backend.claim("dead", {W: 1})
        time.sleep(0.25)
        backend.heartbeat(n)
        assert backend.take_over(0.2, 3).dead_nodes == ("dead",)  # ...are taken over
        backend.retry_failed()
        backend.release_scheduled()
        backend.hand_back(n, [(claimed[3].id, claimed[3].token)])
        found = keys_by_master(masters)
    finally:
        backend.close()
    holders = [i for i, keys in enumerate(found) if keys]
    assert len(holders) == 1, found  # one queue, one master
    keys = found[holders[0]]
    assert {"jobs", "payloads", "errors", "seq", "workers", "nodes", "nodeinfo"} <= {
        k.removeprefix("toniq:{slots}:") for k in keys
    }
    slots = {int(masters[0].execute_command("CLUSTER KEYSLOT", k)) for k in keys}
    assert slots == {int(masters[0].execute_command("CLUSTER KEYSLOT", "{slots}"))}
    assert owner(masters, next(iter(keys))) == holders[0]


def test_queues_on_different_masters(cluster: RedisCluster, masters: list[redis.Redis]) -> None:
    # Two queue names whose slots two different masters serve.
    names: dict[int, str] = {}
    for i in range(100):
        names.setdefault(owner(masters, f"{{q{i}}}"), f"q{i}")
        if len(names) == 2:
            break
    (first, one), (second, two) = sorted(names.items())
    backends = [RedisBackend(cluster.url(queue=one)), RedisBackend(cluster.url(queue=two))]
    try:
        jobs = [new(5), new(3)]
        for backend, batch in zip(backends, jobs, strict=True):
            backend.enqueue(batch)
            node(backend, "n1")
        for backend, batch in zip(backends, jobs, strict=True):
            claimed = backend.claim("n1", {W: 10})
            assert [c.id for c in claimed] == [j.id for j in batch]
            report = backend.ack("n1", [Outcome(c.id, c.token, W) for c in claimed])
            assert report.accepted == len(batch)
        assert [b.counts() for b in backends] == [{W: {"done": 5}}, {W: {"done": 3}}]
        found = keys_by_master(masters)
        assert found[first] and all(k.startswith(f"toniq:{{{one}}}:") for k in found[first])
        assert found[second] and all(k.startswith(f"toniq:{{{two}}}:") for k in found[second])
        # Keyless commands (TIME, INFO, CONFIG GET) go to the queue's own master.
        for backend, index in zip(backends, (first, second), strict=True):
            run_id = masters[index].info("server")["run_id"]
            assert backend.server_id() == run_id
            assert any("persists nothing" in w for w in backend.server_warnings())
    finally:
        for backend in backends:
            backend.close()


def test_scripts_load_again_after_the_script_cache_is_flushed(
    cluster: RedisCluster, masters: list[redis.Redis]
) -> None:
    backend = RedisBackend(cluster.url(queue="flushed"))
    try:
        jobs = new(3)
        backend.enqueue(jobs[:1])
        for client in masters:  # e.g. a failover to a replica with an empty script cache
            client.script_flush()
        backend.enqueue(jobs[1:])
        n = node(backend)
        claimed = backend.claim(n, {W: 3})
        assert [c.id for c in claimed] == [j.id for j in jobs]
    finally:
        backend.close()


def test_cluster_urls() -> None:
    shown = "redis://h:1"
    assert parse_cluster("redis://h:1/0?max_connections=9", shown) == (
        "redis://h:1/0?max_connections=9",
        None,
    )
    assert parse_cluster("redis://h:1/0?cluster=yes&max_connections=9", shown) == (
        "redis://h:1/0?max_connections=9",
        [],
    )
    assert parse_cluster("rediss://h:1?cluster=true&startup_nodes=a:2,[::1]:3", shown) == (
        "rediss://h:1",
        [("a", 2), ("::1", 3)],
    )
    assert parse_cluster("redis://h:1/0?cluster=no", shown) == ("redis://h:1/0", None)
    for bad in (
        "redis://h:1/2?cluster=yes",  # no database but 0 on a cluster
        "redis://h:1?db=1&cluster=yes",
        "unix:///tmp/r.sock?cluster=yes",
        "redis://h:1?cluster=maybe",
        "redis://h:1?cluster=yes&startup_nodes=a",
        "redis://h:1?startup_nodes=a:2",
        "redis://h:1?cluster=yes&max_connections=x",
    ):
        with pytest.raises(ConfigurationError):
            from_url(bad)
    backend = from_url("redis://:s3cret@h:1/0?cluster=yes&queue=q")
    assert isinstance(backend, RedisBackend) and backend.cluster and "s3cret" not in backend.url
    backend.close()
    single = from_url("redis://h:1/0")
    assert isinstance(single, RedisBackend) and not single.cluster
    single.close()


def test_extra_startup_nodes_are_used_when_the_first_is_down(cluster: RedisCluster) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    seeds = ",".join(f"127.0.0.1:{port}" for port in cluster.ports[1:])
    backend = from_url(f"redis://127.0.0.1:{dead}/0?cluster=yes&startup_nodes={seeds}&queue=seeded")
    try:
        backend.enqueue(new(2))
        assert backend.counts() == {W: {"available": 2}}
    finally:
        backend.close()


def test_configuring_needs_no_cluster_and_enqueue_fails_fast() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = from_url(f"redis://127.0.0.1:{port}/0?cluster=yes")  # nothing listens there
    started = time.monotonic()
    with pytest.raises(EnqueueError):
        backend.enqueue(new(1))
    with pytest.raises(StoreError):
        backend.claim("n", {W: 1})
    assert time.monotonic() - started < 2
    backend.close()
