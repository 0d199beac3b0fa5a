"""The SQLite backend (``sqlite:///path``): the embedded default, no server needed.

Several node processes and enqueuing processes may share one file: the database
runs in WAL mode, every state change is one ``BEGIN IMMEDIATE`` transaction (so two
claims never see the same job), and each thread of each process has its own
connection. Time is this machine's clock, which all processes on one file share.
"""

from __future__ import annotations

import collections
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from toniq.backends.base import RING_SECONDS, NoServer, check_window, in_window
from toniq.errors import ConfigurationError, EnqueueError, StoreClosedError, StoreError
from toniq.job import (
    CANNOT_RUN,
    NODE_LOST,
    AckReport,
    ClaimedJob,
    JobError,
    JobRecord,
    JobState,
    NewJob,
    NodeInfo,
    Outcome,
    TakeoverReport,
)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS toniq_jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    worker TEXT NOT NULL,
    state TEXT NOT NULL,
    payload BLOB NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    node_deaths INTEGER NOT NULL DEFAULT 0,
    enqueued_at REAL NOT NULL,
    run_at REAL,
    started_at REAL,
    finished_at REAL,
    node TEXT,
    token TEXT,
    errors TEXT NOT NULL DEFAULT '[]',
    options TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS toniq_jobs_queue ON toniq_jobs (worker, state, seq);
