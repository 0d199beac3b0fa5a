"""Delayed and held jobs: never early, on time within the documented lag, released by hand."""

from __future__ import annotations

import datetime
import time

import pytest

import toniq
from tests.workers import Echo, probe


class Stamp(toniq.Worker, name="tests.Stamp"):
    runs: dict[str, float] = {}

    async def perform(self, key: str) -> None:
        Stamp.runs[key] = time.time()


@pytest.fixture(autouse=True)
def _reset() -> None:
    probe.reset()
    Stamp.runs.clear()


def wait_for(keys: set[str], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not keys <= set(Stamp.runs):
        assert time.monotonic() < deadline, f"never ran: {keys - set(Stamp.runs)}"
        time.sleep(0.005)


def test_delayed_jobs_run_no_earlier_than_their_time_and_within_the_lag(
    app: toniq.Toniq,
) -> None:
    with toniq.Node(app):  # an idle, running node, as in production
        time.sleep(0.05)
        t0 = time.time()
        toniq.enqueue(Stamp.with_options(delay=0.3), "seconds")
        toniq.enqueue(Stamp.with_options(delay=datetime.timedelta(milliseconds=500)), "delta")
        at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=0.4)
        toniq.enqueue(Stamp.with_options(at=at), "at")
        toniq.enqueue(Stamp, "now")
        wait_for({"seconds", "delta", "at", "now"})
    lag_limit = app.settings.poll_interval + 0.1  # documented: poll interval + one claim
    for key, delay in [("seconds", 0.3), ("delta", 0.5), ("at", 0.4), ("now", 0.0)]:
        assert Stamp.runs[key] >= t0 + delay - 0.002, key  # never early
        assert Stamp.runs[key] - (t0 + delay) < lag_limit + 0.05, (key, Stamp.runs[key] - t0)


def test_a_delayed_job_is_scheduled_in_the_store(app: toniq.Toniq) -> None:
    handle = toniq.enqueue(Echo.with_options(delay=3600), 1)
    record = handle.info()
    assert record is not None and record.state is toniq.JobState.SCHEDULED
    assert record.run_at is not None and record.run_at > time.time() + 3500
    assert not record.held
    assert [r.id for r in app.jobs("scheduled")] == [handle.id]


def test_held_jobs_run_only_when_released(app: toniq.Toniq) -> None:
    held = [toniq.enqueue(Stamp.with_options(hold=True), f"held-{i}") for i in range(3)]
    later = toniq.enqueue(Stamp.with_options(delay=3600), "later")
    assert all(h.info().held for h in held)  # type: ignore[union-attr]
    with toniq.Node(app) as node:
        node.drain()
        assert Stamp.runs == {}
        assert toniq.release(held[0]) is True
        assert toniq.release(held[0]) is False  # not scheduled any more
        wait_for({"held-0"})
        assert toniq.release_all(Stamp) == 3  # the two held ones and the delayed one
        wait_for({"held-1", "held-2", "later"})
    assert later.info() is None


def test_bad_schedule_options_are_refused(app: toniq.Toniq) -> None:
    with pytest.raises(toniq.ConfigurationError, match="at most one"):
        Echo.with_options(delay=1, hold=True)
    with pytest.raises(toniq.ConfigurationError, match="delay"):
        Echo.with_options(delay=-1)
    with pytest.raises(toniq.ConfigurationError, match="datetime"):
        Echo.with_options(at=12.0)
    with pytest.raises(toniq.ConfigurationError, match="persist=False"):
        Echo.with_options(delay=1, persist=False).enqueue(1)
    assert app.counts() == {}
