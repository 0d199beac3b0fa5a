"""Retries with backoff, logging once per give-up, hooks and events."""

from __future__ import annotations

import itertools
import logging
import time

import pytest

import toniq
from tests.workers import Fails, Flaky, probe
from toniq.events import EventKind, JobEvent
from toniq.retries import default_backoff


@pytest.fixture(autouse=True)
def _reset() -> None:
    probe.reset()
    Flaky.attempts.clear()


def test_default_backoff_is_toniqs_with_a_little_jitter() -> None:
    for attempt, base in [(1, 0.25), (2, 4.0), (3, 20.25), (4, 64.0), (5, 156.25)]:
        delays = [default_backoff(attempt) for _ in range(50)]
        assert all(base <= d <= base * 1.1 for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert toniq.Settings().retries == 5


def test_a_job_that_always_raises_runs_retries_plus_one_times(
    app: toniq.Toniq, caplog: pytest.LogCaptureFixture
) -> None:
    handle = Flaky.enqueue("always", failures=99)
    with caplog.at_level(logging.WARNING, logger="toniq"), toniq.Node(app) as node:
        node.drain()
        deadline = time.monotonic() + 10
        while (record := handle.info()) and record.state is not toniq.JobState.FAILED:
            assert time.monotonic() < deadline
            node.drain()
    runs = Flaky.attempts["always"]
    assert len(runs) == 4  # retries=3
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    for n, gap in enumerate(gaps, start=1):
        # Backoff n * 0.1 s, plus the poll lag. The store schedules by the wall clock and
        # this test measures with time.monotonic(): 5 ms for a wall clock corrected
        # meanwhile (seen once: two gaps 0.07 and 0.5 ms short, in one second).
        assert 0.1 * n - 0.005 <= gap < 0.1 * n + 0.5, gaps
    assert record is not None
    assert [e.attempt for e in record.errors] == [1, 2, 3, 4]
    assert [e.message for e in record.errors] == [f"always failed run {i}" for i in range(1, 5)]
    about_it = [r for r in caplog.records if handle.id in r.getMessage()]
    warnings = [r for r in about_it if r.levelno == logging.WARNING]
    errors = [r for r in about_it if r.levelno == logging.ERROR]
    assert len(warnings) == 3 and len(errors) == 1
    assert "attempt 1 of 4" in warnings[0].getMessage()
    assert "retrying in" in warnings[0].getMessage()
    assert "attempt 4 of 4, no retries left" in errors[0].getMessage()
    assert errors[0].exc_info is not None


def test_a_job_that_recovers_is_done(app: toniq.Toniq) -> None:
    handle = Flaky.enqueue("twice", failures=2)
    with toniq.Node(app) as node:
        deadline = time.monotonic() + 10
        while handle.info() is not None:
            assert time.monotonic() < deadline
            node.drain()
    assert len(Flaky.attempts["twice"]) == 3
    assert app.counts()["tests.Flaky"] == {"done": 1}


def test_retries_zero_and_a_global_default(app: toniq.Toniq, tmp_path: object) -> None:
    Fails.enqueue("once")
    with toniq.Node(app) as node:
        node.drain()
    assert [c[0] for c in probe.calls] == ["Fails"]

    other = toniq.Toniq(url="memory://", retries=1, backoff=lambda n: 0.0, poll_interval=0.01)

    class Default(toniq.Worker, name="tests.retries.Default"):
        def perform(self) -> None:
            probe.enter("Default")
            probe.leave("Default")
            raise RuntimeError("x")

    other.enqueue(Default)
    with toniq.Node(other) as node:
        node.drain()
        node.drain()
    assert sum(1 for c in probe.calls if c[0] == "Default") == 2
    other.close()


def test_a_retry_waits_in_the_store_and_survives_a_node_restart(app: toniq.Toniq) -> None:
    handle = Flaky.with_options().enqueue("restart", failures=1)
    with toniq.Node(app) as node:
        deadline = time.monotonic() + 10
        while len(Flaky.attempts.get("restart", [])) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        node.drain()
    record = handle.info()
    assert record is not None and record.state is toniq.JobState.SCHEDULED
    assert record.attempt == 1 and record.run_at is not None and len(record.errors) == 1
    # Another node (this one is gone) runs the retry when it is due, as attempt 2.
    with toniq.Node(app) as node:
        deadline = time.monotonic() + 10
        while handle.info() is not None:
            assert time.monotonic() < deadline
            node.drain()
    assert probe.calls[-1] == ("Flaky", ("restart", 2), {})
    assert Flaky.attempts["restart"][1] - Flaky.attempts["restart"][0] >= 0.1


def test_events_and_hooks(app: toniq.Toniq, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[JobEvent] = []

    class Hooked(toniq.Worker, name="tests.Hooked", retries=1, backoff=lambda n: 0.05):
        def perform(self, fail: bool) -> None:
            if fail:
                raise ValueError("hooked")

        def on_success(self, event: JobEvent) -> None:
            seen.append(event)

        def on_retry(self, event: JobEvent) -> None:
            seen.append(event)

        def on_failure(self, event: JobEvent) -> None:
            seen.append(event)
            raise RuntimeError("a broken hook")  # logged, never kills the node

    def broken(event: JobEvent) -> None:
        raise RuntimeError("a broken global hook")

    app.subscribe(broken)
    with app.events.listen() as events:
        ok = Hooked.enqueue(False)
        bad = Hooked.enqueue(True)
        with toniq.Node(app) as node:
            deadline = time.monotonic() + 10
            while bad.info() is None or bad.info().state is not toniq.JobState.FAILED:  # type: ignore[union-attr]
                assert time.monotonic() < deadline
                node.drain()
            toniq.enqueue(Hooked, False)  # the node still runs jobs
            node.drain()
        got = [events.get(timeout=5) for _ in range(4)]
    kinds = {(e.job_id, e.kind) for e in got}
    assert (ok.id, EventKind.DONE) in kinds
    assert (bad.id, EventKind.RETRYING) in kinds and (bad.id, EventKind.FAILED) in kinds
    retrying = next(e for e in got if e.kind is EventKind.RETRYING)
    assert retrying.error is not None and retrying.retry_at is not None and retrying.attempt == 1
    assert [e.kind for e in seen if e.job_id == bad.id] == [EventKind.RETRYING, EventKind.FAILED]
    assert "a broken hook" in caplog.text and "a broken global hook" in caplog.text


def test_a_hook_given_to_a_worker_after_its_first_job_is_called(app: toniq.Toniq) -> None:
    seen: list[str] = []

    class Late(toniq.Worker, name="tests.LateHook"):
        def perform(self, n: int) -> None:
            pass

    with toniq.Node(app, workers=[Late]) as node:
        first = Late.enqueue(1)
        node.drain()
        Late.on_success = lambda self, event: seen.append(event.job_id)  # type: ignore[method-assign]
        second = Late.enqueue(2)
        node.drain()
    assert seen == [second.id] and first.id != second.id
