"""Celery: ``celery -A adapters.celery_bench worker --pool threads --concurrency 8
--loglevel WARNING`` (one process; Celery's prefork pool would add a process per slot) on
its Redis broker, no result backend. Bulk: ``group(...).apply_async()`` in groups of 1,000
(Celery's batch primitive; it publishes one message per task)."""

from __future__ import annotations

import time

from celery import Celery, group

from adapters.base import HANG_POLL, Adapter, settings, url, venv_bin
from common import job_marks, mark

SETTINGS = settings()
POOL = str(SETTINGS.get("pool", "threads"))
CONCURRENCY = int(SETTINGS.get("concurrency", 8))

app = Celery("bench", broker=url())
app.conf.update(
    task_default_queue="bench",
    task_ignore_result=True,
    worker_hijack_root_logger=True,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop")
def noop(i: int) -> None:
    mark(i)


@app.task(name="bench.hang")
def hang(i: int) -> None:
    mark(i)
    marks = job_marks()
    while not marks.released():
        time.sleep(HANG_POLL)


TASKS = {"noop": noop, "hang": hang}


class Bench(Adapter):
    bulk = "group(task.s(i) for i in ...).apply_async() in groups of 1,000"

    def worker_argv(self) -> list[str]:
        return [
            venv_bin("celery"),
            "-A",
            "adapters.celery_bench",
            "worker",
            "--pool",
            POOL,
            "--concurrency",
            str(CONCURRENCY),
            "--loglevel",
            "WARNING",
            "-Q",
            "bench",
        ]

    def enqueue(self, kind: str, i: int) -> None:
        TASKS[kind].delay(i)

    def enqueue_bulk(self, kind: str, indices: list[int]) -> None:
        task = TASKS[kind]
        group(task.s(i) for i in indices).apply_async()
