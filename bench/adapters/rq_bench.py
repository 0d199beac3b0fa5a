"""RQ: ``rq worker -w rq.worker.SimpleWorker`` (one process that runs jobs itself; RQ's
default ``Worker`` forks a child per job, several times slower), logging at WARNING.
Bulk: ``Queue.enqueue_many`` (one pipeline per call)."""

from __future__ import annotations

import time

from redis import Redis
from rq import Queue

from adapters.base import HANG_POLL, Adapter, url, venv_bin
from common import job_marks, mark

QUEUE = "bench"


def noop(i: int) -> None:
    mark(i)


def hang(i: int) -> None:
    mark(i)
    marks = job_marks()
    while not marks.released():
        time.sleep(HANG_POLL)


FUNCS = {"noop": noop, "hang": hang}


class Bench(Adapter):
    bulk = "Queue.enqueue_many([Queue.prepare_data(...), ...]) in lists of 1,000"
    takeover_jobs = 1  # a SimpleWorker runs one job at a time

    def worker_argv(self) -> list[str]:
        return [
            venv_bin("rq"),
            "worker",
            "-w",
            "rq.worker.SimpleWorker",
            "-u",
            url(),
            "--logging_level",
            "WARNING",
            QUEUE,
        ]

    def open(self) -> None:
        self.redis = Redis.from_url(url())
        self.queue = Queue(QUEUE, connection=self.redis)

    def enqueue(self, kind: str, i: int) -> None:
        self.queue.enqueue(FUNCS[kind], i)

    def enqueue_bulk(self, kind: str, indices: list[int]) -> None:
        func = FUNCS[kind]
        self.queue.enqueue_many([Queue.prepare_data(func, (i,)) for i in indices])

    def close(self) -> None:
        self.redis.close()
