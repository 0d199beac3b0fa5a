"""Fault acceptance tests of the Redis backend (issue 4), against real ``redis-server``
processes that the tests start: node processes SIGKILLed in a storm (acceptance 2), a node
SIGSTOPped past its lease (a zombie, 3), long jobs beside an idle node (4), Redis itself
killed with ``kill -9`` and restarted, or frozen with SIGSTOP, under running nodes (5), a
producer SIGKILLed in the middle of enqueueing (6), and the key count after 100,000 jobs (7).

The harness is ``tests/proc_harness.py`` (node processes via ``python -m toniq worker``, a
ledger of per-process append-only files, polling against deadlines); the workers and the
producer are in ``tests/fixtures/procjobs.py``. Each test has its own ``redis-server`` (see
``tests/redis_server.py``) and prints what it measured (see it with ``pytest -s``).

Redis is inspected directly, with the key layout of ``toniq/backends/redis.py``'s docstring:
every key of the default queue starts with ``toniq:{default}:``.
"""

from __future__ import annotations

import collections
import itertools
import json
import math
import os
import random
import re
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

import toniq
from tests.conftest import TEST_SECRET
from tests.proc_harness import Entry, Procs
from tests.redis_server import RedisServer
from toniq.job import NewJob
from toniq.serialization import make_job, open_payload
from toniq.signing import Keyring, parse_secrets

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
    pytest.mark.timeout(180),
]

PREFIX = "toniq:{default}:"
HEARTBEAT = 0.2
TAKEOVER_INTERVAL = 0.2
#: Keys a finished workload may leave behind: counters only (and the nodes while they run).
COUNTERS = {"count:done", "seq", "workers"}
NODE_KEYS = {"nodes", "nodeinfo"}
AOF_ALWAYS = ["--appendonly", "yes", "--appendfsync", "always"]


# -- the rig: one redis-server, the processes, a raw client -------------------------------------


@dataclass
class Rig:
    server: RedisServer
    procs: Procs
    client: redis.Redis

    def keys(self) -> dict[str, str]:
        """Every key of the queue (without the prefix) -> its type."""
        return {
            key.decode()[len(PREFIX) :]: self.client.type(key).decode()
            for key in self.client.scan_iter(match=PREFIX + "*", count=1000)
        }

    def done(self, worker: str) -> int:
        return int(self.client.hget(PREFIX + "count:done", worker) or 0)

    def server_time(self) -> float:
        sec, usec = self.client.time()
        return sec + usec / 1e6


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(*server_args: str) -> Rig:
        """Start this test's redis-server (with these extra options) and its processes."""
        assert not rigs, "one rig per test"
        server = RedisServer(server_args, directory=tmp_path / "redis")
        server.dir.mkdir(exist_ok=True)
        server.start()
        procs = Procs(tmp_path, url=server.url())
        rig = Rig(server, procs, server.client())
        rigs.append(rig)
        return rig

    try:
        yield make
    finally:
        for rig in rigs:
            try:
                rig.procs.close()
            finally:
                rig.client.close()
                rig.server.cleanup()
            for label in rig.procs.children:  # shown by pytest when the test failed
                print(rig.procs.output(label))


def node_env(takeover: float, **extra: Any) -> dict[str, Any]:
    return {
        "PROCJOBS_HEARTBEAT": HEARTBEAT,
        "PROCJOBS_TAKEOVER_TIMEOUT": takeover,
        "PROCJOBS_TAKEOVER_INTERVAL": TAKEOVER_INTERVAL,
        **extra,
    }


#: Jobs written straight to Redis are signed with the session's key (tests/conftest.py).
KEYS = Keyring(parse_secrets(TEST_SECRET))


def new_jobs(worker: str, calls: list[tuple[Any, ...]]) -> list[NewJob]:
    now = time.time()
    return [make_job(KEYS, worker, args, enqueued_at=now) for args in calls]


