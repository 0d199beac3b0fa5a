"""SAQ: ``saq adapters.saq_bench.settings`` (one process; the CLI logs at ERROR without
``-v``) with ``concurrency`` 256 (100,000 for C100k), on its Redis queue. No bulk API
(``Queue.batch`` only groups enqueues for cancellation; ``Queue.map`` also waits)."""

from __future__ import annotations

import asyncio
from typing import Any

from saq import Queue

from adapters.base import HANG_POLL, Adapter, settings, url, venv_bin
from common import job_marks, mark


async def noop(ctx: dict[str, Any], *, i: int) -> None:
    mark(i)


async def sleep(ctx: dict[str, Any], *, i: int) -> None:
    await asyncio.sleep(1)
    mark(i)


async def hang(ctx: dict[str, Any], *, i: int) -> None:
    mark(i)
    marks = job_marks()
    while not marks.released():
        await asyncio.sleep(HANG_POLL)


settings_ = settings()
settings = {  # the name the saq command reads
    "queue": Queue.from_url(url(), name="bench"),
    "functions": [noop, sleep, hang],
    "concurrency": int(settings_.get("concurrency", 256)),
}


class Bench(Adapter):
    is_async = True

    def worker_argv(self) -> list[str]:
        return [venv_bin("saq"), "adapters.saq_bench.settings"]

    async def open(self) -> None:
        self.queue: Any = Queue.from_url(url(), name="bench")
        await self.queue.connect()

    async def enqueue(self, kind: str, i: int) -> None:
        await self.queue.enqueue(kind, i=i)

    async def close(self) -> None:
        await self.queue.disconnect()
