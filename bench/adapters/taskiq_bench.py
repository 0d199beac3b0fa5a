"""taskiq with taskiq-redis's ``RedisStreamBroker`` (acknowledged; the broker its README
shows first): ``taskiq worker adapters.taskiq_bench:broker --workers 1 --max-async-tasks 256
--log-level WARNING`` (100,000 async tasks for C100k). No bulk API."""

from __future__ import annotations

import asyncio
from typing import Any

from taskiq_redis import RedisStreamBroker

from adapters.base import HANG_POLL, Adapter, settings, url, venv_bin
from common import job_marks, mark

CONCURRENCY = int(settings().get("concurrency", 256))
broker = RedisStreamBroker(url=url(), queue_name="bench")


@broker.task(task_name="bench.noop")
async def noop(i: int) -> None:
    mark(i)


@broker.task(task_name="bench.sleep")
async def sleep(i: int) -> None:
    await asyncio.sleep(1)
    mark(i)


@broker.task(task_name="bench.hang")
async def hang(i: int) -> None:
    mark(i)
    marks = job_marks()
    while not marks.released():
        await asyncio.sleep(HANG_POLL)


TASKS: dict[str, Any] = {"noop": noop, "sleep": sleep, "hang": hang}


class Bench(Adapter):
    is_async = True

    def worker_argv(self) -> list[str]:
        return [
            venv_bin("taskiq"),
            "worker",
            "adapters.taskiq_bench:broker",
            "--workers",
            "1",
            "--max-async-tasks",
            str(CONCURRENCY),
            "--log-level",
            "WARNING",
        ]

    async def open(self) -> None:
        await broker.startup()

    async def enqueue(self, kind: str, i: int) -> None:
        await TASKS[kind].kiq(i)

    async def close(self) -> None:
        await broker.shutdown()
