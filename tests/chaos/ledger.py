"""The chaos suite's ledger: a SQLite file outside the system under test, and its checker.

Written by every process of a scenario:

- the test jobs (``tests/fixtures/procjobs.py``, when ``$PROCJOBS_SQLITE`` names this file):
  ``start`` and ``done`` (and ``fail``) for every run, with the job's key, the process's label
  (``node3``) and pid, and the time;
- the producers (the producer processes of ``procjobs.produce_main``, or the test itself):
  ``begin`` before each enqueue attempt, then ``stored`` if it returned or
  ``error:<type>:<ms>`` if it raised (bulk batches: ``bulk-begin:<n>``...,  under the batch's
  key, for the jobs ``<batch>-<i>``);
- the test: every fault it injects (a SIGKILL, a SIGSTOP until the SIGCONT, Redis killed until
  it answers again, a network fault of the proxy), with its time span and, for a node fault,
  the pid of the node.

Each row is one autocommitted insert in WAL mode: a process SIGKILLed loses at most the row it
was writing, never a committed one, and the checker reads while the others write. The busy
timeout is long (60 s) because a writer may be SIGSTOPped while it holds the write lock: the
others then wait for its SIGCONT instead of failing their jobs.

The checker (:meth:`Ledger.account`) turns the rows into an :class:`Account`: attempted /
stored / done / lost / unexpected / duplicates, each duplicate matched to a fault that
explains it, plus the residue the test measured in the store. This module uses only the
standard library: the child processes import it too.
"""

from __future__ import annotations

import collections
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    event TEXT NOT NULL,
    label TEXT NOT NULL,
    pid INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_key ON events (key, event);
CREATE TABLE IF NOT EXISTS faults (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    pid INTEGER,
    at REAL NOT NULL,
    until REAL NOT NULL
);
"""

#: Milliseconds a writer waits for the write lock (see the module docstring).
BUSY_TIMEOUT_MS = 60_000


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection in autocommit mode (each insert is its own transaction), WAL."""
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL: a commit reaches the OS before insert returns, so it survives the SIGKILL of
    # its process; only an OS crash could lose it, and the tests do not crash the OS.
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


class LedgerWriter:
    """The writing side, one per process (thread-safe: jobs run on the event loop and in
    threads)."""

    def __init__(self, path: str | os.PathLike[str], label: str) -> None:
        self.label = label
        self._conn = connect(path)
        self._lock = threading.Lock()

    def record(self, event: str, key: str) -> None:
        self.record_many([(event, key)])

    def record_many(self, rows: Iterable[tuple[str, str]]) -> None:
        """Several rows in one transaction (a bulk enqueue's ``begin`` of every job)."""
        pid, now = os.getpid(), time.time()
        values = [(key, event, self.label, pid, now) for event, key in rows]
        with self._lock:
            if len(values) == 1:
                self._conn.execute(
                    "INSERT INTO events (key, event, label, pid, at) VALUES (?, ?, ?, ?, ?)",
                    values[0],
                )
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT INTO events (key, event, label, pid, at) VALUES (?, ?, ?, ?, ?)",
                    values,
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def runs_of(self, key: str) -> int:
        """How many ``start`` rows ``key`` has, from every process."""
        with self._lock:
            (n,) = self._conn.execute(
                "SELECT count(*) FROM events WHERE key = ? AND event = 'start'", (key,)
            ).fetchone()
        return int(n)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


@dataclass(frozen=True)
class Run:
    """One ``start`` row: a run of a job. ``failed``: the run recorded ``fail`` (it raised,
    so toniq retries it by design)."""

    key: str
    label: str
    pid: int
    at: float
    failed: bool = False


@dataclass(frozen=True)
class Fault:
    """An injected fault, from ``at`` until ``until``. ``pid`` is the node it hit, or None
    for a fault of the store or the network (it may hit every node)."""

    kind: str
    target: str
    pid: int | None
    at: float
    until: float

    def explains(self, before: Run, after: Run) -> bool:
        """Whether this fault explains running ``after`` although ``before`` ran: it hit
        ``before``'s node (or everybody) while or after ``before`` ran, and ``after``
        started once the fault had begun."""
        if self.pid is not None and self.pid != before.pid:
            return False
        return before.at <= self.until and self.at <= after.at


