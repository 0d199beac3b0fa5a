"""Failures with real processes: a job that kills its node, a node killed while a job waits
for its retry, retries and their backoff across processes. Real SQLite file, real SIGKILL,
no mocks.

The harness (node processes started with ``python -m toniq worker``, the ledger, waiting on
conditions against deadlines) is ``tests/proc_harness.py``; the workers are in
``tests/fixtures/procjobs.py``. Each test prints what it measured (see it with ``-s``).
"""

from __future__ import annotations

import collections
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

import pytest

import toniq
from tests.proc_harness import Entry, Procs, keys
from tests.proc_harness import procs as procs  # the fixture, for the tests of this module
from toniq.job import NODE_LOST
from toniq.serialization import make_job

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
    pytest.mark.timeout(120),
]

#: The node-death tests use a shorter takeover timeout than tests/test_processes.py.
TAKEOVER_TIMEOUT = 1.0
#: How many times a job's node may die under it before the job fails (max_node_deaths).
DEATHS = 3
#: Normal jobs beside the poison pill.
NORMAL = 200


def enqueue(procs: Procs, jobs: list[tuple[str, str]]) -> list[str]:
    """Store ``(worker, key)`` jobs in this order, in one transaction; their ids."""
    now = time.time()
    keys = procs.store.keyring
    new = [make_job(keys, worker, (key,), enqueued_at=now) for worker, key in jobs]
    procs.store.backend.enqueue(new)
    return [job.id for job in new]


def get(procs: Procs, job_id: str) -> toniq.JobRecord:
    job = procs.store.get_job(job_id)
    assert job is not None, f"job {job_id} is not stored"
    return job


def node_pid(node_id: str | None) -> int:
    """The pid in a node id (``<host>-<pid>-<random>``)."""
    assert node_id is not None
    return int(node_id.rsplit("-", 2)[1])


def one(entries: list[Entry]) -> Entry:
    assert len(entries) == 1, entries
    return entries[0]


# -- a job that kills its node ---------------------------------------------------------------


@dataclass(frozen=True)
class Death:
    label: str
    pid: int
    code: int
    seen_at: float


class Fleet:
    """Keeps ``size`` node processes running, as a process supervisor would: a node that
    dies of SIGKILL is replaced by a new one (``node1``, ``node2``, ...); any other exit
    fails the test. Call :meth:`tend` while waiting."""

    def __init__(self, procs: Procs, size: int, **env: Any) -> None:
        self.procs = procs
        self.env = env
        self.live: list[str] = []
        self.deaths: list[Death] = []
        self.started = 0
        for _ in range(size):
            self._start()

    def _start(self) -> None:
        self.started += 1
        label = f"node{self.started}"
        self.procs.node(label, **self.env)
        self.live.append(label)

    def tend(self) -> None:
        for label in list(self.live):
            proc = self.procs.children[label]
            code = proc.poll()
            if code is None:
                continue
            self.live.remove(label)
            self.deaths.append(Death(label, proc.pid, code, time.time()))
            if code != -signal.SIGKILL:
                pytest.fail(f"{label} exited with {code}:\n{self.procs.output(label)}")
            if len(self.deaths) > DEATHS:
                pytest.fail(f"more than {DEATHS} node deaths: {self.deaths}")
            self._start()


def start_fleet(procs: Procs) -> Fleet:
    fleet = Fleet(
        procs,
        2,
        PROCJOBS_TAKEOVER_TIMEOUT=TAKEOVER_TIMEOUT,
        PROCJOBS_MAX_NODE_DEATHS=DEATHS,
    )
    procs.wait_nodes(2, alive=tuple(fleet.live))
    return fleet


def wait_settled(procs: Procs, fleet: Fleet, poison_id: str) -> None:
    """Tend the fleet until the poison job failed and no normal job is left to run."""

    def settled() -> bool:
        fleet.tend()
        counts = procs.store.counts()
        normal = counts.get("procjobs.Noop", {})
        finished = normal.get("done", 0) + normal.get("failed", 0)
        return get(procs, poison_id).state == toniq.JobState.FAILED and finished == NORMAL

    procs.wait_until(settled, "the poison job to fail and every normal job to finish")


