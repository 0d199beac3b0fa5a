"""The in-memory backend (``memory://``): one process, nothing on disk.

For tests and for trying things out. Jobs live in this process only and are gone
when it exits; it follows the same contract as the other backends otherwise.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from toniq.backends.base import RING_SECONDS, NoServer, check_window, in_window
from toniq.errors import EnqueueError, StoreClosedError
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
from toniq.signing import new_secret


@dataclass
class _Row:
    seq: int
    record: JobRecord
    token: str | None = None
    node_deaths: int = 0


@dataclass
class _Queues:
    available: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    scheduled: list[tuple[float, int, str]] = field(default_factory=list)


class MemoryBackend(NoServer):
    """Jobs in a dict, guarded by one lock. See :class:`toniq.backends.Backend`."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.Lock()
        self._rows: dict[str, _Row] = {}
        self._queues = _Queues()
        self._nodes: dict[str, NodeInfo] = {}
        self._done: dict[str, int] = {}
        # (second % RING_SECONDS, worker) -> [second, done, errors]: see finished_recently.
        self._rate: dict[tuple[int, str], list[int]] = {}
        self._seq = itertools.count(1)
        self._closed = False
        self._deaths = False  # has any job lost a node? (else no claim looks for suspects)
        self._secret = new_secret()  # never leaves this process, like the jobs themselves

    def signing_secret(self) -> bytes:
        return self._secret

    def _check(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self.url} backend is closed")

    def _push_available(self, row: _Row) -> None:
        row.record.state = JobState.AVAILABLE
        heapq.heappush(
            self._queues.available.setdefault(row.record.worker, []), (row.seq, row.record.id)
        )

    def _push_scheduled(self, row: _Row, run_at: float) -> None:
        row.record.state = JobState.SCHEDULED
        row.record.run_at = run_at
        heapq.heappush(self._queues.scheduled, (run_at, row.seq, row.record.id))

    def _promote_due(self, now: float) -> None:
        scheduled = self._queues.scheduled
        while scheduled and scheduled[0][0] <= now:
            run_at, _, job_id = heapq.heappop(scheduled)
            row = self._rows.get(job_id)
            # Skip stale entries: the job was released, retried or rescheduled since.
            if (
                row is not None
                and row.record.state is JobState.SCHEDULED
                and row.record.run_at == run_at
            ):
                self._push_available(row)

    def enqueue(self, jobs: Sequence[NewJob]) -> None:
        with self._lock:
            if self._closed:
                raise EnqueueError(f"{self.url} backend is closed; the job was not stored")
            ids = [job.id for job in jobs]
            if len(set(ids)) != len(ids) or any(i in self._rows for i in ids):
                raise EnqueueError("duplicate job id; nothing was stored")
            now = time.time()
            for job in jobs:
                seq = next(self._seq)
                scheduled = job.run_at is not None and job.run_at > now
                record = JobRecord(
                    id=job.id,
                    worker=job.worker,
                    state=JobState.SCHEDULED if scheduled else JobState.AVAILABLE,
                    payload=job.payload,
                    attempt=0,
                    enqueued_at=job.enqueued_at,
                    run_at=job.run_at,
                    options=dict(job.options),
                )
                row = _Row(seq=seq, record=record)
                self._rows[job.id] = row
                if scheduled:
                    assert job.run_at is not None
                    self._push_scheduled(row, job.run_at)
                else:
                    self._push_available(row)

    def claim(
        self,
        node_id: str,
        wants: Mapping[str, int],
        *,
        alone: bool = False,
        suspect_after: int = 2,
    ) -> list[ClaimedJob]:
        with self._lock:
            self._check()
            if node_id not in self._nodes:
                return []
            now = time.time()
            self._promote_due(now)
            token = secrets.token_hex(8)
            if alone and self._deaths:
                suspects = [
                    row
                    for row in self._rows.values()
                    if row.record.state is JobState.AVAILABLE
                    and row.record.worker in wants
                    and wants[row.record.worker] > 0
                    and row.node_deaths >= suspect_after
                ]
                if suspects:
                    row = min(suspects, key=lambda r: r.seq)
                    return [self._lease(row, node_id, token, now, suspect=True)]
            claimed: list[ClaimedJob] = []
            for worker, n in wants.items():
                queue = self._queues.available.get(worker)
                set_aside: list[tuple[int, str]] = []
                while queue and n > 0:
                    entry = heapq.heappop(queue)
                    candidate = self._rows.get(entry[1])
                    if candidate is None or candidate.record.state is not JobState.AVAILABLE:
                        continue  # a stale entry: the job moved on since it was queued
                    if candidate.node_deaths >= suspect_after:
                        set_aside.append(entry)  # a suspect runs alone, on an idle node
                        continue
                    claimed.append(self._lease(candidate, node_id, token, now))
                    n -= 1
                for entry in set_aside:
                    heapq.heappush(self._queues.available[worker], entry)
            return claimed

    def _lease(
        self, row: _Row, node_id: str, token: str, now: float, suspect: bool = False
    ) -> ClaimedJob:
        record = row.record
        record.state = JobState.RUNNING
        record.attempt += 1
        record.node = node_id
        record.started_at = now
        row.token = token
        return ClaimedJob(
            record.id,
            record.worker,
            record.payload,
            record.attempt,
            token,
            record.enqueued_at,
            dict(record.options),
            suspect,
        )

    def _holds(self, job_id: str, token: str) -> _Row | None:
        row = self._rows.get(job_id)
        if row is None or row.token != token or row.record.state is not JobState.RUNNING:
            return None
        return row

    def ack(self, node_id: str, outcomes: Sequence[Outcome]) -> AckReport:
        with self._lock:
            self._check()
            rejected: list[str] = []
            accepted = 0
            now = time.time()
            sec = int(now)
            for outcome in outcomes:
                row = self._holds(outcome.id, outcome.token)
                if row is None or row.record.node != node_id or row.record.worker != outcome.worker:
                    rejected.append(outcome.id)
                    continue
                accepted += 1
                bucket = self._rate.get((sec % RING_SECONDS, row.record.worker))
                if bucket is None or bucket[0] != sec:
                    bucket = self._rate[(sec % RING_SECONDS, row.record.worker)] = [sec, 0, 0]
                bucket[1 if outcome.error is None else 2] += 1
                if outcome.error is None:
                    del self._rows[outcome.id]
                    self._done[row.record.worker] = self._done.get(row.record.worker, 0) + 1
                elif outcome.retry_in is not None:
                    row.record.errors.append(outcome.error)
                    row.record.node = None
                    row.token = None
                    self._push_scheduled(row, now + outcome.retry_in)
                else:
                    self._fail(row, outcome.error, now)
            return AckReport(accepted, tuple(rejected))

    def _fail(self, row: _Row, error: JobError, now: float) -> None:
        row.record.state = JobState.FAILED
        row.record.errors.append(error)
        row.record.finished_at = now
        row.record.node = None
        row.token = None

    def hand_back(self, node_id: str, jobs: Sequence[tuple[str, str]]) -> int:
        with self._lock:
            self._check()
            released = 0
            for job_id, token in jobs:
                row = self._holds(job_id, token)
                if row is None:
                    continue
                row.record.attempt -= 1
                row.record.node = None
                row.token = None
                self._push_available(row)
                released += 1
            return released

    def held_by(self, node_id: str) -> list[tuple[str, str]]:
        with self._lock:
            self._check()
            return [
                (row.record.id, row.token)
                for row in self._rows.values()
                if row.record.state is JobState.RUNNING
                and row.record.node == node_id
                and row.token is not None
            ]

    def register_node(self, info: NodeInfo) -> None:
        with self._lock:
            self._check()
            now = time.time()
            self._nodes[info.id] = replace(info, heartbeat_at=now)

    def heartbeat(self, node_id: str) -> bool:
        with self._lock:
            self._check()
            info = self._nodes.get(node_id)
            if info is None:
                return False
            self._nodes[node_id] = replace(info, heartbeat_at=time.time())
            return True

    def unregister_node(self, node_id: str) -> None:
        with self._lock:
            self._check()
            self._nodes.pop(node_id, None)

    def take_over(self, timeout: float, max_node_deaths: int) -> TakeoverReport:
        with self._lock:
            self._check()
            now = time.time()
            dead = [n for n, info in self._nodes.items() if info.heartbeat_at < now - timeout]
            for node_id in dead:
                del self._nodes[node_id]
            requeued: list[str] = []
            failed: list[str] = []
            lost = [
                row
                for row in self._rows.values()
                if row.record.state is JobState.RUNNING and row.record.node not in self._nodes
            ]
            company: dict[str | None, int] = {}
            for row in lost:
                company[row.record.node] = company.get(row.record.node, 0) + 1
            for row in lost:
                record = row.record
                row.node_deaths += 1
                self._deaths = True
                alone = company[record.node] == 1
                if row.node_deaths >= max_node_deaths and not alone:
                    row.node_deaths = max_node_deaths - 1  # not proven guilty: a suspect
                error = _node_lost(record, row.node_deaths, alone)
                if row.node_deaths >= max_node_deaths:
                    self._fail(row, error, now)
                    failed.append(record.id)
                else:
                    record.errors.append(error)
                    record.attempt -= 1  # the lost run does not count towards retries
                    record.node = None
                    row.token = None
                    self._push_available(row)
                    requeued.append(record.id)
            return TakeoverReport(tuple(dead), tuple(requeued), tuple(failed))

    def fail_unrunnable(self, older_than: float) -> list[str]:
        with self._lock:
            self._check()
            known = {w for info in self._nodes.values() for w in info.workers}
            now = time.time()
            failed: list[str] = []
            for row in self._rows.values():
                record = row.record
                if (
                    record.state is JobState.AVAILABLE
                    and record.worker not in known
                    and record.enqueued_at < now - older_than
                ):
                    self._fail(row, _unknown_worker(record), now)
                    failed.append(record.id)
            return failed

    def _select(self, state: JobState, ids: Sequence[str] | None, worker: str | None) -> list[_Row]:
        rows = (
            self._rows.values() if ids is None else [self._rows[i] for i in ids if i in self._rows]
        )
        return [
            row
            for row in rows
            if row.record.state is state and (worker is None or row.record.worker == worker)
        ]

    def jobs(
        self, state: JobState, worker: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[JobRecord]:
        with self._lock:
            self._check()
            rows = self._select(state, None, worker)
            if state is JobState.FAILED:
                rows.sort(key=lambda r: (-(r.record.finished_at or 0), -r.seq))
            elif state is JobState.SCHEDULED:
                rows.sort(key=lambda r: (r.record.run_at or 0, r.seq))
            else:
                rows.sort(key=lambda r: r.seq)
            return [self._copy(row) for row in rows[offset : offset + limit]]

    def retry_failed(self, ids: Sequence[str] | None = None, worker: str | None = None) -> int:
        with self._lock:
            self._check()
            rows = self._select(JobState.FAILED, ids, worker)
            for row in rows:
                row.record.attempt = 0
                row.node_deaths = 0
                row.record.finished_at = None
                row.record.run_at = None
                self._push_available(row)
            return len(rows)

    def delete_failed(self, ids: Sequence[str] | None = None, worker: str | None = None) -> int:
        with self._lock:
            self._check()
            rows = self._select(JobState.FAILED, ids, worker)
            for row in rows:
                del self._rows[row.record.id]
            return len(rows)

    def release_scheduled(self, ids: Sequence[str] | None = None, worker: str | None = None) -> int:
        with self._lock:
            self._check()
            rows = self._select(JobState.SCHEDULED, ids, worker)
            for row in rows:
                row.record.run_at = time.time()
                self._push_available(row)
            return len(rows)

    def prune_failed(self, max_count: int, max_age: float) -> int:
        with self._lock:
            self._check()
            rows = self._select(JobState.FAILED, None, None)
            rows.sort(key=lambda r: (-(r.record.finished_at or 0), -r.seq))  # newest first
            cutoff = time.time() - max_age
            doomed = [
                row
                for i, row in enumerate(rows)
                if i >= max_count or (row.record.finished_at or 0) < cutoff
            ]
            for row in doomed:
                del self._rows[row.record.id]
            return len(doomed)

    @staticmethod
    def _copy(row: _Row) -> JobRecord:
        return replace(row.record, errors=list(row.record.errors), options=dict(row.record.options))

    def nodes(self) -> list[NodeInfo]:
        with self._lock:
            self._check()
            return list(self._nodes.values())

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._lock:
            self._check()
            row = self._rows.get(job_id)
            return None if row is None else self._copy(row)

    def counts(self) -> dict[str, dict[str, int]]:
        with self._lock:
            self._check()
            counts: dict[str, dict[str, int]] = {}
            for row in self._rows.values():
                per = counts.setdefault(row.record.worker, {})
                per[row.record.state.value] = per.get(row.record.state.value, 0) + 1
            for worker, done in self._done.items():
                counts.setdefault(worker, {})["done"] = done
            return counts

    def finished_recently(self, window: int = 60) -> dict[str, dict[str, int]]:
        check_window(window)
        with self._lock:
            self._check()
            now = time.time()
            found: dict[str, dict[str, int]] = {}
            for (_, worker), (sec, done, errors) in self._rate.items():
                if in_window(sec, now, window):
                    per = found.setdefault(worker, {"done": 0, "errors": 0})
                    per["done"] += done
                    per["errors"] += errors
            return found

    def close(self) -> None:
        with self._lock:
            self._closed = True


def _node_lost(record: JobRecord, deaths: int, alone: bool) -> JobError:
    return JobError.reason(
        NODE_LOST,
        f"node {record.node} stopped heart-beating while running this job "
        f"{'alone' if alone else 'with others'} (node lost {deaths} time(s))",
        attempt=record.attempt,
        node=record.node,
    )


def _unknown_worker(record: JobRecord) -> JobError:
    return JobError.reason(
        CANNOT_RUN,
        f"unknown worker {record.worker!r}: no live node registers it",
        attempt=record.attempt,
        node=None,
    )
