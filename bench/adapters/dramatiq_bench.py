"""Dramatiq: ``dramatiq adapters.dramatiq_bench --processes 1 --threads 8`` (one worker
process, Dramatiq's default 8 threads) on its ``RedisBroker``, logging at WARNING.
No bulk API (``group(...).run()`` enqueues its messages one at a time)."""

from __future__ import annotations

import logging
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from adapters.base import HANG_POLL, Adapter, settings, url, venv_bin
from common import job_marks, mark

logging.getLogger("dramatiq").setLevel(logging.WARNING)
THREADS = int(settings().get("concurrency", 8))

broker = RedisBroker(url=url())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench", max_retries=0)
def noop(i: int) -> None:
    mark(i)


@dramatiq.actor(queue_name="bench", max_retries=0)
def hang(i: int) -> None:
    mark(i)
    marks = job_marks()
    while not marks.released():
        time.sleep(HANG_POLL)


ACTORS = {"noop": noop, "hang": hang}


class Bench(Adapter):
    def worker_argv(self) -> list[str]:
        return [
            venv_bin("dramatiq"),
            "adapters.dramatiq_bench",
            "--processes",
            "1",
            "--threads",
            str(THREADS),
        ]

    def enqueue(self, kind: str, i: int) -> None:
        ACTORS[kind].send(i)

    def close(self) -> None:
        broker.close()
