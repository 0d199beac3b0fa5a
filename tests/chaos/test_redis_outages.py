"""Chaos scenarios that hit Redis and the network while a producer enqueues and two nodes run
jobs: Redis killed with ``kill -9`` and restarted with AOF ``appendfsync always`` (3), and
network faults from a TCP proxy between every toniq process and Redis: connection resets,
added latency, and a black hole longer than the client timeout (4).

The producer is a process of its own (``procjobs.produce_main``): it records each enqueue
attempt in the SQLite ledger before the call, and whether the call returned or raised after
it. The test itself watches Redis directly, never through the proxy.
"""

from __future__ import annotations

import collections
import statistics
import sys
import time
from collections.abc import Callable

import pytest

from tests.chaos.proxy import Proxy
from tests.chaos.rig import AOF_ALWAYS, Rig, poll

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
    pytest.mark.timeout(180),
]

TAKEOVER = 1.5
NODES = ("n1", "n2")


def start_workload(rig: Rig, **env: str) -> Callable[[], None]:
    """Two nodes and a producer of ``Noop`` jobs (an attempt every 2 ms), with ``env`` (the
    proxy's URL); returns what stops the producer."""
    for label in NODES:
        rig.node(TAKEOVER, label=label, **env)
    rig.wait_started(*NODES)
    stop_file = rig.procs.tmp / "stop-producer"
    rig.procs.run_fixture(
        "producer", "produce_main", "single", 0, 0.002, PROCJOBS_STOP=stop_file, **env
    )
    rig.live.append("producer")

    def stop() -> None:
        stop_file.touch()
        code = rig.procs.children["producer"].wait(30)
        assert code == 0, rig.procs.output("producer")
        rig.live.remove("producer")

    return stop


def wait_stored(rig: Rig, more: int) -> None:
    target = rig.ledger.count("stored") + more
    rig.procs.wait_until(
        lambda: rig.ledger.count("stored") >= target,
        f"the producer to store {more} more jobs",
        alive=tuple(rig.live),
    )


def wait_both_run_after(rig: Rig, moment: float) -> float:
    """Until both nodes ran a job that started after ``moment``; how long after it."""
    rig.procs.wait_until(
        lambda: all(rig.ledger.count("done", label, after=moment) for label in NODES),
        "both nodes to run jobs again",
        timeout=20,
        alive=tuple(rig.live),
    )
    return time.time() - moment


def settle(
    rig: Rig,
) -> tuple[bool, dict[str, int], collections.Counter[str], list[float], int, int]:
    """After the faults: wait until every stored job ran and the store is clean, then
    (drained, residue, enqueue error types, their latencies, live nodes presumed dead,
    ghost claims handed back)."""
    drained = poll(lambda: rig.ledger.keys("stored") <= rig.ledger.keys("done"), 30, 0.1)
    residue = rig.wait_clean(timeout=10)
    types, latencies = enqueue_errors(rig)
    presumed = count_logged(rig, "was presumed dead (no heartbeat")
    ghosts = count_logged(rig, "claim reply was lost")
    return drained, residue, types, latencies, presumed, ghosts


def enqueue_errors(rig: Rig) -> tuple[collections.Counter[str], list[float]]:
    """The producer's failed enqueues: their exception types, and how long each call took."""
    types: collections.Counter[str] = collections.Counter()
    latencies = []
    rows = rig.ledger._conn.execute("SELECT event FROM events WHERE event LIKE 'error:%'")
    for (event,) in rows:
        _, kind, ms = event.split(":")
        types[kind] += 1
        latencies.append(int(ms) / 1000)
    return types, latencies


def count_logged(rig: Rig, text: str) -> int:
    return sum(rig.log(label).count(text) for label in NODES)


# -- 3. Redis kill -9 and restart ---------------------------------------------------------------

OUTAGE = 2.0
OUTAGES = 2


def test_redis_kill_9_and_restart(make_rig: Callable[..., Rig]) -> None:
    """Redis with AOF ``appendfsync always`` is killed with ``kill -9`` twice while two nodes
    run and a producer enqueues, and restarted on the same port and directory after 2 s. The
    nodes resume by themselves; every job whose enqueue returned runs; enqueues during the
    outage raise toniq.EnqueueError within a bounded time; nothing stays claimed."""
    rig = make_rig("redis", *AOF_ALWAYS)
    assert rig.server is not None and rig.client is not None
    assert rig.client.config_get("appendfsync") == {"appendfsync": "always"}
    stop_producer = start_workload(rig)
    recovery = []
    for _ in range(OUTAGES):
        wait_stored(rig, 300)
        killed = time.time()
        rig.server.kill()
        time.sleep(OUTAGE)  # the outage itself
        rig.server.restart()
        back = time.time()
        rig.ledger.fault("redis-kill-9", "redis", None, killed, back)
        recovery.append(wait_both_run_after(rig, back))
    wait_stored(rig, 100)
    stop_producer()

    drained, residue, types, latencies, presumed, ghosts = settle(rig)
    account = rig.report(
        "redis-kill-9",
        residue,
        note=f"AOF always, {OUTAGES} outages of {OUTAGE}s; enqueue errors {dict(types)}, "
        f"latency max {max(latencies, default=0):.2f}s median "
        f"{statistics.median(latencies) if latencies else 0:.2f}s; both nodes ran jobs "
        f"{[f'{r:.2f}s' for r in recovery]} after Redis answered; live nodes presumed dead: "
        f"{presumed}; ghost claims handed back: {ghosts}",
    )
    assert drained, account.summary()
    account.check()
    assert types, "no enqueue failed: the outage was not observed"
    assert set(types) == {"toniq.errors.EnqueueError"}, types
    assert max(latencies) <= 3.0, latencies
    assert presumed == 0
    # The nodes lived through it and are still registered, and stop cleanly.
    assert {n.pid for n in rig.procs.store.nodes()} == {rig.pid(label) for label in NODES}
    rig.stop_all()
    assert rig.residue() == {}


