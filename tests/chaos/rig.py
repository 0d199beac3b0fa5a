"""The rig of one chaos scenario: its store (a private ``redis-server``, or a SQLite file), its
processes (``tests/proc_harness.py``), its SQLite ledger (``tests/chaos/ledger.py``) and the
faults it injects, each recorded in the ledger before the checker reads it.

Every child process gets its environment from one place, :meth:`Procs.env` plus
``procs.child_env`` (the ledger's path; add a secret there once payloads are signed).
"""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.chaos.ledger import Account, Ledger
from tests.conftest import TEST_SECRET
from tests.proc_harness import Procs
from tests.redis_server import RedisServer
from toniq.serialization import make_job
from toniq.signing import Keyring, parse_secrets

#: Every key of the default queue on Redis starts with this (``toniq/backends/redis.py``).
PREFIX = "toniq:{default}:"
#: Keys a finished workload may leave on Redis: counters, and the nodes while they run.
COUNTERS = {"count:done", "seq", "workers"}
NODE_KEYS = {"nodes", "nodeinfo"}
#: The session's signing key (tests/conftest.py), which the node processes get too.
KEYS = Keyring(parse_secrets(TEST_SECRET))
#: Keys that expire by themselves: the throughput ring, the idle flag, and what an armed
#: node leaves when it dies ("armed", "waiting:<worker>", "handoff:<node>"; docs/redis.md).
EXPIRING = {"rate", "idle"}
EXPIRING_PREFIXES = ("armed", "waiting:", "handoff:")
#: What failed jobs keep (only when a scenario expects some).
FAILED_KEYS = {"jobs", "payloads", "errors", "failed", "count:failed"}
AOF_ALWAYS = ("--appendonly", "yes", "--appendfsync", "always")
HEARTBEAT = 0.2
TAKEOVER_INTERVAL = 0.2

#: The summary lines of this session's scenarios, printed at the end of the run.
SUMMARIES: list[str] = []