CREATE INDEX IF NOT EXISTS toniq_jobs_state ON toniq_jobs (state, run_at);
CREATE INDEX IF NOT EXISTS toniq_jobs_finished ON toniq_jobs (state, finished_at);
CREATE INDEX IF NOT EXISTS toniq_jobs_suspects ON toniq_jobs (state, seq) WHERE node_deaths > 0;
CREATE INDEX IF NOT EXISTS toniq_jobs_node ON toniq_jobs (node) WHERE node IS NOT NULL;
CREATE TABLE IF NOT EXISTS toniq_nodes (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    workers TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS toniq_counters (
    worker TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (worker, name)
);
CREATE TABLE IF NOT EXISTS toniq_rate (
    slot INTEGER NOT NULL,
    worker TEXT NOT NULL,
    sec INTEGER NOT NULL,
    done INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    PRIMARY KEY (slot, worker)
);
CREATE TABLE IF NOT EXISTS toniq_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_JOB_COLUMNS = (
    "id, worker, state, payload, attempt, enqueued_at, run_at, started_at, finished_at, "
    "node, errors, options"
)
# How often to look for RUNNING jobs whose node row is gone without having timed out
# (a node that unregistered without handing its jobs back). Rare, so rarely checked.
_ORPHAN_SCAN_INTERVAL = 30.0
_CHUNK = 400  # rows per statement, well below SQLite's limit on bound variables


def path_from_url(url: str) -> str:
    """``sqlite:///rel/path`` is relative to the working directory, ``sqlite:////abs`` is
    absolute (as in SQLAlchemy)."""
    if not url.startswith("sqlite:///"):
        raise ConfigurationError(
            f"bad SQLite URL {url!r}: use sqlite:///relative/path or sqlite:////absolute/path"
        )
    path = url[len("sqlite:///") :]
    if not path or path == ":memory:" or path.startswith("file:"):
        raise ConfigurationError(
            f"bad SQLite URL {url!r}: toniq needs a file that several connections share; "
            "use memory:// for an in-process store"
        )
    return path


class SQLiteBackend(NoServer):
    """Jobs in a SQLite file. See :class:`toniq.backends.Backend` for the contract."""

    def __init__(self, url: str, *, synchronous: str = "NORMAL", busy_timeout: float = 30.0):
        self.url = url
        self.path = path_from_url(url)
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._next_orphan_scan = 0.0
        parent = Path(self.path).resolve().parent
        if not parent.is_dir():
            raise StoreError(f"cannot open {url}: directory {parent} does not exist")
        conn = self._conn()
        try:
            # executescript() commits first on its own, so the transaction is in the script.
            conn.executescript(
                "BEGIN IMMEDIATE;" + _SCHEMA + "INSERT OR IGNORE INTO toniq_meta (key, value) "
                f"VALUES ('schema_version', '{SCHEMA_VERSION}'); COMMIT;"
            )
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"cannot create the toniq tables in {url}: {exc}") from exc

    # -- connections and transactions ------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreClosedError(f"{self.url} backend is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        # A forked child must not share its parent's connection.
        if conn is None or self._local.pid != os.getpid():
            try:
                conn = sqlite3.connect(
                    self.path,
                    timeout=self._busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self._synchronous}")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open {self.url}: {exc}") from exc
            self._local.conn = conn
            self._local.pid = os.getpid()
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self, error: type[StoreError] = StoreError) -> Iterator[sqlite3.Connection]:
        """One write transaction. IMMEDIATE takes the write lock up front, so two
        processes never both read a job as available and then both claim it."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise error(f"{self.url}: {exc}") from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise error(f"{self.url}: {exc}") from exc
            raise

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.url}: {exc}") from exc

    # -- the contract ------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[NewJob]) -> None:
        if self._closed:
            raise EnqueueError(f"{self.url} backend is closed; the job was not stored")
        now = time.time()
        rows = [
            (
                job.id,
                job.worker,
                JobState.SCHEDULED
                if job.run_at is not None and job.run_at > now
                else JobState.AVAILABLE,
                job.payload,
                job.enqueued_at,
                job.run_at,
                json.dumps(job.options) if job.options else "{}",
            )
            for job in jobs
        ]
        try:
            with self._write(EnqueueError) as conn:
                conn.executemany(
                    "INSERT INTO toniq_jobs (id, worker, state, payload, enqueued_at, run_at, "
                    "options) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
        except EnqueueError as exc:
            # The primary key refused an id (stored already, or twice in the batch): say so,
            # as the other backends do; the transaction was rolled back.
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise EnqueueError(f"duplicate job id; nothing was stored ({exc})") from exc
            raise

    def _claimable(self, wants: Mapping[str, int]) -> bool:
        """A read (which never waits for the write lock, in WAL mode): is anything due?"""
        due = "SELECT 1 FROM toniq_jobs WHERE state = 'scheduled' AND run_at <= ? LIMIT 1"
        if self._read(due, (time.time(),)):
            return True
        ready = "SELECT 1 FROM toniq_jobs WHERE worker = ? AND state = 'available' LIMIT 1"
        return any(n > 0 and self._read(ready, (worker,)) for worker, n in wants.items())

    def claim(
        self,
        node_id: str,
        wants: Mapping[str, int],
        *,
        alone: bool = False,
        suspect_after: int = 2,
    ) -> list[ClaimedJob]:
        # Idle nodes poll often: finding nothing must not take the write lock, or their
        # polls crowd out heartbeats and enqueues (SQLite's busy handler is not fair).
        if not self._claimable(wants):
            return []
        token = secrets.token_hex(8)
        claimed: list[tuple[int, ClaimedJob]] = []
        with self._write() as conn:
            if (
                conn.execute("SELECT 1 FROM toniq_nodes WHERE id = ?", (node_id,)).fetchone()
                is None
            ):
                return []
            now = time.time()
            conn.execute(
                "UPDATE toniq_jobs SET state = 'available' "
                "WHERE state = 'scheduled' AND run_at <= ?",
                (now,),
            )
            lease = (
                "UPDATE toniq_jobs SET state = 'running', attempt = attempt + 1, node = ?, "
                "token = ?, started_at = ? WHERE seq IN (SELECT seq FROM toniq_jobs WHERE {}) "
                "RETURNING seq, id, worker, payload, attempt, enqueued_at, options"
            )
            wanted = [worker for worker, n in wants.items() if n > 0]
            if alone and wanted:
                # A suspect runs alone on an idle node: one, with nothing else.
                rows = conn.execute(
                    lease.format(
                        f"worker IN ({', '.join('?' for _ in wanted)}) AND state = 'available' "
                        "AND node_deaths > 0 AND node_deaths >= ? ORDER BY seq LIMIT 1"
                    ),
                    (node_id, token, now, *wanted, suspect_after),
                ).fetchall()
                if rows:
                    return [_claimed(rows[0], token, suspect=True)]
            for worker in wanted:
                for row in conn.execute(
                    lease.format(
                        "worker = ? AND state = 'available' AND node_deaths < ? "
                        "ORDER BY seq LIMIT ?"
                    ),
                    (node_id, token, now, worker, suspect_after, wants[worker]),
                ):
                    claimed.append((row[0], _claimed(row, token)))
        claimed.sort(key=lambda pair: pair[0])
        return [job for _, job in claimed]

    def ack(self, node_id: str, outcomes: Sequence[Outcome]) -> AckReport:
        done = [o for o in outcomes if o.error is None]
        failed = [o for o in outcomes if o.error is not None]
        accepted: set[tuple[str, str]] = set()
        now = time.time()
        with self._write() as conn:
            per_worker: dict[str, int] = {}
            for start in range(0, len(done), _CHUNK):
                chunk = done[start : start + _CHUNK]
                values = ", ".join("(?, ?, ?)" for _ in chunk)
                params = [node_id, *(v for o in chunk for v in (o.id, o.token, o.worker))]
                for job_id, token, worker in conn.execute(
                    "DELETE FROM toniq_jobs WHERE state = 'running' AND node = ? AND "
                    f"(id, token, worker) IN (VALUES {values}) RETURNING id, token, worker",
                    params,
                ):
                    accepted.add((job_id, token))
                    per_worker[worker] = per_worker.get(worker, 0) + 1
            conn.executemany(
                "INSERT INTO toniq_counters (worker, name, value) VALUES (?, 'done', ?) "
                "ON CONFLICT (worker, name) DO UPDATE SET value = value + excluded.value",
                list(per_worker.items()),
            )
            errors: dict[str, int] = {}
            for outcome in failed:
                assert outcome.error is not None
                retry = outcome.retry_in is not None
                row = conn.execute(
                    "UPDATE toniq_jobs SET state = ?, finished_at = ?, run_at = ?, node = NULL, "
                    "token = NULL, errors = json_insert(errors, '$[#]', json(?)) "
                    "WHERE id = ? AND token = ? AND node = ? AND worker = ? "
                    "AND state = 'running' RETURNING worker",
                    (
                        JobState.SCHEDULED if retry else JobState.FAILED,
                        None if retry else now,
                        None if outcome.retry_in is None else now + outcome.retry_in,
                        json.dumps(outcome.error.to_dict()),
                        outcome.id,
                        outcome.token,
                        node_id,
                        outcome.worker,
                    ),
                ).fetchone()
                if row is not None:
                    accepted.add((outcome.id, outcome.token))
                    errors[row[0]] = errors.get(row[0], 0) + 1
            # The throughput ring (see finished_recently): one row per worker and second
            # modulo RING_SECONDS, restarted when its second has passed.
            sec = int(now)
            conn.executemany(
                "INSERT INTO toniq_rate (slot, worker, sec, done, errors) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (slot, worker) DO UPDATE SET sec = excluded.sec, "
                "done = excluded.done + CASE WHEN sec = excluded.sec THEN done ELSE 0 END, "
                "errors = excluded.errors + CASE WHEN sec = excluded.sec THEN errors ELSE 0 END",
                [
                    (sec % RING_SECONDS, w, sec, per_worker.get(w, 0), errors.get(w, 0))
                    for w in sorted(per_worker.keys() | errors.keys())
                ],
            )
        # A run counts once: the same outcome again in this batch is rejected, as it would
        # be in a later one.
        counted: set[tuple[str, str]] = set()
        rejected: list[str] = []
        for o in outcomes:
            run = (o.id, o.token)
            if run in accepted and run not in counted:
                counted.add(run)
            else:
                rejected.append(o.id)
        return AckReport(len(counted), tuple(rejected))

    def hand_back(self, node_id: str, jobs: Sequence[tuple[str, str]]) -> int:
        released = 0
        with self._write() as conn:
            for job_id, token in jobs:
                cursor = conn.execute(
                    "UPDATE toniq_jobs SET state = 'available', attempt = attempt - 1, "
                    "node = NULL, token = NULL WHERE id = ? AND token = ? AND state = 'running'",
                    (job_id, token),
                )
                released += cursor.rowcount
        return released

    def held_by(self, node_id: str) -> list[tuple[str, str]]:
        rows = self._read(
            "SELECT id, token FROM toniq_jobs WHERE node = ? AND state = 'running'", (node_id,)
        )
        return [(job_id, token) for job_id, token in rows]

    def register_node(self, info: NodeInfo) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO toniq_nodes "
                "(id, host, pid, started_at, heartbeat_at, workers) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    info.id,
                    info.host,
                    info.pid,
                    info.started_at,
                    time.time(),
                    json.dumps(list(info.workers)),
                ),
            )

    def heartbeat(self, node_id: str) -> bool:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE toniq_nodes SET heartbeat_at = ? WHERE id = ?", (time.time(), node_id)
            )
            return cursor.rowcount == 1

    def unregister_node(self, node_id: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM toniq_nodes WHERE id = ?", (node_id,))

    def take_over(self, timeout: float, max_node_deaths: int) -> TakeoverReport:
        requeued: list[str] = []
        failed: list[str] = []
        with self._write() as conn:
            now = time.time()
            dead = [
                row[0]
                for row in conn.execute(
                    "DELETE FROM toniq_nodes WHERE heartbeat_at < ? RETURNING id", (now - timeout,)
                )
            ]
            if not dead and now < self._next_orphan_scan:
                return TakeoverReport()
            self._next_orphan_scan = now + _ORPHAN_SCAN_INTERVAL
            lost = conn.execute(
                "SELECT id, attempt, node, node_deaths FROM toniq_jobs AS j "
                "WHERE state = 'running' AND NOT EXISTS "
                "(SELECT 1 FROM toniq_nodes AS n WHERE n.id = j.node)"
            ).fetchall()
            company = collections.Counter(node for _, _, node, _ in lost)
            for job_id, attempt, node, deaths in lost:
                deaths += 1
                alone = company[node] == 1
                if deaths >= max_node_deaths and not alone:
                    deaths = max_node_deaths - 1  # not proven guilty: a suspect, runs alone next
                error = JobError.reason(
                    NODE_LOST,
                    f"node {node} stopped heart-beating while running this job "
                    f"{'alone' if alone else 'with others'} (node lost {deaths} time(s))",
                    attempt=attempt,
                    node=node,
                )
                to_failed = deaths >= max_node_deaths
                # A requeued job gets its attempt back: the lost run does not count as a retry.
                conn.execute(
                    "UPDATE toniq_jobs SET state = ?, node_deaths = ?, node = NULL, token = NULL, "
                    "attempt = attempt - ?, finished_at = ?, "
                    "errors = json_insert(errors, '$[#]', json(?)) WHERE id = ?",
                    (
                        JobState.FAILED if to_failed else JobState.AVAILABLE,
                        deaths,
                        0 if to_failed else 1,
                        now if to_failed else None,
                        json.dumps(error.to_dict()),
                        job_id,
                    ),
                )
                (failed if to_failed else requeued).append(job_id)
        return TakeoverReport(tuple(dead), tuple(requeued), tuple(failed))

    def fail_unrunnable(self, older_than: float) -> list[str]:
        failed: list[str] = []
        with self._write() as conn:
            now = time.time()
            known: set[str] = set()
            for (workers,) in conn.execute("SELECT workers FROM toniq_nodes"):
                known.update(json.loads(workers))
            waiting = [
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT worker FROM toniq_jobs WHERE state = 'available'"
                )
            ]
            for worker in waiting:
                if worker in known:
                    continue
                message = f"unknown worker {worker!r}: no live node registers it"
                failed.extend(
                    row[0]
                    for row in conn.execute(
                        "UPDATE toniq_jobs SET state = 'failed', finished_at = ?, "
                        "errors = json_insert(errors, '$[#]', json_object('type', ?, "
                        "'message', ?, 'traceback', '', 'attempt', attempt, 'node', NULL, "
                        "'at', ?)) WHERE worker = ? AND state = 'available' AND enqueued_at < ? "
                        "RETURNING id",
                        (now, CANNOT_RUN, message, now, worker, now - older_than),
                    )
                )
        return failed

    def jobs(
        self, state: JobState, worker: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[JobRecord]:
        order = {
            JobState.FAILED: "finished_at DESC, seq DESC",
            JobState.SCHEDULED: "run_at, seq",
        }.get(JobState(state), "seq")
        where, params = _filter(JobState(state), None, worker)
        rows = self._read(
            f"SELECT {_JOB_COLUMNS} FROM toniq_jobs WHERE {where} ORDER BY {order} "
            "LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [_record(row) for row in rows]

    def _update_many(
        self,
        sql: str,
        state: JobState,
        ids: Sequence[str] | None,
        worker: str | None,
        extra: Sequence[Any] = (),
    ) -> int:
        total = 0
        chunks = (
            [None]
            if ids is None
            else [list(ids[i : i + _CHUNK]) for i in range(0, len(ids), _CHUNK)]
        )
        with self._write() as conn:
            for chunk in chunks:
                if chunk == []:
                    continue
                where, params = _filter(state, chunk, worker)
                total += conn.execute(f"{sql} WHERE {where}", [*extra, *params]).rowcount
        return total

    def retry_failed(self, ids: Sequence[str] | None = None, worker: str | None = None) -> int:
        return self._update_many(
            "UPDATE toniq_jobs SET state = 'available', attempt = 0, node_deaths = 0, "
            "finished_at = NULL, run_at = NULL",
            JobState.FAILED,
            ids,
            worker,
        )

    def delete_failed(self, ids: Sequence[str] | None = None, worker: str | None = None) -> int:
        return self._update_many("DELETE FROM toniq_jobs", JobState.FAILED, ids, worker)

    def release_scheduled(self, ids: Sequence[str] | None = None, worker: str | None = None) -> int:
        return self._update_many(
            "UPDATE toniq_jobs SET state = 'available', run_at = ?",
            JobState.SCHEDULED,
            ids,
            worker,
            (time.time(),),
        )

    def prune_failed(self, max_count: int, max_age: float) -> int:
        with self._write() as conn:
            old = conn.execute(
                "DELETE FROM toniq_jobs WHERE state = 'failed' AND finished_at < ?",
                (time.time() - max_age,),
            ).rowcount
            extra = conn.execute(
                "DELETE FROM toniq_jobs WHERE seq IN (SELECT seq FROM toniq_jobs "
                "WHERE state = 'failed' ORDER BY finished_at DESC, seq DESC LIMIT -1 OFFSET ?)",
                (max_count,),
            ).rowcount
        return old + extra

    def nodes(self) -> list[NodeInfo]:
        return [
            NodeInfo(id, host, pid, started_at, heartbeat_at, tuple(json.loads(workers)))
            for id, host, pid, started_at, heartbeat_at, workers in self._read(
                "SELECT id, host, pid, started_at, heartbeat_at, workers FROM toniq_nodes "
                "ORDER BY started_at"
            )
        ]

    def get_job(self, job_id: str) -> JobRecord | None:
        rows = self._read(f"SELECT {_JOB_COLUMNS} FROM toniq_jobs WHERE id = ?", (job_id,))
        return _record(rows[0]) if rows else None

    def counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for worker, state, n in self._read(
            "SELECT worker, state, count(*) FROM toniq_jobs GROUP BY worker, state"
        ):
            counts.setdefault(worker, {})[state] = n
        for worker, value in self._read(
            "SELECT worker, value FROM toniq_counters WHERE name = 'done'"
        ):
            counts.setdefault(worker, {})["done"] = value
        return counts

    def finished_recently(self, window: int = 60) -> dict[str, dict[str, int]]:
        check_window(window)
        now = time.time()
        found: dict[str, dict[str, int]] = {}
        for worker, sec, done, errors in self._read(
            "SELECT worker, sec, done, errors FROM toniq_rate WHERE sec > ?",
            (int(now) - window,),
        ):
            if in_window(sec, now, window):
                per = found.setdefault(worker, {"done": 0, "errors": 0})
                per["done"] += done
                per["errors"] += errors
        return found

    def signing_secret(self) -> bytes:
        """This database's own signing key, made on first use: a random key in toniq_meta,
        so a SQLite store signs payloads without any configuration. It keeps out rows
        written by whoever can write to the file but not read it (a rare split: see
        docs/security.md); configure a secret to keep the key out of the file."""
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO toniq_meta (key, value) VALUES ('signing_key', ?)",
                (secrets.token_hex(32),),
            )
            (value,) = conn.execute(
                "SELECT value FROM toniq_meta WHERE key = 'signing_key'"
            ).fetchone()
        return bytes.fromhex(str(value))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing is best effort
                pass


def _claimed(row: Sequence[Any], token: str, suspect: bool = False) -> ClaimedJob:
    _, job_id, worker, payload, attempt, enqueued_at, options = row
    return ClaimedJob(
        job_id, worker, payload, attempt, token, enqueued_at, _options(options), suspect
    )


def _options(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text and text != "{}" else {}


def _filter(
    state: JobState, ids: Sequence[str] | None, worker: str | None
) -> tuple[str, list[Any]]:
    where = ["state = ?"]
    params: list[Any] = [state.value]
    if ids is not None:
        where.append(f"id IN ({', '.join('?' for _ in ids)})")
        params.extend(ids)
    if worker is not None:
        where.append("worker = ?")
        params.append(worker)
    return " AND ".join(where), params


def _record(row: Sequence[Any]) -> JobRecord:
    (
        job_id,
        worker,
        state,
        payload,
        attempt,
        enqueued_at,
        run_at,
        started_at,
        finished_at,
        node,
        errors,
        options,
    ) = row
    return JobRecord(
        id=job_id,
        worker=worker,
        state=JobState(state),
        payload=bytes(payload),
        attempt=attempt,
        enqueued_at=enqueued_at,
        run_at=run_at,
        started_at=started_at,
        finished_at=finished_at,
        node=node,
        errors=[JobError.from_dict(e) for e in json.loads(errors)],
        options=_options(options),
    )
