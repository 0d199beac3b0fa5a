"""arq: one ``arq.Worker`` with ``max_jobs`` 256 (100,000 for C100k), logging at WARNING (the
``arq`` command logs every job at INFO, so the worker is started by ``run_worker`` here).
No bulk API."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from arq import create_pool, run_worker
from arq.connections import RedisSettings

from adapters.base import HANG_POLL, Adapter, python, settings, url
from common import job_marks, mark

SETTINGS = settings()


async def noop(ctx: dict[str, Any], i: int) -> None:
    mark(i)


async def sleep(ctx: dict[str, Any], i: int) -> None:
    await asyncio.sleep(1)
    mark(i)


async def hang(ctx: dict[str, Any], i: int) -> None:
    mark(i)
    marks = job_marks()
    while not marks.released():
        await asyncio.sleep(HANG_POLL)


class WorkerSettings:
    functions = [noop, sleep, hang]
    redis_settings = RedisSettings.from_dsn(url())
    max_jobs = int(SETTINGS.get("concurrency", 256))


class Bench(Adapter):
    is_async = True

    def worker_argv(self) -> list[str]:
        return [python(), "-c", "import adapters.arq_bench as m; m.main()"]

    async def open(self) -> None:
        self.pool = await create_pool(RedisSettings.from_dsn(url()))

    async def enqueue(self, kind: str, i: int) -> None:
        await self.pool.enqueue_job(kind, i)

    async def close(self) -> None:
        await self.pool.aclose()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    run_worker(WorkerSettings)  # type: ignore[arg-type]
