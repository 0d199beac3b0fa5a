"""Timeouts stop a run for real, record a timeout error and free the slot."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import toniq
from tests.workers import SlowAsync, SlowSync, probe
from toniq.job import TIMEOUT


@pytest.fixture(autouse=True)
def _reset() -> None:
    probe.reset()


def test_an_async_job_is_cancelled_at_its_timeout_and_frees_its_slot(app: toniq.Toniq) -> None:
    slow = SlowAsync.enqueue(30.0)  # timeout=0.3 on the worker, max_concurrency=1
    quick = SlowAsync.enqueue(0.01)
    started = time.monotonic()
    with toniq.Node(app) as node:
        node.drain()
    assert time.monotonic() - started < 5
    record = slow.info()
    assert record is not None and record.state is toniq.JobState.FAILED
    (error,) = record.errors
    assert error.type == TIMEOUT and "timeout of 0.3s" in error.message
    assert quick.info() is None  # it ran once the slot was free
    assert probe.running["SlowAsync"] == 0  # the slow one really stopped (its finally ran)


def test_a_def_job_is_killed_at_its_timeout(app: toniq.Toniq, tmp_path: Path) -> None:
    marker = tmp_path / "finished"
    handle = SlowSync.enqueue(3.0, str(marker))  # timeout=0.5: runs in a child process
    started = time.monotonic()
    with toniq.Node(app) as node:
        node.drain()
    assert time.monotonic() - started < 2.5
    record = handle.info()
    assert record is not None and record.state is toniq.JobState.FAILED
    assert record.errors[-1].type == TIMEOUT and "killed" in record.errors[-1].message
    time.sleep(3.0)  # long enough for the job to have finished, had it kept running
    assert not marker.exists()


def test_a_def_job_with_a_timeout_that_finishes_or_raises(app: toniq.Toniq, tmp_path: Path) -> None:
    marker = tmp_path / "finished"
    ok = SlowSync.enqueue(0.01, str(marker))
    bad = SlowSync.enqueue(-1.0, str(marker))
    with toniq.Node(app) as node:
        node.drain()
    assert ok.info() is None and marker.read_text() == "finished"
    record = bad.info()
    assert record is not None and record.errors[-1].type == "KeyError"
    assert "raise KeyError" in record.errors[-1].traceback  # the child's own traceback


def test_a_timeout_per_enqueue(app: toniq.Toniq) -> None:
    class Nap(toniq.Worker, name="tests.Nap", retries=0):
        async def perform(self, seconds: float) -> None:
            import asyncio

            await asyncio.sleep(seconds)

    handle = Nap.with_options(timeout=0.2).enqueue(30.0)
    assert handle.info().options == {"timeout": 0.2}  # type: ignore[union-attr]
    with toniq.Node(app) as node:
        node.drain()
    record = handle.info()
    assert record is not None and record.errors[-1].type == TIMEOUT


def test_a_jobs_own_timeout_error_is_not_a_toniq_timeout(app: toniq.Toniq) -> None:
    class OwnTimeout(toniq.Worker, name="tests.OwnTimeout", retries=0, timeout=10):
        async def perform(self) -> None:
            raise TimeoutError("the API timed out")

    handle = OwnTimeout.enqueue()
    with toniq.Node(app) as node:
        node.drain()
    record = handle.info()
    assert record is not None and record.errors[-1].type == "TimeoutError"


def test_a_persist_false_job_honours_a_timeout_per_enqueue(app: toniq.Toniq) -> None:
    class LocalNap(toniq.Worker, name="tests.LocalNap", persist=False):
        async def perform(self, seconds: float) -> None:
            import asyncio

            probe.enter("LocalNap")
            try:
                await asyncio.sleep(seconds)
            finally:
                probe.leave("LocalNap")

    with app.events.listen() as events, toniq.Node(app) as node:
        LocalNap.with_options(timeout=0.2).enqueue(30.0)
        event = events.get(timeout=10)
        node.drain()
    assert event.kind == "failed" and not event.persisted
    assert event.error is not None and event.error.type == TIMEOUT
    assert probe.running["LocalNap"] == 0
