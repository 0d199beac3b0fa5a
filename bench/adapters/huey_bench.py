"""Huey: ``huey_consumer adapters.huey_bench.huey -w 4 -k thread -q`` (one process, 4 worker
threads), on ``RedisHuey`` (blocking dequeue) or, with ``BENCH_URL=sqlite:///path``,
``SqliteHuey`` (WAL). No bulk API (``task.map`` enqueues one at a time)."""

from __future__ import annotations

import time

from huey import RedisHuey, SqliteHuey

from adapters.base import HANG_POLL, Adapter, settings, url, venv_bin
from common import job_marks, mark

URL = url()
WORKERS = int(settings().get("concurrency", 4))

if URL.startswith("sqlite:///"):
    huey = SqliteHuey("bench", filename=URL[len("sqlite:///") :])
else:
    huey = RedisHuey("bench", url=URL)


@huey.task()
def noop(i: int) -> None:
    mark(i)


@huey.task()
def hang(i: int) -> None:
    mark(i)
    marks = job_marks()
    while not marks.released():
        time.sleep(HANG_POLL)


TASKS = {"noop": noop, "hang": hang}


class Bench(Adapter):
    def worker_argv(self) -> list[str]:
        return [
            venv_bin("huey_consumer"),
            "adapters.huey_bench.huey",
            "-w",
            str(WORKERS),
            "-k",
            "thread",
            "-q",
        ]

    def enqueue(self, kind: str, i: int) -> None:
        TASKS[kind](i)
