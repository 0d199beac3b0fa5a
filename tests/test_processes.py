"""Acceptance tests with real processes: node processes started with ``python -m toniq worker``,
enqueuing processes, one real SQLite file, real signals (SIGTERM, SIGKILL). No mocks.

Jobs are observed through a ledger outside the system under test (see
``tests/fixtures/procjobs.py``): every run appends ``start``/``done`` lines to a file of its
process. Tests wait by polling the ledger or the store against a deadline, never by sleeping
for a guessed time.

Children get the store as ``TONIQ_URL``; the worker module passes it to ``toniq.configure``
with short timers, and ``toniq worker`` runs the app the module configured.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import toniq
from tests.proc_harness import (
    HEARTBEAT,
    ROOT,
    TAKEOVER_INTERVAL,
    TAKEOVER_TIMEOUT,
    Procs,
    keys,
)
from tests.proc_harness import procs as procs  # the fixture, for the tests of this module
from toniq.backends import from_url
from toniq.job import NewJob
from toniq.serialization import dumps_unsigned as dumps

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
    pytest.mark.timeout(180),
]

# -- the tests -----------------------------------------------------------------------------


def test_two_nodes_two_enqueuers_share_one_sqlite_file(procs: Procs) -> None:
    per_enqueuer = 5_000
    total = 2 * per_enqueuer
    procs.node("node1")
    procs.node("node2")
    nodes = ("node1", "node2")
    procs.wait_nodes(2, alive=nodes)

    procs.start_enqueue("a", "procjobs.Noop", per_enqueuer)
    procs.start_enqueue("b", "procjobs.Noop", per_enqueuer)
    ids = procs.finish_enqueue("a") + procs.finish_enqueue("b")
    assert len(set(ids)) == total

    procs.wait_until(
        lambda: len(procs.events("done")) >= total, f"{total} jobs done", timeout=60, alive=nodes
    )
    # The ledger line is written before the node acknowledges; wait for the store too.
    procs.wait_until(
        lambda: procs.store.counts().get("procjobs.Noop", {}).get("done", 0) >= total,
        "the store to count every job done",
        alive=nodes,
    )
    assert procs.stop("node1") == 0
    assert procs.stop("node2") == 0

    expected = {f"{prefix}-{i}" for prefix in "ab" for i in range(per_enqueuer)}
    starts, dones = procs.events("start"), procs.events("done")
    assert set(keys(starts)) == expected, "lost or unknown jobs"
    assert [k for k, n in keys(starts).items() if n > 1] == [], "jobs run more than once"
    assert keys(dones) == keys(starts)
    # Both nodes took part: jobs arrive one transaction at a time while both poll every 10ms.
    per_node = collections.Counter(e.label for e in dones)
    assert per_node["node1"] > 0 and per_node["node2"] > 0, per_node
    # Nothing is left in the store but the done counter, and both nodes unregistered.
    assert procs.store.counts() == {"procjobs.Noop": {"done": total}}
    assert procs.store.nodes() == []


def test_sigkilled_node_jobs_are_taken_over_within_the_window(procs: Procs) -> None:
    n = 20
    # On A the jobs sleep far longer than the test; on B they finish at once.
    procs.node("A", PROCJOBS_SECONDS=30)
    procs.wait_nodes(1, alive=("A",))
    ids = procs.enqueue("jobs", "procjobs.Sleepy", n)
    expected = {f"jobs-{i}" for i in range(n)}
    procs.wait_until(
        lambda: set(keys(procs.events("start", "A"))) == expected,
        "A to start every job",
        alive=("A",),
    )
    b = procs.node("B", PROCJOBS_SECONDS=0.1)
    procs.wait_nodes(2, alive=("A", "B"))
    assert procs.events("start", "B") == []

    killed_at = time.time()
    os.kill(procs.children["A"].pid, signal.SIGKILL)
    assert procs.children["A"].wait(10) == -signal.SIGKILL

    procs.wait_until(
        lambda: set(keys(procs.events("done", "B"))) == expected,
        "B to finish every job",
        timeout=TAKEOVER_TIMEOUT + 15,
        alive=("B",),
    )
    assert procs.events("done", "A") == []
    starts_b = procs.events("start", "B")
    assert keys(starts_b) == collections.Counter(expected), "each job starts once on B"
    delays = sorted(e.at - killed_at for e in starts_b)
    # A's last heartbeat was at most one interval before the kill: B may take its jobs
    # once that heartbeat is takeover_timeout old, and looks every takeover_interval.
    earliest = TAKEOVER_TIMEOUT - HEARTBEAT - 0.3
    latest = TAKEOVER_TIMEOUT + 2 * TAKEOVER_INTERVAL + 1.5
    assert earliest <= delays[0] and delays[-1] <= latest, (earliest, delays, latest)

    procs.wait_until(
        lambda: procs.store.counts() == {"procjobs.Sleepy": {"done": n}},
        "the store to count every job done and keep none",
        alive=("B",),
    )
    # Completed, so deleted: their NodeLost error history went with them.
    assert [procs.store.get_job(job_id) for job_id in ids] == [None] * n
    assert [node.pid for node in procs.store.nodes()] == [b.pid]  # A was removed
    assert procs.stop("B") == 0


def test_sigterm_hands_unfinished_jobs_back_at_once(procs: Procs) -> None:
    n = 10
    # A takeover timeout far beyond the test: only the handing back can free the jobs.
    procs.node("first", "--grace-period", "0.5", PROCJOBS_SECONDS=30, PROCJOBS_TAKEOVER_TIMEOUT=120)
    (first,) = procs.wait_nodes(1, alive=("first",))
    ids = procs.enqueue("jobs", "procjobs.Sleepy", n)
    procs.wait_until(
        lambda: len(procs.events("start", "first")) == n, "every job started", alive=("first",)
    )
    records = [procs.store.get_job(job_id) for job_id in ids]
    assert all(r is not None and r.state == toniq.JobState.RUNNING for r in records)
    assert {r.node for r in records if r is not None} == {first.id}

    sent = time.monotonic()
    assert procs.stop("first") == 0
    assert time.monotonic() - sent < 5.0

    for job_id in ids:
        record = procs.store.get_job(job_id)
        assert record is not None
        assert (record.state, record.attempt, record.node, record.errors) == (
            toniq.JobState.AVAILABLE,
            0,
            None,
            [],
        )
    assert procs.store.counts() == {"procjobs.Sleepy": {"available": n}}
    assert procs.store.nodes() == []
    assert procs.events("done", "first") == []

    procs.node("second", PROCJOBS_SECONDS=0.05)
    procs.wait_until(
        lambda: (
            keys(procs.events("done", "second"))
            == collections.Counter(f"jobs-{i}" for i in range(n))
        ),
        "the second node to finish every job",
        alive=("second",),
    )
    procs.wait_until(
        lambda: procs.store.counts() == {"procjobs.Sleepy": {"done": n}},
        "the store to count every job done",
        alive=("second",),
    )
    assert procs.stop("second") == 0


def test_sigterm_with_sync_jobs_exits_promptly(procs: Procs) -> None:
    n = 3
    procs.node("first", "--grace-period", "0.5", PROCJOBS_SECONDS=8, PROCJOBS_TAKEOVER_TIMEOUT=120)
    procs.wait_nodes(1, alive=("first",))
    ids = procs.enqueue("jobs", "procjobs.SyncSleepy", n)
    procs.wait_until(
        lambda: len(procs.events("start", "first")) == n, "every job started", alive=("first",)
    )
    assert procs.stop("first", timeout=4.0) == 0
    records = [procs.store.get_job(job_id) for job_id in ids]
    assert all(r is not None and r.state == toniq.JobState.AVAILABLE for r in records)


def test_burst_mode_exits_when_no_job_is_left(procs: Procs) -> None:
    n = 50
    procs.enqueue("jobs", "procjobs.Noop", n)
    proc = procs.node("burst", "--burst")
    assert proc.wait(30) == 0
    assert keys(procs.events("done", "burst")) == collections.Counter(f"jobs-{i}" for i in range(n))
    assert procs.store.counts() == {"procjobs.Noop": {"done": n}}
    assert procs.store.nodes() == []


def test_worker_sets_the_switch_interval(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'switch.sqlite3'}"
    code = (
        "import sys\n"
        "from toniq.cli import main\n"
        "main(['worker', 'tests.workers', '--url', sys.argv[1], '--burst', '--log-level',"
        " 'WARNING', *sys.argv[2:]], standalone_mode=False)\n"
        "print('interval', sys.getswitchinterval())\n"
    )

    def interval(*options: str) -> float:
        done = subprocess.run(
            [sys.executable, "-c", code, url, *options],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return float(done.stdout.split("interval")[-1])

    assert interval() == pytest.approx(0.0005)  # the default: --switch-interval 0.0005
    assert interval("--switch-interval", "0.002") == pytest.approx(0.002)
    assert interval("--switch-interval", "0") == pytest.approx(0.005)  # Python's own


def test_cli_basics(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONIQ_")}
    # Should a run get as far as opening a store, keep it out of the repository.
    env["TONIQ_URL"] = f"sqlite:///{tmp_path / 'cli.sqlite3'}"

    def toniq_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "toniq", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    version = toniq_cli("--version")
    assert version.returncode == 0
    assert toniq.__version__ in version.stdout

    missing = toniq_cli("worker", "no_such_module_xyz")
    assert missing.returncode == 2, missing
    assert "no_such_module_xyz" in missing.stderr

    empty = tmp_path / "no_workers_here.py"
    empty.write_text("VALUE = 1\n")
    none = toniq_cli("worker", str(empty))
    assert none.returncode != 0, none
    assert "no_workers_here" in none.stderr and "defines no toniq workers" in none.stderr
    assert not (tmp_path / "cli.sqlite3").exists()


def test_unknown_worker_job_fails_and_node_keeps_running(procs: Procs) -> None:
    backend = from_url(procs.url)
    unknown_id, garbage_id = uuid.uuid4().hex, uuid.uuid4().hex
    try:
        backend.enqueue(
            [
                NewJob(unknown_id, "procjobs.NoSuchWorker", dumps(("x",), {}), time.time()),
                NewJob(garbage_id, "procjobs.Noop", b"garbage", time.time()),
            ]
        )
    finally:
        backend.close()
    procs.node("node", PROCJOBS_UNKNOWN_TIMEOUT=0.5)

    def failed(job_id: str) -> toniq.JobRecord | None:
        record = procs.store.get_job(job_id)
        return record if record is not None and record.state == toniq.JobState.FAILED else None

    unknown = procs.wait_until(
        lambda: failed(unknown_id), "the unknown-worker job to fail", alive=("node",)
    )
    garbage = procs.wait_until(
        lambda: failed(garbage_id), "the garbage job to fail", alive=("node",)
    )
    assert unknown.last_error is not None and garbage.last_error is not None
    assert unknown.last_error.type == "toniq.CannotRun"
    assert "procjobs.NoSuchWorker" in unknown.last_error.message
    assert garbage.last_error.type == "toniq.CannotRun"
    assert re.search(r"read.*argument", garbage.last_error.message), garbage.last_error
    assert garbage.payload == b"garbage"  # the raw bytes are kept
    assert procs.events("start") == []

    # The node kept running: a job enqueued now still runs.
    procs.enqueue("after", "procjobs.Noop", 1)
    procs.wait_until(lambda: procs.events("done", "node"), "the later job to run", alive=("node",))
    assert [e.key for e in procs.events("done", "node")] == ["after-0"]
    assert procs.stop("node") == 0
    assert garbage_id in procs.output("node")  # its failure was logged


def test_node_runs_the_app_its_module_configured(procs: Procs) -> None:
    # TONIQ_URL is set for the node too: it must not replace the module's app and timers.
    procs.enqueue("jobs", "procjobs.ShowSettings", 1)
    proc = procs.node("burst", "--burst")
    assert proc.wait(30) == 0
    events = [e.event for e in procs.ledger()]
    assert events == [f"settings:{HEARTBEAT}:{TAKEOVER_TIMEOUT}"]
