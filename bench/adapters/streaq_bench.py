"""streaq: one ``Worker(concurrency=256)`` (100,000 for C100k) run by ``worker.run_sync()``
with logging at WARNING (the ``streaq run`` command forces INFO, a line per task). Bulk:
``Worker.enqueue_many`` (one pipeline) in lists of 1,000."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from streaq import Worker

from adapters.base import HANG_POLL, Adapter, python, settings, url
from common import job_marks, mark

worker = Worker(
    redis_url=url(),
    queue_name="bench",
    concurrency=int(settings().get("concurrency", 256)),
    handle_signals=True,
)


@worker.task
async def noop(i: int) -> None:
    mark(i)


@worker.task
async def sleep(i: int) -> None:
    await asyncio.sleep(1)
    mark(i)


@worker.task
async def hang(i: int) -> None:
    mark(i)
    marks = job_marks()
    while not marks.released():
        await asyncio.sleep(HANG_POLL)


TASKS: dict[str, Any] = {"noop": noop, "sleep": sleep, "hang": hang}


class Bench(Adapter):
    is_async = True
    bulk = "Worker.enqueue_many([task.enqueue(i), ...]) in lists of 1,000 (one pipeline each)"

    def worker_argv(self) -> list[str]:
        return [python(), "-c", "import adapters.streaq_bench as m; m.main()"]

    async def open(self) -> None:
        await worker.__aenter__()

    async def enqueue(self, kind: str, i: int) -> None:
        await TASKS[kind].enqueue(i)

    async def enqueue_bulk(self, kind: str, indices: list[int]) -> None:
        task = TASKS[kind]
        await worker.enqueue_many([task.enqueue(i) for i in indices])

    async def close(self) -> None:
        await worker.__aexit__(None, None, None)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    worker.run_sync()