def _expand(event: str, key: str) -> tuple[str, list[str]]:
    """``bulk-<kind>:<n>`` under a batch's key is ``<kind>`` for each of its n jobs."""
    if event.startswith("bulk-"):
        kind, _, rest = event[len("bulk-") :].partition(":")
        if kind in ("begin", "stored"):
            return kind, [f"{key}-{i}" for i in range(int(rest))]
        return "error", []  # a failed batch: its size is in bulk-begin; nothing stored
    return event.split(":")[0], [key]


@dataclass
class Account:
    """What happened to every job of a scenario."""

    scenario: str
    attempted: set[str]
    stored: set[str]
    raised: set[str]
    done: set[str]
    runs: dict[str, list[Run]]
    faults: list[Fault]
    #: What the store still holds beyond what the scenario may leave (see the tests'
    #: ``residue``); empty when clean.
    residue: dict[str, int] = field(default_factory=dict)
    #: Keys that may end without a ``done`` (a poison pill expected to fail).
    expected_failed: set[str] = field(default_factory=set)
    seconds: float = 0.0
    lost: set[str] = field(init=False)
    retries: int = field(init=False)
    unexpected: set[str] = field(init=False)
    duplicates: dict[str, list[Run]] = field(init=False)
    #: (key, earlier run, later run) of each duplicate no fault explains.
    unexplained: list[tuple[str, Run, Run]] = field(init=False)
    #: How many duplicate runs each fault (by index in ``faults``) explains.
    explained_by: collections.Counter[int] = field(init=False)

    def __post_init__(self) -> None:
        self.lost = self.stored - self.done - self.expected_failed
        self.unexpected = (set(self.runs) | self.done) - self.attempted
        # A run after a failed run is a retry (by design); the others are duplicates.
        self.retries = sum(1 for r in self.runs.values() for run in r[:-1] if run.failed)
        self.duplicates = {
            k: r for k, r in self.runs.items() if len(r) - sum(x.failed for x in r[:-1]) > 1
        }
        self.unexplained = []
        self.explained_by = collections.Counter()
        for key, key_runs in self.duplicates.items():
            for before, after in itertools.pairwise(key_runs):
                if before.failed:
                    continue  # a retry after a failure: by design, not a duplicate
                # The latest fault that explains it: the one that caused it.
                match = [i for i, f in enumerate(self.faults) if f.explains(before, after)]
                if match:
                    self.explained_by[max(match, key=lambda i: self.faults[i].at)] += 1
                elif key not in self.expected_failed:
                    self.unexplained.append((key, before, after))

    @property
    def extra_runs(self) -> int:
        """Runs beyond the first of each job, but for retries after a failed run."""
        return sum(len(r) - 1 - sum(x.failed for x in r[:-1]) for r in self.duplicates.values())

    @property
    def ambiguous(self) -> set[str]:
        """Enqueues that raised yet ran: the reply was lost, the job was stored."""
        return self.raised & set(self.runs)

    def summary(self) -> str:
        residue = sum(self.residue.values())
        return (
            f"CHAOS {self.scenario}: attempted={len(self.attempted)} "
            f"stored={len(self.stored)} done={len(self.done)} lost={len(self.lost)} "
            f"unexpected={len(self.unexpected)} duplicates={len(self.duplicates)} "
            f"(extra runs {self.extra_runs}, unexplained {len(self.unexplained)}) "
            f"retries={self.retries} "
            f"raised={len(self.raised)} (ran anyway {len(self.ambiguous)}) "
            f"residue={residue}{self.residue if residue else ''} "
            f"faults={len(self.faults)} time={self.seconds:.1f}s"
        )

    def fault_log(self, start: float) -> str:
        """The faults, at seconds after ``start``, each with the duplicates it explains."""
        parts = []
        for i, f in enumerate(self.faults):
            span = f"+{f.at - start:.2f}s" + (
                f"..+{f.until - start:.2f}s" if f.until - f.at >= 0.01 else ""
            )
            dups = self.explained_by.get(i, 0)
            parts.append(f"{span} {f.kind} {f.target}" + (f" [{dups} dup]" if dups else ""))
        return "  faults: " + ("; ".join(parts) or "none")

    def check(self) -> None:
        """The suite's requirements: nothing lost, nothing unexpected, every duplicate
        explained by a fault, nothing left behind."""
        assert not self.lost, f"{self.summary()}; lost e.g. {sorted(self.lost)[:10]}"
        assert not self.unexpected, f"{self.summary()}; e.g. {sorted(self.unexpected)[:10]}"
        assert not self.unexplained, f"{self.summary()}; e.g. {self.unexplained[:5]}"
        assert not any(self.residue.values()), self.summary()


