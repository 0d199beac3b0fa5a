"""What the store says now: jobs per worker and state, live nodes and what they run, and
the throughput of the last minute. ``toniq status`` prints it; tools (a dashboard, a
script) call :func:`snapshot` and read the result or its :meth:`Status.to_dict`.

Throughput comes from the store, not from this process: every backend counts acknowledged
runs per worker in one-second buckets of its own clock (:meth:`Backend.finished_recently`),
so a one-shot ``toniq status`` in any process sees what every node finished in the last
minute. ``per_second`` is the runs finished (done, retried or failed) in the window divided
by its length.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from toniq.job import JobState
from toniq.settings import redact

if TYPE_CHECKING:
    from toniq.app import Toniq
    from toniq.node import Node

logger = logging.getLogger("toniq")

#: The version of :meth:`Status.to_dict`'s shape (``toniq status --json``). Fields may be
#: added within a version; none is removed or changes meaning without a new version.
SCHEMA_VERSION = 1
#: RUNNING jobs a snapshot lists at most (their counts per worker are always exact).
RUNNING_LIMIT = 1000
_STATES = ("available", "scheduled", "running", "failed")


@dataclass(frozen=True)
class WorkerStatus:
    """One worker's jobs in the store. ``done`` is the all-time done counter; ``done_recently``
    and ``errors_recently`` are runs finished in the last ``window`` seconds (errors: runs
    that raised, retried or failed), ``per_second`` their sum divided by the window."""

    name: str
    available: int = 0
    scheduled: int = 0
    running: int = 0
    failed: int = 0
    done: int = 0
    done_recently: int = 0
    errors_recently: int = 0
    per_second: float = 0.0


@dataclass(frozen=True)
class RunningJob:
    """A RUNNING job: which node holds it and since when (store clock)."""

    id: str
    worker: str
    node: str | None
    attempt: int
    started_at: float | None
    running_for: float | None


@dataclass(frozen=True)
class NodeStatus:
    """A live node: its heartbeat and the jobs it runs now (as listed in the snapshot)."""

    id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    heartbeat_age: float
    workers: tuple[str, ...]
    running: tuple[RunningJob, ...] = ()


@dataclass(frozen=True)
class Status:
    """One look at the store (see :func:`snapshot`)."""

    url: str
    at: float
    window: int
    workers: tuple[WorkerStatus, ...]
    nodes: tuple[NodeStatus, ...]
    #: RUNNING jobs whose node is no longer registered: they wait to be taken over.
    orphaned: tuple[RunningJob, ...] = ()
    #: True when more than the listed RUNNING jobs exist (see ``running_limit``).
    running_truncated: bool = False
    totals: dict[str, float] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        """Runs finished per second over the window, all workers together."""
        return sum(w.per_second for w in self.workers)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``toniq status --json`` (documented in docs/status.md)."""
        return {
            "schema": SCHEMA_VERSION,
            "url": self.url,
            "time": self.at,
            "window": self.window,
            "totals": dict(self.totals),
            "workers": [_worker_dict(w) for w in self.workers],
            "nodes": [
                {
                    "id": n.id,
                    "host": n.host,
                    "pid": n.pid,
                    "started_at": n.started_at,
                    "heartbeat_at": n.heartbeat_at,
                    "heartbeat_age": n.heartbeat_age,
                    "workers": list(n.workers),
                    "running": [_job_dict(j) for j in n.running],
                }
                for n in self.nodes
            ],
            "orphaned": [_job_dict(j) for j in self.orphaned],
            "running_truncated": self.running_truncated,
        }


def _worker_dict(w: WorkerStatus) -> dict[str, Any]:
    return {
        "name": w.name,
        "available": w.available,
        "scheduled": w.scheduled,
        "running": w.running,
        "failed": w.failed,
        "done": w.done,
        "done_recently": w.done_recently,
        "errors_recently": w.errors_recently,
        "per_second": w.per_second,
    }


def _job_dict(j: RunningJob) -> dict[str, Any]:
    return {
        "id": j.id,
        "worker": j.worker,
        "node": j.node,
        "attempt": j.attempt,
        "started_at": j.started_at,
        "running_for": j.running_for,
    }


def snapshot(
    app: Toniq | None = None, *, window: int = 60, running_limit: int = RUNNING_LIMIT
) -> Status:
    """Read the store's status: counts per worker, live nodes with their running jobs
    (oldest first, at most ``running_limit`` listed), and runs finished per second over the
    last ``window`` seconds (1 to 60). Read-only. Example::

        status = toniq.status.snapshot()
        print(status.per_second, [n.id for n in status.nodes])
        json.dumps(status.to_dict())
    """
    from toniq.app import get_app

    app = app or get_app()
    backend = app.backend
    recent = backend.finished_recently(window)
    counts = backend.counts()
    nodes = backend.nodes()
    running = backend.jobs(JobState.RUNNING, None, running_limit, 0) if running_limit > 0 else []
    now = time.time()

    workers: list[WorkerStatus] = []
    for name in sorted(counts.keys() | recent.keys()):
        per = counts.get(name, {})
        rate = recent.get(name, {})
        done_recently, errors_recently = rate.get("done", 0), rate.get("errors", 0)
        workers.append(
            WorkerStatus(
                name,
                available=per.get("available", 0),
                scheduled=per.get("scheduled", 0),
                running=per.get("running", 0),
                failed=per.get("failed", 0),
                done=per.get("done", 0),
                done_recently=done_recently,
                errors_recently=errors_recently,
                per_second=(done_recently + errors_recently) / window,
            )
        )

    jobs_by_node: dict[str | None, list[RunningJob]] = {}
    for record in running:
        jobs_by_node.setdefault(record.node, []).append(
            RunningJob(
                record.id,
                record.worker,
                record.node,
                record.attempt,
                record.started_at,
                None if record.started_at is None else max(0.0, now - record.started_at),
            )
        )
    live = {n.id for n in nodes}
    node_status = tuple(
        NodeStatus(
            n.id,
            n.host,
            n.pid,
            n.started_at,
            n.heartbeat_at,
            max(0.0, now - n.heartbeat_at),
            n.workers,
            tuple(jobs_by_node.get(n.id, ())),
        )
        for n in nodes
    )
    orphaned = tuple(j for node, jobs in jobs_by_node.items() if node not in live for j in jobs)
    total_running = sum(w.running for w in workers)
    totals: dict[str, float] = {state: sum(getattr(w, state) for w in workers) for state in _STATES}
    totals["done"] = sum(w.done for w in workers)
    totals["done_recently"] = sum(w.done_recently for w in workers)
    totals["errors_recently"] = sum(w.errors_recently for w in workers)
    totals["per_second"] = sum(w.per_second for w in workers)
    totals["nodes"] = len(nodes)
    return Status(
        url=redact(app.url),
        at=now,
        window=window,
        workers=tuple(workers),
        nodes=node_status,
        orphaned=orphaned,
        running_truncated=len(running) < total_running,
        totals=totals,
    )