def check_poison_outcome(procs: Procs, fleet: Fleet, poison_id: str) -> None:
    poison = get(procs, poison_id)
    failed = collections.Counter(
        (job.worker, *(e.type for e in job.errors)) for job in procs.store.failed_jobs(limit=500)
    )
    # The poison failed, and only the poison: every normal job finished.
    assert procs.store.counts() == {
        "procjobs.Noop": {"done": NORMAL},
        "procjobs.Poison": {"failed": 1},
    }, failed
    expected = {f"noop-{i}" for i in range(NORMAL)}
    assert set(keys(procs.events("done"))) == expected
    assert set(keys(procs.events("start"))) == expected | {"poison"}

    # It failed for its node deaths: exactly DEATHS NodeLost errors, one per dead node, each
    # run given its attempt back (a lost run does not count as a retry).
    assert poison.state == toniq.JobState.FAILED
    assert [e.type for e in poison.errors] == [NODE_LOST] * DEATHS
    assert [e.attempt for e in poison.errors] == [1] * DEATHS
    # Exactly DEATHS nodes died, each of SIGKILL by the poison: it ran on each, and nowhere else.
    assert [d.code for d in fleet.deaths] == [-signal.SIGKILL] * DEATHS
    dead_pids = sorted(d.pid for d in fleet.deaths)
    poison_runs = [e for e in procs.events("start") if e.key == "poison"]
    assert sorted(e.pid for e in poison_runs) == dead_pids
    assert sorted(node_pid(e.node) for e in poison.errors) == dead_pids

    # Measured: from a death (as the supervisor saw it) to the poison's next run elsewhere.
    runs = sorted(e.at for e in poison_runs)
    seen = sorted(d.seen_at for d in fleet.deaths)
    takeovers = [f"{start - death:.2f}s" for death, start in zip(seen, runs[1:], strict=False)]
    print(f"deaths={len(fleet.deaths)} poison rerun after a death: {takeovers}")

    # The fleet is healthy: the nodes alive now stop cleanly.
    procs.check_alive(*fleet.live)
    for label in fleet.live:
        assert procs.stop(label) == 0
    assert procs.store.nodes() == []