class Ledger:
    """The test's side of the ledger file: creates it, records faults, reads it back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = connect(path)
        self._conn.executescript(SCHEMA)
        self.writer = LedgerWriter(path, "test")
        self.started = time.time()

    def close(self) -> None:
        self.writer.close()
        self._conn.close()

    def fault(
        self, kind: str, target: str, pid: int | None, at: float, until: float | None = None
    ) -> None:
        """Record a fault from ``at`` to ``until`` (an instant if omitted)."""
        self._conn.execute(
            "INSERT INTO faults (kind, target, pid, at, until) VALUES (?, ?, ?, ?, ?)",
            (kind, target, pid, at, at if until is None else until),
        )

    def faults(self) -> list[Fault]:
        rows = self._conn.execute("SELECT kind, target, pid, at, until FROM faults ORDER BY at")
        return [Fault(*row) for row in rows]

    def count(self, event: str, label: str | None = None, after: float = 0.0) -> int:
        sql = "SELECT count(*) FROM events WHERE event = ? AND at > ?"
        args: list[object] = [event, after]
        if label is not None:
            sql += " AND label = ?"
            args.append(label)
        (n,) = self._conn.execute(sql, args).fetchone()
        return int(n)

    def keys(self, event: str, label: str | None = None) -> set[str]:
        sql, args = "SELECT DISTINCT key FROM events WHERE event = ?", [event]
        if label is not None:
            sql += " AND label = ?"
            args.append(label)
        return {key for (key,) in self._conn.execute(sql, args)}

    def runs(self, label: str | None = None, pid: int | None = None) -> list[Run]:
        sql = "SELECT key, label, pid, at FROM events WHERE event = 'start'"
        args: list[object] = []
        if label is not None:
            sql += " AND label = ?"
            args.append(label)
        if pid is not None:
            sql += " AND pid = ?"
            args.append(pid)
        return [Run(*row) for row in self._conn.execute(sql + " ORDER BY at, id", args)]

    def in_flight(self, pid: int) -> int:
        """Runs of this process that started and did not record ``done``."""
        (n,) = self._conn.execute(
            "SELECT count(*) FROM events s WHERE s.pid = ? AND s.event = 'start' AND NOT "
            "EXISTS (SELECT 1 FROM events d WHERE d.pid = s.pid AND d.key = s.key "
            "AND d.event IN ('done', 'fail'))",
            (pid,),
        ).fetchone()
        return int(n)

    def account(
        self,
        scenario: str,
        residue: Mapping[str, int] | None = None,
        expected_failed: Iterable[str] = (),
    ) -> Account:
        attempted: set[str] = set()
        stored: set[str] = set()
        raised: set[str] = set()
        done: set[str] = set()
        runs: dict[str, list[Run]] = collections.defaultdict(list)
        # The last run of (key, pid) so far: a ``fail`` row marks it failed.
        last: dict[tuple[str, int], int] = {}
        rows = self._conn.execute("SELECT key, event, label, pid, at FROM events ORDER BY at, id")
        for key, event, label, pid, at in rows:
            if event == "fail" and (key, pid) in last:
                i = last[(key, pid)]
                run = runs[key][i]
                runs[key][i] = Run(run.key, run.label, run.pid, run.at, failed=True)
                continue
            kind, keys = _expand(event, key)
            if kind == "begin":
                attempted.update(keys)
            elif kind == "stored":
                stored.update(keys)
            elif kind == "error":
                raised.update(keys)
            elif kind == "start":
                last[(key, pid)] = len(runs[key])
                runs[key].append(Run(key, label, pid, at))
            elif kind == "done":
                done.add(key)
        return Account(
            scenario,
            attempted,
            stored,
            raised,
            done,
            dict(runs),
            self.faults(),
            residue=dict(residue or {}),
            expected_failed=set(expected_failed),
            seconds=time.time() - self.started,
        )