# -- the terminal view ------------------------------------------------------------------------


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def render(status: Status, *, jobs_per_node: int = 5) -> Any:
    """A :mod:`rich` renderable of ``status`` (what ``toniq status`` prints)."""
    from datetime import datetime

    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    t = status.totals
    header = Text.assemble(
        ("toniq status ", "bold"),
        f"{status.url}  at {datetime.fromtimestamp(status.at):%Y-%m-%d %H:%M:%S}  ",
        (f"{status.per_second:.2f} jobs/s", "bold green"),
        f" over the last {status.window}s  ",
        f"{int(t.get('nodes', 0))} node(s)",
    )
    workers = Table(title="Workers", title_justify="left", expand=False)
    workers.add_column("worker", no_wrap=True, overflow="fold")
    for name in (*_STATES, "done", f"done/{status.window}s", f"errors/{status.window}s", "jobs/s"):
        workers.add_column(name, justify="right", no_wrap=True, min_width=len(name))
    for w in status.workers:
        workers.add_row(
            w.name,
            str(w.available),
            str(w.scheduled),
            str(w.running),
            Text(str(w.failed), style="red" if w.failed else ""),
            str(w.done),
            str(w.done_recently),
            Text(str(w.errors_recently), style="red" if w.errors_recently else ""),
            f"{w.per_second:.2f}",
        )
    if not status.workers:
        workers.add_row("(no jobs yet)", *[""] * 8)
    nodes = Table(title="Nodes", title_justify="left", expand=False)
    for name in ("node", "host", "pid", "up", "heartbeat", "running", "longest running"):
        nodes.add_column(
            name,
            justify="right" if name in ("pid", "running") else "left",
            no_wrap=name != "longest running",
            min_width=len(name),
        )
    for n in status.nodes:
        jobs = sorted(n.running, key=lambda j: -(j.running_for or 0.0))
        longest = ", ".join(
            f"{j.worker} {j.id[:8]} {_ago(j.running_for)}" for j in jobs[:jobs_per_node]
        )
        if len(jobs) > jobs_per_node:
            longest += f", … {len(jobs) - jobs_per_node} more"
        nodes.add_row(
            n.id,
            n.host,
            str(n.pid),
            _ago(status.at - n.started_at),
            f"{_ago(n.heartbeat_age)} ago",
            str(len(n.running)),
            longest or "-",
        )
    if not status.nodes:
        nodes.add_row("(no live node)", *[""] * 6)
    parts: list[Any] = [header, workers, nodes]
    if status.orphaned:
        parts.append(
            Text(
                f"{len(status.orphaned)} running job(s) of nodes that are gone: they will be "
                "taken over",
                style="yellow",
            )
        )
    if status.running_truncated:
        parts.append(Text("(running jobs listed in part; counts are exact)", style="dim"))
    return Group(*parts)


# -- the node's periodic summary --------------------------------------------------------------


class ThroughputLog:
    """Logs one INFO line every ``interval`` seconds about what ``node`` did meanwhile::

        toniq: last 60s: 1200 done, 3 retried, 1 failed (20.1 jobs/s); 12 running

    ``toniq worker`` starts one (``--summary-interval``, default 60 s, 0 for none). Example::

        with toniq.Node(app) as node, ThroughputLog(node, interval=10):
            ...
    """

    def __init__(self, node: Node, interval: float = 60.0) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self.node = node
        self.interval = float(interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ThroughputLog:
        self._thread = threading.Thread(target=self._run, name="toniq-summary", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> ThroughputLog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _counts(self) -> tuple[int, int, int]:
        s = self.node.stats
        return s.done + s.local_done, s.retried, s.failed + s.local_failed

    def _run(self) -> None:
        last, since = self._counts(), time.monotonic()
        while not self._stop.wait(self.interval):
            now, counts = time.monotonic(), self._counts()
            done, retried, failed = (a - b for a, b in zip(counts, last, strict=True))
            elapsed = max(now - since, 1e-9)
            logger.info(
                "toniq: last %.3gs: %d done, %d retried, %d failed (%.1f jobs/s); %d running",
                elapsed,
                done,
                retried,
                failed,
                (done + retried + failed) / elapsed,
                self.node.running,
            )
            last, since = counts, now