# -- 4. network faults ----------------------------------------------------------------------------

CLIENT_TIMEOUT = 1.0  # the Redis URL's timeout= for the nodes and the producer
RESETS = 3
LATENCY = 0.1
LATENCY_FOR = 2.0
HOLE = 2.5  # longer than the client timeout, and than the lease


def test_network_faults_through_a_proxy(make_rig: Callable[..., Rig]) -> None:
    """The nodes and the producer reach Redis through a TCP proxy, with ``timeout=1``. The
    proxy resets every connection three times, then adds 0.1 s to every hop for 2 s, then
    becomes a black hole for 2.5 s (every socket open, nothing moving) and lets through what
    waited. Afterwards: every job whose enqueue returned runs, enqueues that raised did so
    within the timeout, no live node was presumed dead, and no ghost job remains: once the
    queue drained, no node holds a claim and nothing is left in Redis."""
    rig = make_rig("redis")
    assert rig.server is not None
    with Proxy(("127.0.0.1", rig.server.port)) as proxy:
        url = proxy.url(timeout=str(CLIENT_TIMEOUT))
        stop_producer = start_workload(rig, TONIQ_URL=url)
        wait_stored(rig, 300)
        closed = []
        for _ in range(RESETS):
            at = time.time()
            closed.append(proxy.reset())
            rig.ledger.fault("reset", f"{closed[-1]} connections", None, at)
            wait_stored(rig, 100)
        recovered_reset = wait_both_run_after(rig, time.time())

        at = time.time()
        proxy.latency(LATENCY)
        time.sleep(LATENCY_FOR)  # the fault's duration
        stored_slow = rig.ledger.count("stored", after=at)
        proxy.heal()
        rig.ledger.fault("latency", f"{LATENCY}s", None, at, time.time())

        at = time.time()
        proxy.black_hole()
        time.sleep(HOLE)  # the fault's duration
        proxy.heal()
        healed = time.time()
        rig.ledger.fault("black-hole", f"{HOLE}s", None, at, healed)
        recovered = wait_both_run_after(rig, healed)
        wait_stored(rig, 200)
        stop_producer()

        drained, residue, types, latencies, presumed, ghosts = settle(rig)
        account = rig.report(
            "network",
            residue,
            note=f"resets closed {closed} connections (both nodes ran again "
            f"{recovered_reset:.2f}s later); {stored_slow} enqueues stored under "
            f"{LATENCY}s latency; black hole {HOLE}s, both nodes ran again {recovered:.2f}s "
            f"after; enqueue errors {dict(types)}, latency max {max(latencies, default=0):.2f}s; "
            f"live nodes presumed dead: {presumed}; ghost claims handed back: {ghosts}; "
            f"proxy accepted {proxy.accepted} connections",
        )
        assert drained, account.summary()
        account.check()
        assert sum(closed) >= RESETS, closed
        assert stored_slow > 0, "nothing got through the added latency"
        assert types, "no enqueue failed: the black hole was not observed"
        assert set(types) <= {"toniq.errors.EnqueueError"}, types
        assert max(latencies) <= CLIENT_TIMEOUT * 2 + 0.5, latencies
        assert presumed == 0
        # No ghost job: the live nodes are registered and hold nothing (wait_clean above:
        # no claims, no job records), and they stop cleanly.
        assert {n.pid for n in rig.procs.store.nodes()} == {rig.pid(label) for label in NODES}
        rig.stop_all()
    assert rig.residue() == {}


# -- what is not protected: Redis without persistence -------------------------------------------

UNSAVED = 200
UNSAVED_DELAY = 2.0


def test_redis_without_persistence_loses_its_jobs_on_restart(
    make_rig: Callable[..., Rig],
) -> None:
    """The limit the guarantees page states: a Redis without persistence that restarts has
    forgotten every job. 200 jobs delayed by 2 s are stored, Redis is killed with ``kill -9``
    and restarted before they are due: none of them ever runs, the ledger counts each one
    lost (the checker fails on it), and the node logs that the server restarted."""
    rig = make_rig("redis")  # RedisServer's default: no AOF, no RDB
    assert rig.server is not None and rig.client is not None
    assert rig.client.config_get("appendonly") == {"appendonly": "no"}
    node = rig.node(TAKEOVER)
    rig.wait_started(node)
    rig.enqueue(
        "procjobs.Noop", [(f"unsaved-{i}",) for i in range(UNSAVED)], time.time() + UNSAVED_DELAY
    )
    killed = time.time()
    rig.server.kill()
    rig.server.restart()
    rig.ledger.fault("redis-kill-9", "redis (no persistence)", None, killed, time.time())
    rig.procs.wait_until(
        lambda: "the store's server restarted" in rig.log(node),
        "the node to notice the restart",
        alive=(node,),
    )
    # Well past the jobs' due time, with the node claiming all along: nothing comes.
    time.sleep(UNSAVED_DELAY + 1.0)  # waiting for jobs that must not run
    residue = rig.residue()
    account = rig.report(
        "redis-no-persistence",
        residue,
        note="expected: every stored job lost (Redis kept nothing across its restart)",
    )
    assert len(account.lost) == UNSAVED and rig.ledger.count("start") == 0
    with pytest.raises(AssertionError, match="lost=200"):
        account.check()
    rig.stop_all()
