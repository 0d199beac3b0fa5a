"""toniq: ``async def`` jobs (or ``def`` jobs with ``BENCH_SETTINGS={"jobs": "def"}``), the
default node settings, ``toniq worker adapters.toniq_bench --log-level WARNING``.

Bulk: ``app.enqueue_many(worker, [(i,), ...])``, one store call per 1,000 jobs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import toniq

from adapters.base import HANG_POLL, Adapter, settings, url
from common import job_marks, mark

SETTINGS = settings()
#: workload T: toniq's defaults, or the short settings
SHORT = {"heartbeat_interval": 0.5, "takeover_timeout": 2.0, "takeover_interval": 0.5}

#: Payloads are signed as in production; every process of a run shares this key (Redis needs
#: one; a fixed one is fine for a benchmark's private Redis).
SECRET = "toniq-bench-secret-0123456789abcdef"

app = toniq.configure(
    url=url(), secret=SECRET, **(SHORT if SETTINGS.get("takeover") == "short" else {})
)
# toniq makes its store client on first use, which on Redis imports redis-py (about 70 ms).
# The peers' adapters make theirs here, at import, outside the timed part: so does this one
# (no connection yet: that is made by the first call, as for the peers).
app.backend  # noqa: B018


class Noop(toniq.Worker, name="bench.noop"):
    async def perform(self, i: int) -> None:
        mark(i)


class NoopDef(toniq.Worker, name="bench.noop_def"):
    def perform(self, i: int) -> None:
        mark(i)


class Sleep(toniq.Worker, name="bench.sleep"):
    async def perform(self, i: int) -> None:
        await asyncio.sleep(1)
        mark(i)


class Hang(toniq.Worker, name="bench.hang"):
    async def perform(self, i: int) -> None:
        mark(i)
        marks = job_marks()
        while not marks.released():
            await asyncio.sleep(HANG_POLL)


class HangDef(toniq.Worker, name="bench.hang_def"):
    def perform(self, i: int) -> None:
        mark(i)
        marks = job_marks()
        while not marks.released():
            time.sleep(HANG_POLL)


DEF = SETTINGS.get("jobs") == "def"
WORKERS: dict[str, Any] = {
    "noop": NoopDef if DEF else Noop,
    "sleep": Sleep,
    "hang": HangDef if DEF else Hang,
}


class Bench(Adapter):
    bulk = "app.enqueue_many(worker, [(i,), ...]) in lists of 1,000"

    def worker_argv(self) -> list[str]:
        from adapters.base import venv_bin

        return [venv_bin("toniq"), "worker", "adapters.toniq_bench", "--log-level", "WARNING"]

    def enqueue(self, kind: str, i: int) -> None:
        app.enqueue(WORKERS[kind], i)

    def enqueue_bulk(self, kind: str, indices: list[int]) -> None:
        worker = WORKERS[kind]
        app.enqueue_many(worker, [(i,) for i in indices])

    def close(self) -> None:
        app.close()


class AsyncBench(Bench):
    """toniq-async: the same, from a coroutine (``await app.enqueue_async(...)``)."""

    is_async = True
    bulk = None

    async def enqueue(self, kind: str, i: int) -> None:  # type: ignore[override]
        await app.enqueue_async(WORKERS[kind], i)


if SETTINGS.get("enqueue") == "async":
    Bench = AsyncBench  # type: ignore[misc]
