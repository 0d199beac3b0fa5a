"""Fault acceptance tests of the Redis backend (issue 4), against real ``redis-server``
processes that the tests start: long jobs beside an idle node (acceptance 4), Redis itself
killed and restarted under long jobs, or frozen with SIGSTOP, under running nodes (5), a
producer SIGKILLed in the middle of enqueueing (6), and the key count after 100,000 jobs (7).

The kill storm (acceptance 2), the SIGSTOPped node (3), Redis ``kill -9`` under a producer
(5) and the poison job on Redis moved to the chaos suite (``tests/chaos/``), which accounts
for every job in a SQLite ledger and runs them on SQLite too.

The harness is ``tests/proc_harness.py`` (node processes via ``python -m toniq worker``, a
ledger of per-process append-only files, polling against deadlines); the workers and the
producer are in ``tests/fixtures/procjobs.py``. Each test has its own ``redis-server`` (see
``tests/redis_server.py``) and prints what it measured (see it with ``pytest -s``).

Redis is inspected directly, with the key layout of ``toniq/backends/redis.py``'s docstring:
every key of the default queue starts with ``toniq:{default}:``.
"""

from __future__ import annotations

import collections
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

import toniq
from tests.chaos.rig import poll
from tests.conftest import TEST_SECRET
from tests.proc_harness import Procs
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
#: Keys a finished workload may leave behind: counters only (and the nodes while they run;
#: "rate", the throughput ring, expires after two idle minutes).
COUNTERS = {"count:done", "seq", "workers", "rate"}
NODE_KEYS = {"nodes", "nodeinfo"}
AOF_ALWAYS = ["--appendonly", "yes", "--appendfsync", "always"]


# -- the rig: one redis-server, the processes, a raw client -------------------------------------


@dataclass
class Rig:
    server: RedisServer
    procs: Procs
    client: redis.Redis

    def keys(self) -> dict[str, str]:
        """Every key of the queue (without the prefix) -> its type, but for "idle", the
        wake-up flag an empty claim leaves, which expires within 30 s, and the keys of
        hand-over that expire by themselves."""
        keys = {
            key.decode()[len(PREFIX) :]: self.client.type(key).decode()
            for key in self.client.scan_iter(match=PREFIX + "*", count=1000)
        }
        if keys.pop("idle", None) is not None:
            assert 0 < self.client.pttl(PREFIX + "idle") <= 30_000
        # What a node killed while armed for a hand-over leaves expires within seconds
        # (-2: it just did).
        for key in [k for k in keys if k.startswith(("armed", "waiting:", "handoff:"))]:
            ttl = self.client.pttl(PREFIX + key)
            assert ttl <= 600_000 and ttl != -1, key
            del keys[key]
        return keys

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


# -- 4. Redis restarts and outages (the kill -9 under load: tests/chaos/test_redis_outages.py) --

REDIS_TAKEOVER = 1.5


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
    baseline = len(baseline_keys)
    assert set(baseline_keys) == COUNTERS | NODE_KEYS, baseline_keys

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
    after = len(rig.keys())
    # Besides those, only keys that expire by themselves: the "idle" flag, and the node's
    # hand-over arming (it waits, idle, for the next job; it comes and goes, so one KEYS
    # reads every key of the server at one moment).
    everything = {k.decode() for k in rig.client.keys("*")}
    assert all(k.startswith(PREFIX) for k in everything), everything  # nothing elsewhere
    expiring = {k[len(PREFIX) :] for k in everything} - set(rig.keys())
    assert all(k == "idle" or k.startswith(("armed", "waiting:")) for k in expiring), expiring
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