def poll(condition: Callable[[], Any], timeout: float, every: float = 0.02) -> bool:
    """Poll ``condition`` until it is truthy (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(every)


def runs_by_key(entries: list[Entry], event: str = "start") -> dict[str, list[Entry]]:
    runs: dict[str, list[Entry]] = collections.defaultdict(list)
    for e in sorted(entries, key=lambda e: e.at):
        if e.event == event:
            runs[e.key].append(e)
    return runs


def log_of(procs: Procs, label: str) -> str:
    path = procs.log_dir / f"{label}.err"
    return path.read_text(errors="replace") if path.exists() else ""


def wait_started(procs: Procs, *labels: str) -> None:
    """Wait until each node logged that it started (registered and checked the store)."""
    procs.wait_until(
        lambda: all("started on" in log_of(procs, label) for label in labels),
        f"{', '.join(labels)} to start",
        alive=labels,
    )


def node_id_of(procs: Procs, label: str) -> str | None:
    pid = procs.children[label].pid
    return next((n.id for n in procs.store.nodes() if n.pid == pid), None)


# -- 1. kill storm ------------------------------------------------------------------------------

STORM_JOBS = 10_000
STORM_NODES = 3
STORM_SECONDS = 30.0
KILL_EVERY = 2.0
STORM_TAKEOVER = 1.5


@dataclass
class Ledger:
    """The accounting of one workload: every job by its key."""

    attempted: set[str]
    stored: set[str]
    started: set[str]
    done: set[str]
    runs: dict[str, list[Entry]]
    lost: set[str] = field(init=False)
    unexpected: set[str] = field(init=False)
    duplicates: dict[str, list[Entry]] = field(init=False)

    def __post_init__(self) -> None:
        self.lost = self.stored - self.done
        self.unexpected = (self.started | self.done) - self.attempted
        self.duplicates = {k: r for k, r in self.runs.items() if len(r) > 1}

    def summary(self) -> str:
        extra = sum(len(r) - 1 for r in self.duplicates.values())
        return (
            f"attempted={len(self.attempted)} stored={len(self.stored)} "
            f"started={len(self.started)} done={len(self.done)} lost={len(self.lost)} "
            f"unexpected={len(self.unexpected)} duplicates={len(self.duplicates)} "
            f"(extra runs {extra})"
        )


def test_kill_storm_loses_no_job(make_rig: Callable[..., Rig]) -> None:
    """Acceptance 2: three nodes on one Redis; a random node is SIGKILLed every 2 s for 30 s
    and restarted at once, while 10,000 jobs (naps of 0.05-0.5 s, half ``async def`` and half
    ``def``) arrive at a steady rate; then the fleet drains. Every job runs, nothing else
    runs, every duplicate run follows the kill of the node of the run before it, and Redis
    keeps nothing but counters."""
    rig = make_rig()
    procs = rig.procs
    # max_node_deaths high: the kills here are not the jobs' fault, and a job killed alone
    # twice would otherwise (rightly) be failed as a poison pill.
    env = node_env(STORM_TAKEOVER, PROCJOBS_MAX_NODE_DEATHS=1000)
    labels = (f"node{i}" for i in itertools.count(1))
    live: list[str] = []

    def start_node() -> None:
        label = next(labels)
        procs.node(label, **env)
        live.append(label)

    for _ in range(STORM_NODES):
        start_node()
    procs.wait_nodes(STORM_NODES, alive=tuple(live))

    seed = random.randrange(2**32)
    rng = random.Random(seed)
    backend = procs.store.backend
    attempted: set[str] = set()
    stored: set[str] = set()
    kills: dict[int, tuple[float, float]] = {}  # pid -> (SIGKILL sent, death seen)
    in_flight_at_kill: list[int] = []
    enqueued = 0
    began = time.monotonic()
    next_kill = began + KILL_EVERY
    # All jobs arrive during the first STORM_SECONDS - 2 s; kills go on to STORM_SECONDS.
    arrival = STORM_SECONDS - 2.0
    while True:
        now = time.monotonic()
        elapsed = now - began
        if elapsed >= STORM_SECONDS and enqueued == STORM_JOBS:
            break
        due = min(STORM_JOBS, int(STORM_JOBS * elapsed / arrival) + 1)
        if due > enqueued:
            batch = [f"j{i}" for i in range(enqueued, due)]
            attempted.update(batch)
            # Even jobs are async (on the event loop), odd ones def (in the node's threads).
            for parity, worker in enumerate(("procjobs.Nap", "procjobs.SyncNap")):
                calls = [
                    (f"j{i}", rng.uniform(0.05, 0.5))
                    for i in range(enqueued, due)
                    if i % 2 == parity
                ]
                if calls:
                    backend.enqueue(new_jobs(worker, calls))
            stored.update(batch)  # enqueue returned: stored
            enqueued = due
        for label in list(live):
            code = procs.children[label].poll()
            if code is not None:
                pytest.fail(f"{label} exited by itself with {code}:\n{procs.output(label)}")
        if now >= next_kill and elapsed < STORM_SECONDS:
            next_kill += KILL_EVERY
            registered = {n.pid for n in procs.store.nodes()}
            candidates = [lb for lb in live if procs.children[lb].pid in registered]
            if candidates:
                victim = rng.choice(candidates)
                pid = procs.children[victim].pid
                sent = time.time()
                procs.kill(victim)
                kills[pid] = (sent, time.time())  # it died in between
                live.remove(victim)
                starts = runs_by_key([e for e in procs.ledger() if e.pid == pid])
                dones = runs_by_key([e for e in procs.ledger() if e.pid == pid], "done")
                in_flight_at_kill.append(sum(1 for k in starts if k not in dones))
                start_node()
        time.sleep(0.02)  # pacing of arrivals and kills, not a synchronisation
    storm_end = time.monotonic()

    # Drain: every job counted done exactly once by the store.
    workers = ("procjobs.Nap", "procjobs.SyncNap")
    drained = poll(lambda: sum(map(rig.done, workers)) >= STORM_JOBS, timeout=60, every=0.1)
    drain_time = time.monotonic() - storm_end
    entries = procs.ledger()
    runs = runs_by_key(entries)
    ledger = Ledger(
        attempted,
        stored,
        set(runs),
        {e.key for e in entries if e.event == "done"},
        runs,
    )
    print(
        f"\nkill storm (seed {seed}): {len(kills)} kills in {STORM_SECONDS:.0f}s, jobs in "
        f"flight at each kill {in_flight_at_kill}; drained {drain_time:.1f}s after the storm"
    )
    print(f"ledger: {ledger.summary()}")
    assert drained, f"not drained: {ledger.summary()}; lost e.g. {sorted(ledger.lost)[:10]}"
    assert ledger.attempted == ledger.stored
    assert ledger.lost == set(), ledger.summary()
    assert ledger.unexpected == set(), ledger.summary()
    assert sum(map(rig.done, workers)) == STORM_JOBS  # one terminal outcome per job

    # Every duplicate run follows the kill of the node of the run before it.
    unexplained = []
    rerun_after_kill = []
    for key, key_runs in ledger.duplicates.items():
        for before, after in itertools.pairwise(key_runs):
            killed = kills.get(before.pid)
            if killed is None or not (before.at <= killed[1] and killed[0] <= after.at):
                unexplained.append((key, before, after, killed))
            else:
                rerun_after_kill.append(after.at - killed[0])
    assert unexplained == [], unexplained[:10]
    assert len(kills) >= STORM_SECONDS / KILL_EVERY - 2
    assert ledger.duplicates, "no kill caught a job in flight: the storm tested nothing"
    print(
        f"duplicate runs: {len(rerun_after_kill)}, each after its node's kill; rerun "
        f"{min(rerun_after_kill):.2f}-{max(rerun_after_kill):.2f}s after the kill (median "
        f"{statistics.median(rerun_after_kill):.2f}s; takeover timeout {STORM_TAKEOVER}s)"
    )

    # The killed nodes are forgotten (by takeover), then the live ones stop cleanly.
    alive_pids = {procs.children[label].pid for label in live}
    assert poll(
        lambda: (
            {n.pid for n in procs.store.nodes()} == alive_pids
            and not rig.client.exists(PREFIX + "claimers")
        ),
        timeout=STORM_TAKEOVER + 10,
    ), (procs.store.nodes(), rig.keys())
    for label in live:
        assert procs.stop(label) == 0, procs.output(label)
    left = rig.keys()
    assert set(left) <= COUNTERS, left
    assert procs.store.counts() == {
        "procjobs.Nap": {"done": STORM_JOBS // 2},
        "procjobs.SyncNap": {"done": STORM_JOBS // 2},
    }


# -- 2. zombie ----------------------------------------------------------------------------------

ZOMBIE_TAKEOVER = 1.0
ZOMBIE_JOB = 3.0


def test_zombie_node_late_ack_is_rejected(make_rig: Callable[..., Rig]) -> None:
    """Acceptance 3: node A runs a 3 s job and is SIGSTOPped; B takes the job over after the
    lease and finishes it; A is SIGCONTed, its job ends at once (its deadline passed while
    stopped) and its late ack is rejected. The job ends done exactly once; A keeps running
    and registers again."""
    rig = make_rig()
    procs = rig.procs
    env = node_env(ZOMBIE_TAKEOVER)
    a = procs.node("A", **env)
    procs.wait_nodes(1, alive=("A",))
    a_id = node_id_of(procs, "A")
    (job,) = new_jobs("procjobs.Nap", [("zombie", ZOMBIE_JOB)])
    procs.store.backend.enqueue([job])
    procs.wait_until(lambda: procs.events("start", "A"), "A to start the job", alive=("A",))
    b = procs.node("B", **env)
    procs.wait_nodes(2, alive=("A", "B"))

    stopped_at = time.time()
    os.kill(a.pid, signal.SIGSTOP)
    b_start = procs.wait_until(
        lambda: procs.events("start", "B"), "B to take the job over", timeout=10, alive=("B",)
    )[0]
    takeover = b_start.at - stopped_at
    procs.wait_until(
        lambda: rig.done("procjobs.Nap") == 1, "B to finish the job", timeout=10, alive=("B",)
    )
    assert procs.store.get_job(job.id) is None
    assert a_id not in {n.id for n in procs.store.nodes()}  # presumed dead, forgotten
    assert procs.events("done", "A") == []

    resumed_at = time.time()
    os.kill(a.pid, signal.SIGCONT)
    procs.wait_until(
        lambda: "acknowledgement(s) rejected" in log_of(procs, "A"),
        "A's late ack to be rejected",
        timeout=10,
        alive=("A", "B"),
    )
    procs.wait_until(
        lambda: a_id in {n.id for n in procs.store.nodes()},
        "A to register again",
        timeout=10,
        alive=("A", "B"),
    )
    log = log_of(procs, "A")
    assert re.search(r"\b1 acknowledgement\(s\) rejected: .*" + job.id, log), log
    assert "was presumed dead" in log and "registering again" in log
    # Exactly one terminal state: done once, nothing else anywhere.
    assert procs.store.counts() == {"procjobs.Nap": {"done": 1}}
    assert procs.store.get_job(job.id) is None
    assert [
        (e.event, e.label) for e in sorted(procs.ledger(), key=lambda e: e.at) if e.key == "zombie"
    ] == [
        ("start", "A"),
        ("start", "B"),
        ("done", "B"),
        ("done", "A"),
    ]
    # A keeps working: new jobs run (on either node), and both stop cleanly.
    procs.store.backend.enqueue(new_jobs("procjobs.Noop", [(f"after-{i}",) for i in range(20)]))
    procs.wait_until(lambda: rig.done("procjobs.Noop") == 20, "the jobs after", alive=("A", "B"))
    print(
        f"\nzombie: lease {ZOMBIE_TAKEOVER}s, B took the job over {takeover:.2f}s after A's "
        f"SIGSTOP; A stopped {resumed_at - stopped_at:.2f}s; late ack rejected; "
        f"jobs after: A ran {len(procs.events('done', 'A')) - 1}, "
        f"B ran {len(procs.events('done', 'B')) - 1}"
    )
    assert ZOMBIE_TAKEOVER - HEARTBEAT - 0.1 <= takeover <= ZOMBIE_TAKEOVER + 2.0, takeover
    assert procs.stop("A") == 0
    assert procs.stop("B") == 0
    assert b.returncode == 0


# -- 3. long jobs keep their lease --------------------------------------------------------------

LONG_TAKEOVER = 1.0
LONG_JOB = 5.0


def test_long_jobs_are_not_taken_over_while_their_node_lives(
    make_rig: Callable[..., Rig],
) -> None:
    """Acceptance 4: jobs that sleep (async and in threads) and jobs that burn the CPU in
    pure Python (in threads, and one on the event loop itself) for 5 lease periods, with a
    second idle node watching: none is taken over, each runs once."""
    rig = make_rig()
    procs = rig.procs
    env = node_env(LONG_TAKEOVER)
    procs.node("A", **env)
    procs.wait_nodes(1, alive=("A",))
    a_id = node_id_of(procs, "A")
    assert a_id is not None
    kinds = [
        ("procjobs.Nap", 3),
        ("procjobs.SyncNap", 3),
        ("procjobs.Spin", 2),
        ("procjobs.AsyncSpin", 1),  # last: it blocks A's event loop until it ends
    ]
    jobs = []
    for worker, n in kinds:
        jobs += new_jobs(worker, [(f"{worker}-{i}", LONG_JOB) for i in range(n)])
    procs.store.backend.enqueue(jobs)
    total = len(jobs)
    procs.wait_until(
        lambda: len(procs.events("start", "A")) == total, "A to start every job", alive=("A",)
    )
    started = max(e.at for e in procs.events("start", "A"))
    procs.node("B", **env)
    procs.wait_nodes(2, alive=("A", "B"))
    watching = time.time()

    # While they run: A's lease stays fresh and no job gets an error (a takeover would
    # record a NodeLost error on the job).
    ages: list[float] = []
    errors_seen: list[Any] = []

    def finished() -> bool:
        beat = rig.client.zscore(PREFIX + "nodes", a_id)
        ages.append(math.inf if beat is None else rig.server_time() - beat)
        errs = rig.client.hgetall(PREFIX + "errors")
        if errs:
            errors_seen.append(errs)
        return len(procs.events("done")) >= total

    procs.wait_until(finished, "every job to finish", timeout=LONG_JOB + 20, alive=("A", "B"))
    ended = max(e.at for e in procs.events("done"))
    procs.wait_until(
        lambda: sum(rig.done(w) for w, _ in kinds) == total,
        "the store to count every job done",
        alive=("A", "B"),
    )
    window = ended - watching
    print(
        f"\nlong jobs: {total} jobs of {LONG_JOB}s ({LONG_JOB / LONG_TAKEOVER:.0f} lease "
        f"periods); B watched for {window:.2f}s ({window / LONG_TAKEOVER:.1f} lease periods); "
        f"A's heartbeat age: max {max(ages):.3f}s over {len(ages)} samples (lease "
        f"{LONG_TAKEOVER}s); jobs ran {ended - started:.2f}s after the last start"
    )
    assert errors_seen == []
    assert max(ages) < LONG_TAKEOVER, max(ages)
    assert window >= 3 * LONG_TAKEOVER, window
    starts = procs.events("start")
    assert collections.Counter(e.key for e in starts) == collections.Counter(
        f"{w}-{i}" for w, n in kinds for i in range(n)
    ), "each job runs exactly once"
    assert {e.label for e in starts} == {"A"}
    assert "rejected" not in log_of(procs, "A") and "presumed dead" not in log_of(procs, "A")
    assert "took over" not in log_of(procs, "B")
    assert procs.store.counts() == {w: {"done": n} for w, n in kinds}
    assert procs.stop("A") == 0
    assert procs.stop("B") == 0


# -- 4. Redis kill -9 and restart ---------------------------------------------------------------

OUTAGE = 2.0
OUTAGES = 2
REDIS_TAKEOVER = 1.5


def test_redis_kill_9_and_restart(make_rig: Callable[..., Rig]) -> None:
    """Acceptance 5: Redis with AOF ``appendfsync always`` is killed with ``kill -9`` twice
    while two nodes run and a producer enqueues, and restarted on the same port and directory
    after 2 s. The nodes resume without being restarted; every job whose enqueue returned
    runs; enqueues during the outage raise toniq.EnqueueError within a bounded time; no job
    stays RUNNING under a live node."""
    rig = make_rig(*AOF_ALWAYS)
    procs = rig.procs
    assert rig.client.config_get("appendfsync") == {"appendfsync": "always"}
    env = node_env(REDIS_TAKEOVER)
    procs.node("n1", **env)
    procs.node("n2", **env)
    nodes = ("n1", "n2")
    wait_started(procs, *nodes)
    stop_file = procs.tmp / "stop-producer"
    procs.run_fixture("producer", "produce_main", "single", 0, 0.002, PROCJOBS_STOP=stop_file)

    def count(event: str) -> int:
        return sum(1 for e in procs.ledger() if e.event == event)

    kills: list[tuple[float, float]] = []  # (killed at, answering again at)
    for _ in range(OUTAGES):
        target = count("stored") + 300
        procs.wait_until(
            lambda: count("stored") >= target,  # noqa: B023 (called at once)
            "the producer to store jobs",
            alive=(*nodes, "producer"),
        )
        killed = time.time()
        rig.server.kill()
        time.sleep(OUTAGE)  # the outage itself
        rig.server.restart()
        back = time.time()
        kills.append((killed, back))
        # Both nodes resume by themselves: each runs jobs again.
        procs.wait_until(
            lambda: all(
                any(e.at > back for e in procs.events("done", label))  # noqa: B023
                for label in nodes
            ),
            "both nodes to run jobs again",
            timeout=20,
            alive=(*nodes, "producer"),
        )
    stop_file.touch()
    assert procs.children["producer"].wait(30) == 0, procs.output("producer")

    entries = procs.ledger()
    produced = [e for e in entries if e.label == "producer"]
    begun = {e.key for e in produced if e.event == "begin"}
    stored = {e.key for e in produced if e.event == "stored"}
    failed = [e for e in produced if e.event.startswith("error:")]
    failed_keys = {e.key for e in failed}
    assert begun == stored | failed_keys and not stored & failed_keys

    def all_ran() -> bool:
        return stored <= {e.key for e in procs.ledger() if e.event == "done"}

    ran = poll(all_ran, timeout=30, every=0.1)
    entries = procs.ledger()
    runs = runs_by_key(entries)
    done = {e.key for e in entries if e.event == "done"}
    ledger = Ledger(begun, stored, set(runs), done, runs)
    error_types = collections.Counter(e.event.split(":")[1] for e in failed)
    latencies = [int(e.event.split(":")[2]) / 1000 for e in failed]
    ambiguous = failed_keys & set(runs)  # raised, yet stored (the reply was lost)
    recovery = []
    for _, back in kills:
        firsts = [
            min((e.at for e in procs.events("done", label) if e.at > back), default=math.inf)
            for label in nodes
        ]
        recovery.append(f"{max(firsts) - back:.2f}s")
    presumed = sum(log_of(procs, label).count("was presumed dead (no heartbeat") for label in nodes)
    ghosts = sum(log_of(procs, label).count("claim reply was lost") for label in nodes)
    print(
        f"\nredis kill -9 x{OUTAGES} ({OUTAGE}s outages, AOF always): ledger {ledger.summary()}"
        f"\nenqueue errors: {len(failed)} {dict(error_types)}, latency max "
        f"{max(latencies, default=0):.3f}s median "
        f"{statistics.median(latencies) if latencies else 0:.3f}s; raised but stored anyway: "
        f"{len(ambiguous)}\nboth nodes ran jobs again {recovery} after Redis answered; "
        f"nodes presumed dead after an outage: {presumed}; ghost claims handed back: {ghosts}"
    )
    assert ran, f"jobs whose enqueue returned never ran: {sorted(ledger.lost)[:20]}"
    assert ledger.unexpected == set()
    assert failed, "no enqueue failed: the outage was not observed"
    assert set(error_types) == {"toniq.errors.EnqueueError"}, error_types
    assert max(latencies) <= 3.0, latencies
    procs.check_alive(*nodes)
    pids = {procs.children[label].pid for label in nodes}

    # No ghost: nothing left RUNNING (or at all) under the live nodes, which stay registered.
    def clean() -> bool:
        return (
            not rig.client.exists(PREFIX + "jobs")
            and not rig.client.exists(PREFIX + "claimers")
            and not rig.client.exists(PREFIX + "count:running")
            and {n.pid for n in procs.store.nodes()} == pids
        )

    if not poll(clean, timeout=10, every=0.1):
        records = {k.decode(): v.decode() for k, v in rig.client.hgetall(PREFIX + "jobs").items()}
        pytest.fail(f"left after the drain: {rig.keys()}; records: {records}")
    assert set(rig.keys()) <= COUNTERS | NODE_KEYS
    for label in nodes:
        assert procs.stop(label) == 0


def test_redis_restart_does_not_take_over_the_jobs_of_live_nodes(
    make_rig: Callable[..., Rig],
) -> None:
    """Acceptances 4 and 5 together: node A runs long jobs, nodes B and C are idle; Redis
    (AOF always) is killed three times and restarted after outages longer than the lease. Every
    node lived all along, so none may be presumed dead and A's jobs must not be taken over:
    each runs once, on A."""
    rig = make_rig(*AOF_ALWAYS)
    procs = rig.procs
    env = node_env(REDIS_TAKEOVER)
    procs.node("A", **env)
    wait_started(procs, "A")
    n, seconds, outages = 4, 12.0, 3
    procs.store.backend.enqueue(
        new_jobs("procjobs.Nap", [(f"long-{i}", seconds) for i in range(n)])
    )
    procs.wait_until(lambda: len(procs.events("start", "A")) == n, "A to start", alive=("A",))
    nodes = ("A", "B", "C")
    procs.node("B", **env)
    procs.node("C", **env)
    wait_started(procs, *nodes)

    def all_beating() -> bool:
        beats = rig.client.zrange(PREFIX + "nodes", 0, -1, withscores=True)
        now = rig.server_time()
        return len(beats) == len(nodes) and all(now - beat < 0.5 for _, beat in beats)

    for _ in range(outages):
        time.sleep(1.0)  # the pace of the outages (one every 3 s), not a synchronisation
        rig.server.kill()
        time.sleep(REDIS_TAKEOVER + 0.5)  # the outage itself: longer than the lease
        rig.server.restart()
        procs.wait_until(all_beating, "every node to heart-beat again", alive=nodes)
    finished = poll(lambda: rig.done("procjobs.Nap") == n, timeout=seconds + 10, every=0.1)
    starts = procs.events("start")
    presumed = {
        label: log_of(procs, label).count("was presumed dead (no heartbeat") for label in nodes
    }
    print(
        f"\nRedis down {outages}x {REDIS_TAKEOVER + 0.5}s under long jobs: runs "
        f"{sorted(collections.Counter((e.key, e.label) for e in starts).items())}; live "
        f"nodes presumed dead: {presumed}; store: {procs.store.counts()}"
    )
    assert presumed == dict.fromkeys(nodes, 0), presumed
    assert [e.label for e in starts] == ["A"] * n, "a live node's jobs were taken over"
    assert finished, procs.store.counts()
    assert procs.store.counts() == {"procjobs.Nap": {"done": n}}
    for label in nodes:
        assert procs.stop(label) == 0


def test_worker_started_while_redis_is_down(make_rig: Callable[..., Rig]) -> None:
    """A node started while Redis is down either waits for it (and then runs jobs) or exits
    with a non-zero status and a message naming the store; never a silent success."""
    rig = make_rig()
    procs = rig.procs
    rig.server.kill()
    node = procs.node("early", **node_env(REDIS_TAKEOVER))
    exited = poll(lambda: node.poll() is not None, timeout=5.0, every=0.05)
    if exited:
        print(f"\nworker started while Redis is down exited with {node.returncode}")
        assert node.returncode != 0, f"exit {node.returncode}: {procs.output('early')!r}"
        assert "127.0.0.1" in log_of(procs, "early")
        return
    rig.server.restart()
    procs.wait_until(lambda: node_id_of(procs, "early"), "the node to register", alive=("early",))
    procs.store.backend.enqueue(new_jobs("procjobs.Noop", [("late",)]))
    procs.wait_until(lambda: rig.done("procjobs.Noop") == 1, "the job to run", alive=("early",))
    assert procs.stop("early") == 0


FREEZE_TIMEOUT = 2.0  # the Redis URL's timeout (toniq's default)


def test_redis_frozen_past_the_timeout(make_rig: Callable[..., Rig]) -> None:
    """Acceptance 5, the other outage: Redis stops answering (SIGSTOP) without closing
    connections, for longer than the client timeout, right after jobs were enqueued. Enqueues
    fail with toniq.EnqueueError after the timeout; the nodes' claims time out while Redis
    holds them, and Redis runs them once it is SIGCONTed, with nobody reading the replies:
    ghost claims. The nodes must hand them back, and every job must run."""
    rig = make_rig()
    procs = rig.procs
    env = node_env(REDIS_TAKEOVER)
    procs.node("n1", **env)
    procs.node("n2", **env)
    nodes = ("n1", "n2")
    wait_started(procs, *nodes)
    backend = procs.store.backend
    backend.enqueue(new_jobs("procjobs.Noop", [("warm-up",)]))
    procs.wait_until(lambda: rig.done("procjobs.Noop") == 1, "the warm-up job", alive=nodes)
    assert rig.server.process is not None
    redis_pid = rig.server.process.pid

    n = 50
    backend.enqueue(new_jobs("procjobs.Noop", [(f"ghost-{i}",) for i in range(n)]))
    os.kill(redis_pid, signal.SIGSTOP)  # at once: the nodes' next claims will wait in Redis
    frozen_at = time.monotonic()
    latencies, errors = [], []
    try:
        for i in range(2):
            began = time.monotonic()
            with pytest.raises(toniq.EnqueueError) as raised:
                backend.enqueue(new_jobs("procjobs.Noop", [(f"frozen-{i}",)]))
            latencies.append(time.monotonic() - began)
            errors.append(str(raised.value))
    finally:
        frozen = time.monotonic() - frozen_at
        os.kill(redis_pid, signal.SIGCONT)

    wanted = {f"ghost-{i}" for i in range(n)}
    ran = poll(
        lambda: wanted <= {e.key for e in procs.ledger() if e.event == "done"},
        timeout=30,
        every=0.1,
    )
    stuck = {k.decode(): json.loads(v) for k, v in rig.client.hgetall(PREFIX + "jobs").items()}
    handed = sum(log_of(procs, label).count("claim reply was lost") for label in nodes)
    presumed = sum(log_of(procs, label).count("was presumed dead (no heartbeat") for label in nodes)
    frozen_ran = {e.key for e in procs.events("done")} & {"frozen-0", "frozen-1"}
    print(
        f"\nRedis frozen {frozen:.2f}s: enqueue raised EnqueueError after "
        f"{[round(x, 2) for x in latencies]}s ({errors[0]!r}); enqueues that raised but ran "
        f"anyway: {sorted(frozen_ran)}; ghost-claim hand-backs logged: {handed}; nodes "
        f"presumed dead: {presumed}; jobs left: "
        f"{ {k: (v['state'], v.get('node')) for k, v in stuck.items()} }"
    )
    assert all(FREEZE_TIMEOUT - 0.1 <= x <= 3.0 for x in latencies), latencies
    procs.check_alive(*nodes)
    assert ran, f"jobs never ran; left in Redis: {stuck}"
    assert poll(
        lambda: (
            not rig.client.exists(PREFIX + "jobs") and not rig.client.exists(PREFIX + "claimers")
        ),
        timeout=10,
    ), rig.client.hgetall(PREFIX + "jobs")
    runs = collections.Counter(e.key for e in procs.events("start"))
    assert set(runs) <= wanted | {"warm-up", "frozen-0", "frozen-1"}
    for label in nodes:
        assert procs.stop(label) == 0


# -- 5. producer SIGKILLed mid-enqueue ----------------------------------------------------------

PRODUCER_ROUNDS = 6
MAX_BULK = 3000


def check_stored_jobs(rig: Rig) -> dict[str, str]:
    """Every stored job is whole: a record and a payload, AVAILABLE, in exactly one queue
    structure (its worker's ``available`` set, at its seq), and the seq counter matches. No
    node ran: the queue holds exactly what was enqueued. Returns id -> key."""
    c = rig.client
    records = {k.decode(): v for k, v in c.hgetall(PREFIX + "jobs").items()}
    payloads = {k.decode(): v for k, v in c.hgetall(PREFIX + "payloads").items()}
    assert set(records) == set(payloads), "a record without its payload, or the reverse"
    assert not c.exists(PREFIX + "errors")
    workers = {w.decode() for w in c.smembers(PREFIX + "workers")}
    assert workers <= {"procjobs.Noop"}
    placed: dict[str, float] = {}
    for w in workers:
        assert c.zcard(PREFIX + f"scheduled:{w}") == 0
        for member, score in c.zrange(PREFIX + f"available:{w}", 0, -1, withscores=True):
            assert member.decode() not in placed
            placed[member.decode()] = score
    assert set(placed) == set(records), "a queued id without a record, or the reverse"
    keys: dict[str, str] = {}
    seqs = set()
    for job_id, raw in records.items():
        record = json.loads(raw)
        assert record["state"] == "available" and record["attempt"] == 0, record
        assert record["worker"] == "procjobs.Noop"
        assert placed[job_id] == record["seq"]
        seqs.add(record["seq"])
        args, kwargs = open_payload(payloads[job_id], KEYS, job_id=job_id, worker="procjobs.Noop")
        assert kwargs == {} and len(args) == 1, (args, kwargs)
        keys[job_id] = args[0]
    assert len(seqs) == len(records)
    assert int(c.get(PREFIX + "seq") or 0) == len(records) == max(seqs, default=0)
    assert len(set(keys.values())) == len(keys)
    return keys


def test_producer_killed_mid_enqueue_leaves_no_half_written_job(
    make_rig: Callable[..., Rig],
) -> None:
    """Acceptance 6: a producer enqueueing single jobs and bulk batches (up to 3,000 jobs, one
    ``backend.enqueue`` call each) in a tight loop is SIGKILLed, six times, mostly just after
    it began a batch. Each time, every stored job is whole and a batch is stored entirely or
    not at all; then a node runs every stored job exactly once."""
    rig = make_rig()
    procs = rig.procs
    rng = random.Random()
    mid_call = 0
    batches_in_flight: list[tuple[str, int, int]] = []  # (batch, size, how many stored)
    for r in range(PRODUCER_ROUNDS):
        label = f"p{r}"
        proc = procs.run_fixture(label, "produce_main", "mixed", MAX_BULK, 0)
        path = procs.ledger_dir / f"{label}-{proc.pid}.log"

        def lines(path: Path = path) -> list[str]:
            text = path.read_text() if path.exists() else ""
            return text.split("\n")[:-1]

        procs.wait_until(
            lambda: sum(1 for ln in lines() if ln.startswith("bulk-stored")) >= 2,
            "the producer to store two batches",
            alive=(label,),
        )
        if r % 3 == 2:
            time.sleep(rng.uniform(0, 0.05))  # any moment
        else:  # just after it began a batch: most likely while the batch is on its way
            seen = len(lines())
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # no sleep: the batch is on its way now
                now = lines()
                if any(ln.startswith("bulk-begin") for ln in now[seen:]):
                    break
                seen = len(now)
        assert procs.kill(label) == -signal.SIGKILL
        last = lines()[-1].split(" ")
        if last[0] in {"begin"} or last[0].startswith("bulk-begin"):
            mid_call += 1
        keys = set(check_stored_jobs(rig).values())
        if last[0].startswith("bulk-begin"):
            size = int(last[0].split(":")[1])
            got = sum(1 for i in range(size) if f"{last[1]}-{i}" in keys)
            batches_in_flight.append((last[1], size, got))
            assert got in (0, size), f"batch {last[1]}: {got} of {size} jobs stored"

    keys_by_id = check_stored_jobs(rig)
    stored_keys = set(keys_by_id.values())
    entries = procs.ledger()
    returned = {e.key for e in entries if e.event == "stored"}
    for e in entries:
        if e.event.startswith("bulk-stored"):
            returned |= {f"{e.key}-{i}" for i in range(int(e.event.split(":")[1]))}
    attempted = {e.key for e in entries if e.event == "begin"}
    for e in entries:
        if e.event.startswith("bulk-begin"):
            attempted |= {f"{e.key}-{i}" for i in range(int(e.event.split(":")[1]))}
    assert not [e for e in entries if "error" in e.event]
    assert returned <= stored_keys <= attempted
    # At most the call in flight at each kill is stored without having returned.
    assert len(stored_keys - returned) <= sum(size for _, size, _ in batches_in_flight) + (
        PRODUCER_ROUNDS
    )

    began = time.monotonic()
    procs.node("drain", **node_env(1.5, PROCJOBS_CLAIM_BATCH=1000))
    total = len(keys_by_id)
    procs.wait_until(
        lambda: rig.done("procjobs.Noop") == total,
        f"the node to run all {total} stored jobs",
        timeout=60,
        alive=("drain",),
    )
    drain = time.monotonic() - began
    runs = collections.Counter(e.key for e in procs.events("start", "drain"))
    assert set(runs) == stored_keys
    assert set(runs.values()) == {1}
    assert procs.stop("drain") == 0
    assert set(rig.keys()) <= COUNTERS, rig.keys()
    print(
        f"\nproducer killed {PRODUCER_ROUNDS} times, {mid_call} of them inside an enqueue "
        f"call; batches in flight at a kill (batch, size, stored): {batches_in_flight}; "
        f"{total} jobs stored ({len(stored_keys - returned)} stored without the call "
        f"returning), all whole; one node ran them all once in {drain:.1f}s"
    )
    assert mid_call >= 1, "no kill landed inside an enqueue call"


# -- 6. key count after 100,000 jobs ------------------------------------------------------------

MANY = 100_000
ENQUEUE_BATCH = 5_000


def test_keys_back_to_baseline_after_100k_jobs(make_rig: Callable[..., Rig]) -> None:
    """Acceptance 7: after 100,000 jobs succeed, Redis holds as many keys as before them (and
    no job, payload or error entry)."""
    rig = make_rig()
    procs = rig.procs
    # No ledger (the jobs record nothing), and a large claim batch.
    procs.node("node", **node_env(1.5, PROCJOBS_LEDGER="", PROCJOBS_CLAIM_BATCH=2000))
    procs.wait_nodes(1, alive=("node",))
    backend = procs.store.backend
    backend.enqueue(new_jobs("procjobs.Noop", [("warm-up",)]))
    procs.wait_until(lambda: rig.done("procjobs.Noop") == 1, "the warm-up job", alive=("node",))
    baseline_keys = rig.keys()
    baseline = rig.client.dbsize()
    assert set(baseline_keys) == COUNTERS | NODE_KEYS, baseline_keys
    assert baseline == len(baseline_keys)

    began = time.monotonic()
    for start in range(0, MANY, ENQUEUE_BATCH):
        backend.enqueue(
            new_jobs("procjobs.Noop", [(f"k{i}",) for i in range(start, start + ENQUEUE_BATCH)])
        )
    enqueued = time.monotonic() - began
    procs.wait_until(
        lambda: rig.done("procjobs.Noop") == MANY + 1,
        f"{MANY} jobs done",
        timeout=120,
        alive=("node",),
    )
    finished = time.monotonic() - began
    after = rig.client.dbsize()
    print(
        f"\n{MANY} jobs: enqueued in {enqueued:.1f}s, all done after {finished:.1f}s "
        f"({MANY / finished:.0f} jobs/s); keys before {baseline}, after {after}; "
        f"used_memory {rig.client.info('memory')['used_memory_human']}"
    )
    assert after == baseline, rig.keys()
    assert rig.keys() == baseline_keys
    for name in ("jobs", "payloads", "errors", "claimers", "count:running"):
        assert not rig.client.exists(PREFIX + name), name
    assert procs.store.counts() == {"procjobs.Noop": {"done": MANY + 1}}
    assert procs.stop("node") == 0


def test_poison_job_on_redis_goes_to_failed_after_n_node_deaths(
    make_rig: Callable[..., Rig],
) -> None:
    """Issue 3's poison pill, on Redis: it fails after max_node_deaths deaths, alone, while
    the 200 jobs around it all finish."""
    from tests import test_process_failures as poison

    rig = make_rig()
    poison.test_poison_job_goes_to_failed_after_n_node_deaths(rig.procs)
