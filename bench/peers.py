"""Who is measured, in which virtual environment, configured how. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Every workload, in the order they run and are reported.
WORKLOADS = ("W1", "W1-bulk", "W2", "W3", "C100k", "T")

#: The real peers (a figure's "best peer" is the best of these).
PEERS = ("rq", "arq", "dramatiq", "huey", "celery", "saq", "taskiq", "streaq")


@dataclass(frozen=True)
class Venv:
    """One virtual environment under the cache directory: ``requirements/<name>.txt``
    (every package pinned), plus toniq from this repository (editable) for ``toniq``."""

    name: str
    package: str  # the distribution whose version the report shows
    editable_repo: bool = False


VENVS = {
    v.name: v
    for v in (
        Venv("toniq", "toniq", editable_repo=True),
        Venv("rq", "rq"),
        Venv("arq", "arq"),
        Venv("dramatiq", "dramatiq"),
        Venv("huey", "huey"),
        Venv("celery", "celery"),
        Venv("saq", "saq"),
        Venv("taskiq", "taskiq"),
        Venv("streaq", "streaq"),
    )
}


@dataclass(frozen=True)
class Participant:
    name: str
    venv: str
    adapter: str
    db: int  # its own Redis database number
    config: str  # how it is configured, for the report
    workloads: tuple[str, ...]
    backend: str = "redis"  # or "sqlite"
    settings: dict[str, Any] = field(default_factory=dict)  # BENCH_SETTINGS for every run
    per_workload: dict[str, dict[str, Any]] = field(default_factory=dict)  # ... for one workload
    na: dict[str, str] = field(default_factory=dict)  # workload -> why it does not apply

    def settings_for(self, workload: str) -> dict[str, Any]:
        return {**self.settings, **self.per_workload.get(workload, {})}


REDIS_WORKLOADS = ("W1", "W1-bulk", "W2", "W3", "C100k", "T")
SYNC_ONLY = "no asyncio jobs: a sleeping job holds a thread or process"

PARTICIPANTS: tuple[Participant, ...] = (
    Participant(
        "toniq",
        "toniq",
        "toniq",
        1,
        "`toniq worker adapters.toniq_bench --log-level WARNING`: one node, default settings "
        "(claim_batch 256, threads 64, poll_interval 0.05 s, heartbeat 2 s, takeover_timeout "
        "10 s, takeover_interval 2 s; `toniq worker` sets the process's GIL switch interval "
        "to 0.5 ms and the GC thresholds to (10000, 10, 100), see docs/settings.md); "
        "`async def perform` jobs, no concurrency limit; payloads signed (HMAC-SHA256)",
        REDIS_WORKLOADS,
    ),
    Participant(
        "toniq-def",
        "toniq",
        "toniq",
        2,
        "as toniq, with plain `def perform` jobs (run in the node's 64-thread pool)",
        ("W2", "W3"),
        settings={"jobs": "def"},
    ),
    Participant(
        "toniq-short",
        "toniq",
        "toniq",
        3,
        "as toniq, with short lease settings: heartbeat_interval 0.5 s, takeover_timeout 2 s, "
        "takeover_interval 0.5 s",
        ("T",),
        settings={"takeover": "short"},
    ),
    Participant(
        "toniq-async",
        "toniq",
        "toniq",
        12,
        "as toniq, enqueueing with `await app.enqueue_async(...)` (one coroutine, one job at a "
        "time) instead of `app.enqueue(...)`",
        ("W1",),
        settings={"enqueue": "async"},
    ),
    Participant(
        "rq",
        "rq",
        "rq",
        4,
        "`rq worker -w rq.worker.SimpleWorker --logging_level WARNING`: one process that runs "
        "each job itself (RQ's default `Worker` forks a child per job: several times slower); "
        "one job at a time, so T kills it while it runs 1 job",
        REDIS_WORKLOADS,
        na={"C100k": SYNC_ONLY},
    ),
    Participant(
        "arq",
        "arq",
        "arq",
        5,
        "`arq.run_worker(WorkerSettings)`, `max_jobs` 256 (100,000 for C100k), other settings "
        "default (poll_delay 0.5 s, job_timeout 300 s); logging at WARNING (the `arq` command "
        "logs each job at INFO)",
        REDIS_WORKLOADS,
        per_workload={"C100k": {"concurrency": 100_000}},
    ),
    Participant(
        "dramatiq",
        "dramatiq",
        "dramatiq",
        6,
        "`dramatiq adapters.dramatiq_bench --processes 1 --threads 8` (Dramatiq's default 8 "
        "threads, one worker process), `RedisBroker` defaults (heartbeat_timeout 60 s), "
        "`max_retries=0`, dramatiq logger at WARNING",
        REDIS_WORKLOADS,
        na={"C100k": "async actors each hold one of the worker's threads while they run"},
    ),
    Participant(
        "huey",
        "huey",
        "huey",
        7,
        "`huey_consumer adapters.huey_bench.huey -w 4 -k thread -q`: one process, 4 worker "
        "threads, `RedisHuey` (blocking dequeue), logging at WARNING",
        REDIS_WORKLOADS,
        na={"C100k": SYNC_ONLY},
    ),
    Participant(
        "celery",
        "celery",
        "celery",
        8,
        "`celery -A adapters.celery_bench worker --pool threads --concurrency 8 --loglevel "
        "WARNING`: one process (the prefork pool would add a process per slot), Redis broker, "
        "no result backend, other settings default (prefetch multiplier 4, acks early)",
        REDIS_WORKLOADS,
        na={"C100k": "no `async def` tasks"},
    ),
    Participant(
        "saq",
        "saq",
        "saq",
        9,
        "`saq adapters.saq_bench.settings` (one process, logs at ERROR), `concurrency` 256 "
        "(5,000 for C100k: each slot is a blocking Redis call on a connection of its own), "
        "other settings default",
        REDIS_WORKLOADS,
        per_workload={"C100k": {"concurrency": 5_000}},
    ),
    Participant(
        "taskiq",
        "taskiq",
        "taskiq",
        10,
        "`taskiq worker adapters.taskiq_bench:broker --workers 1 --max-async-tasks 256 "
        "--log-level WARNING` (100,000 async tasks for C100k), taskiq-redis `RedisStreamBroker` "
        "(acknowledged; idle_timeout 10 min), no result backend",
        REDIS_WORKLOADS,
        per_workload={"C100k": {"concurrency": 100_000}},
    ),
    Participant(
        "streaq",
        "streaq",
        "streaq",
        11,
        "`Worker(concurrency=256).run_sync()` (100,000 for C100k), other settings default "
        "(idle_timeout 60 s), logging at WARNING (`streaq run` forces INFO, a line per task)",
        REDIS_WORKLOADS,
        per_workload={"C100k": {"concurrency": 100_000}},
    ),
    Participant(
        "toniq-sqlite",
        "toniq",
        "toniq",
        0,
        "as toniq, on `sqlite:///<fresh file>` (WAL, toniq's defaults)",
        ("W1", "W2"),
        backend="sqlite",
    ),
    Participant(
        "huey-sqlite",
        "huey",
        "huey",
        0,
        "as huey, on `SqliteHuey(filename=<fresh file>)` (WAL, huey's defaults; the consumer "
        "polls from 0.1 s, backing off when idle)",
        ("W1", "W2"),
        backend="sqlite",
    ),
)

BY_NAME = {p.name: p for p in PARTICIPANTS}
#: ``--only toniq`` also selects its variants.
GROUPS = {
    "toniq": ("toniq", "toniq-def", "toniq-short", "toniq-async", "toniq-sqlite"),
    "huey": ("huey", "huey-sqlite"),
}