def test_poison_job_goes_to_failed_after_n_node_deaths(procs: Procs) -> None:
    """The issue's acceptance: the poison-pill job ends in failed after N node deaths while
    the other jobs all finish. The poison waits in the middle of a backlog."""
    fleet = start_fleet(procs)
    jobs = [("procjobs.Noop", f"noop-{i}") for i in range(NORMAL)]
    jobs.insert(NORMAL // 2, ("procjobs.Poison", "poison"))
    poison_id = enqueue(procs, jobs)[NORMAL // 2]
    wait_settled(procs, fleet, poison_id)
    check_poison_outcome(procs, fleet, poison_id)


def test_poison_job_alone_goes_to_failed_after_n_node_deaths(procs: Procs) -> None:
    """The same, with the poison the only job while it kills nodes; the normal jobs come
    once it failed, to show the fleet kept working."""
    fleet = start_fleet(procs)
    (poison_id,) = enqueue(procs, [("procjobs.Poison", "poison")])

    def poison_failed() -> bool:
        fleet.tend()
        return get(procs, poison_id).state == toniq.JobState.FAILED

    procs.wait_until(poison_failed, "the poison job to fail")
    enqueue(procs, [("procjobs.Noop", f"noop-{i}") for i in range(NORMAL)])
    wait_settled(procs, fleet, poison_id)
    check_poison_outcome(procs, fleet, poison_id)


# -- retries across processes ------------------------------------------------------------------


def test_node_killed_while_a_job_waits_for_its_retry(procs: Procs) -> None:
    """The issue's acceptance: a node is killed while a job waits for its retry; another
    node runs the retry on time with the right attempt number."""
    backoff = 2.0  # FailsFirst waits n × PROCJOBS_BACKOFF before retry n
    env = {"PROCJOBS_BACKOFF": backoff, "PROCJOBS_TAKEOVER_TIMEOUT": TAKEOVER_TIMEOUT}
    procs.node("n1", **env)
    procs.node("n2", **env)
    nodes = {node.pid: node for node in procs.wait_nodes(2, alive=("n1", "n2"))}
    (job_id,) = enqueue(procs, [("procjobs.FailsFirst", "flaky")])

    # One node (A) runs the first attempt, which fails; the retry is stored (A's hook
    # records it after that). The other node is B.
    retrying = procs.wait_until(
        lambda: procs.events("retrying:1"), "the retry to be stored", alive=("n1", "n2")
    )
    a_label = one(retrying).label
    b_label = "n2" if a_label == "n1" else "n1"
    a, b = procs.children[a_label], procs.children[b_label]
    fail = one(procs.events("fail"))
    assert (fail.label, one(procs.events("run:1")).label) == (a_label, a_label)
    waiting = get(procs, job_id)
    assert (waiting.state, waiting.attempt, waiting.node) == (toniq.JobState.SCHEDULED, 1, None)
    assert [(e.type, e.attempt, e.node) for e in waiting.errors] == [
        ("RuntimeError", 1, nodes[a.pid].id)
    ]
    assert waiting.run_at is not None
    due = waiting.run_at
    assert fail.at + backoff <= due <= fail.at + backoff + 0.5, (fail.at, due)

    # A dies while the job waits; B presumes it dead and removes it.
    os.kill(a.pid, signal.SIGKILL)
    killed_at = time.time()
    assert a.wait(10) == -signal.SIGKILL
    procs.wait_until(
        lambda: [n.pid for n in procs.store.nodes()] == [b.pid],
        "B to remove dead A",
        alive=(b_label,),
    )
    removed_at = time.time()
    # A held nothing, so its death leaves the job alone: no NodeLost, history intact.
    during = procs.store.get_job(job_id)
    if during is not None:  # None: B already ran the retry (only on a very slow machine)
        assert [(e.type, e.attempt) for e in during.errors] == [("RuntimeError", 1)]
        assert (during.state, during.attempt) in {
            (toniq.JobState.SCHEDULED, 1),
            (toniq.JobState.RUNNING, 2),
        }, during

    procs.wait_until(lambda: procs.events("succeeded:2"), "B to finish the retry", alive=(b_label,))
    retry = one(procs.events("start", b_label))
    assert retry.key == "flaky"
    assert one(procs.events("run:2", b_label)).key == "flaky"  # the second run ...
    assert one(procs.events("succeeded:2", b_label)).key == job_id  # ... is toniq's attempt 2
    # On time: not before the backoff, and at most a poll (plus slack) after it.
    assert due <= retry.at < fail.at + backoff + 1.0, (fail.at, due, retry.at)
    assert procs.store.counts() == {"procjobs.FailsFirst": {"done": 1}}
    assert procs.store.get_job(job_id) is None
    assert [(e.key, e.label) for e in sorted(procs.events("start"), key=lambda e: e.at)] == [
        ("flaky", a_label),
        ("flaky", b_label),
    ]
    print(
        f"A killed {killed_at - fail.at:.2f}s after the failure, removed by B "
        f"{removed_at - killed_at:.2f}s later; retry started {retry.at - fail.at:.3f}s after "
        f"the failure ({retry.at - due:.3f}s after it was due; backoff {backoff}s)"
    )
    assert procs.stop(b_label) == 0


def test_retries_follow_the_backoff_across_processes(procs: Procs) -> None:
    retries, step = 3, 0.3  # AlwaysFails: retries=3, retry n waits n × 0.3 s
    procs.node("solo", PROCJOBS_RETRIES=retries, PROCJOBS_BACKOFF=step)
    procs.wait_nodes(1, alive=("solo",))
    (job_id,) = enqueue(procs, [("procjobs.AlwaysFails", "doomed")])

    def failed() -> toniq.JobRecord | None:
        job = procs.store.get_job(job_id)
        return job if job is not None and job.state == toniq.JobState.FAILED else None

    job = procs.wait_until(failed, "the job to fail for good", alive=("solo",))
    assert procs.stop("solo") == 0  # and its log is complete

    runs = retries + 1
    starts, fails = procs.events("start"), procs.events("fail")
    assert [e.key for e in starts] == ["doomed"] * runs
    assert [e.key for e in fails] == ["doomed"] * runs
    gaps = [starts[n].at - fails[n - 1].at for n in range(1, runs)]
    for n, gap in enumerate(gaps, start=1):
        assert n * step <= gap < n * step + 0.5, (n, gaps)
    backoffs = [round(n * step, 3) for n in range(1, runs)]
    print(f"retry gaps {[round(g, 3) for g in gaps]}s for backoffs {backoffs}s")

    assert job.attempt == runs
    assert [(e.type, e.attempt) for e in job.errors] == [
        ("RuntimeError", n) for n in range(1, runs + 1)
    ]
    assert all(e.message == "doomed always fails" for e in job.errors)
    assert procs.store.counts() == {"procjobs.AlwaysFails": {"failed": 1}}

    # One WARNING per run that was retried, one ERROR when it gave up.
    log = (procs.log_dir / "solo.err").read_text()

    def lines(level: str) -> list[str]:
        pattern = rf"^\d\d:\d\d:\d\d {level} +toniq: job {job_id} .*$"
        return re.findall(pattern, log, flags=re.MULTILINE)

    warnings, errors = lines("WARNING"), lines("ERROR")
    assert len(warnings) == retries, warnings
    for n, line in enumerate(warnings, start=1):
        assert f"failed on attempt {n} of {runs}" in line, line
    assert len(errors) == 1, errors
    assert f"failed on attempt {runs} of {runs}, no retries left" in errors[0]