def poll(condition: Callable[[], Any], timeout: float, every: float = 0.05) -> bool:
    """Poll ``condition`` until it is truthy (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(every)


class Rig:
    """One scenario on one backend (``"redis"`` or ``"sqlite"``)."""

    def __init__(self, tmp_path: Path, backend: str, redis_args: Sequence[str] = ()) -> None:
        self.backend = backend
        self.server: RedisServer | None = None
        self.client: redis.Redis | None = None
        url = None
        if backend == "redis":
            self.server = RedisServer(redis_args, directory=tmp_path / "redis")
            self.server.dir.mkdir(exist_ok=True)
            self.server.start()
            self.client = self.server.client()
            url = self.server.url()
        elif backend != "sqlite":
            raise ValueError(backend)
        self.procs = Procs(tmp_path, url=url)
        self.ledger = Ledger(tmp_path / "ledger.sqlite3")
        self.procs.child_env["PROCJOBS_SQLITE"] = str(self.ledger.path)
        self.live: list[str] = []
        self._labels = (f"node{i}" for i in itertools.count(1))

    def close(self) -> None:
        try:
            self.procs.close()
        finally:
            self.ledger.close()
            if self.client is not None:
                self.client.close()
            if self.server is not None:
                self.server.cleanup()

    # -- nodes ------------------------------------------------------------------------------

    def node(self, takeover: float, label: str | None = None, **env: Any) -> str:
        """Start a node (``nodeN`` unless named) with these timers; it joins :attr:`live`."""
        label = label or next(self._labels)
        self.procs.node(
            label,
            PROCJOBS_HEARTBEAT=HEARTBEAT,
            PROCJOBS_TAKEOVER_TIMEOUT=takeover,
            PROCJOBS_TAKEOVER_INTERVAL=TAKEOVER_INTERVAL,
            **env,
        )
        self.live.append(label)
        return label

    def pid(self, label: str) -> int:
        return self.procs.children[label].pid

    def wait_started(self, *labels: str) -> None:
        """Until each node logged that it started (registered, checked the store)."""
        self.procs.wait_until(
            lambda: all("started on" in self.log(label) for label in labels),
            f"{', '.join(labels)} to start",
            alive=labels,
        )

    def log(self, label: str) -> str:
        path = self.procs.log_dir / f"{label}.err"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, label: str, kind: str = "SIGKILL") -> None:
        """SIGKILL a node and record the fault (from the signal to the death seen)."""
        pid = self.pid(label)
        sent = time.time()
        assert self.procs.kill(label) == -signal.SIGKILL
        self.ledger.fault(kind, label, pid, sent, time.time())
        if label in self.live:
            self.live.remove(label)

    def sigstop(self, label: str) -> float:
        os.kill(self.pid(label), signal.SIGSTOP)
        return time.time()

    def sigcont(self, label: str, stopped_at: float) -> None:
        os.kill(self.pid(label), signal.SIGCONT)
        self.ledger.fault("SIGSTOP", label, self.pid(label), stopped_at, time.time())

    def check_alive(self) -> None:
        self.procs.check_alive(*self.live)

    # -- jobs -------------------------------------------------------------------------------

    def enqueue(
        self, worker: str, calls: Sequence[tuple[Any, ...]], run_at: float | None = None
    ) -> list[str]:
        """Store jobs of ``worker`` in one backend call, the first argument of each being
        its key; records ``begin``, then ``stored`` or ``error``, for each. Their ids."""
        now = time.time()
        jobs = [make_job(KEYS, worker, args, enqueued_at=now, run_at=run_at) for args in calls]
        keys = [str(args[0]) for args in calls]
        self.ledger.writer.record_many(("begin", key) for key in keys)
        try:
            self.procs.store.backend.enqueue(jobs)
        except Exception as exc:
            self.ledger.writer.record_many((f"error:{type(exc).__name__}", k) for k in keys)
            raise
        self.ledger.writer.record_many(("stored", key) for key in keys)
        return [job.id for job in jobs]

    def done(self, *workers: str) -> int:
        """Jobs of these workers the store counts done."""
        counts = self.procs.store.counts()
        return sum(counts.get(w, {}).get("done", 0) for w in workers)

    # -- what the store keeps ---------------------------------------------------------------

    def residue(self, expected_failed: int = 0) -> dict[str, int]:
        """What the store holds beyond what a finished scenario may leave: counters, the
        live nodes, and ``expected_failed`` failed jobs. Empty when clean."""
        found: dict[str, int] = {}
        if self.client is not None:
            c = self.client
            keys = {k.decode()[len(PREFIX) :] for k in c.scan_iter(match=PREFIX + "*", count=1000)}
            allowed = COUNTERS | NODE_KEYS | EXPIRING
            allowed |= FAILED_KEYS if expected_failed else set()
            found["extra_keys"] = len(
                {
                    k
                    for k in keys
                    if k not in allowed
                    and not (k.startswith(EXPIRING_PREFIXES) and c.pttl(PREFIX + k) != -1)
                }
            )
            found["claims"] = int(c.scard(PREFIX + "claimers")) + sum(
                int(c.hlen(PREFIX + k)) for k in keys if k.startswith("claims:")
            )
            found["running"] = sum(int(v) for v in c.hvals(PREFIX + "count:running"))
            found["unfinished"] = int(c.hlen(PREFIX + "jobs")) - int(c.zcard(PREFIX + "failed"))
            found["failed_extra"] = int(c.zcard(PREFIX + "failed")) - expected_failed
        else:
            db = sqlite3.connect(self.procs.url.removeprefix("sqlite:///"), timeout=30)
            try:
                states = dict(db.execute("SELECT state, count(*) FROM toniq_jobs GROUP BY state"))
                claimed = db.execute(
                    "SELECT count(*) FROM toniq_jobs WHERE node IS NOT NULL AND state != 'failed'"
                ).fetchone()[0]
            finally:
                db.close()
            found["unfinished"] = sum(n for s, n in states.items() if s != "failed")
            found["claims"] = int(claimed)
            found["failed_extra"] = states.get("failed", 0) - expected_failed
        return {k: v for k, v in found.items() if v}

    def wait_clean(self, timeout: float, expected_failed: int = 0) -> dict[str, int]:
        """Poll until :meth:`residue` is empty; the last residue (empty if clean)."""
        last: dict[str, int] = {}

        def clean() -> bool:
            nonlocal last
            self.check_alive()
            last = self.residue(expected_failed)
            return not last

        poll(clean, timeout, every=0.1)
        return last

    def report(
        self,
        scenario: str,
        residue: dict[str, int],
        expected_failed: Sequence[str] = (),
        note: str = "",
    ) -> Account:
        """Account for every job, print the summary line and the fault log (and keep them
        for the end of the session). Check it with :meth:`Account.check`."""
        account = self.ledger.account(
            f"{scenario}[{self.backend}]", residue=residue, expected_failed=expected_failed
        )
        lines = [account.summary(), account.fault_log(self.ledger.started)]
        if note:
            lines.append(f"  {note}")
        SUMMARIES.extend(lines)
        print("\n" + "\n".join(lines))
        return account

    def stop_all(self) -> None:
        """SIGTERM every live node; each must exit 0."""
        for label in list(self.live):
            assert self.procs.stop(label) == 0, self.procs.output(label)
            self.live.remove(label)


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(backend: str, *redis_args: str) -> Rig:
        assert not rigs, "one rig per test"
        rig = Rig(tmp_path, backend, redis_args)
        rigs.append(rig)
        return rig

    try:
        yield make
    finally:
        for rig in rigs:
            rig.close()
            for label in rig.procs.children:  # shown by pytest when the test failed
                print(rig.procs.output(label))
