"""The node in this process: concurrency limits, failures as data, shutdown, drain."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

import toniq
from tests.workers import Echo, Fails, Limited, LimitedSync, Sleeper, probe
from toniq.job import CANNOT_RUN, NewJob
from toniq.serialization import make_job


@pytest.fixture(autouse=True)
def _reset() -> None:
    probe.reset()


# With claim_batch=2 every claim comes back full, and the next one is sent before its jobs
# start: the room it asks for must count them.
@pytest.mark.parametrize("claim_batch", [256, 2])
def test_max_concurrency_caps_one_worker_while_others_run_freely(
    app: toniq.Toniq, claim_batch: int
) -> None:
    for _ in range(30):
        toniq.enqueue(Limited, 0.05)
    for _ in range(10):
        toniq.enqueue(LimitedSync, 0.05)
    for _ in range(100):
        toniq.enqueue(Sleeper, 1.0)
    with toniq.Node(app, claim_batch=claim_batch) as node:
        node.drain()
    assert probe.peak["Limited"] == 3
    assert probe.peak["LimitedSync"] == 2
    assert probe.peak["Sleeper"] == 100
    assert app.counts()["tests.Limited"] == {"done": 30}


def test_ten_thousand_async_jobs_run_at_the_same_time(app: toniq.Toniq) -> None:
    jobs = [
        make_job(app.keyring, Sleeper.worker_name, (1.0,), job_id=f"sleep-{i}")
        for i in range(10_000)
    ]
    app.backend.enqueue(jobs)
    with toniq.Node(app, workers=[Sleeper], claim_batch=1000) as node:
        node.drain(timeout=120)
        assert node.stats.done == 10_000
    assert probe.peak["Sleeper"] == 10_000


def test_a_failing_job_is_kept_as_failed_with_its_error_and_logged(
    app: toniq.Toniq, caplog: pytest.LogCaptureFixture
) -> None:
    handle = toniq.enqueue(Fails, "card declined")
    with caplog.at_level(logging.ERROR, logger="toniq"), toniq.Node(app) as node:
        node.drain()
        node_id = node.id
    record = handle.info()
    assert record is not None and record.state is toniq.JobState.FAILED
    (error,) = record.errors
    assert error.type == "RuntimeError" and error.message == "card declined"
    assert "RuntimeError: card declined" in error.traceback
    assert error.attempt == 1 and error.node == node_id and error.at > 0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and handle.id in errors[0].getMessage()
    assert errors[0].exc_info is not None  # the traceback goes to Sentry and friends


def test_an_undecodable_payload_fails_with_the_reason(app: toniq.Toniq) -> None:
    app.backend.enqueue([NewJob("garbage", Echo.worker_name, b"not a payload", time.time())])
    with toniq.Node(app) as node:
        node.drain()
        toniq.enqueue(Echo, "still running")
        node.drain()
    record = app.get_job("garbage")
    assert record is not None and record.state is toniq.JobState.FAILED
    assert record.errors[-1].type == CANNOT_RUN
    assert "cannot read the job's arguments" in record.errors[-1].message
    assert ("Echo", ("still running",), {}) in probe.calls


def test_unknown_worker_jobs_fail_and_the_node_keeps_running(app: toniq.Toniq) -> None:
    app.backend.enqueue([make_job(app.keyring, "gone.Worker", job_id="orphan")])
    with toniq.Node(app, unknown_worker_timeout=0.2) as node:
        deadline = time.monotonic() + 10
        while (record := app.get_job("orphan")) and record.state is not toniq.JobState.FAILED:
            assert time.monotonic() < deadline, "the unknown-worker job never failed"
            time.sleep(0.05)
        toniq.enqueue(Echo, 1)
        node.drain()
    assert record is not None and "gone.Worker" in record.errors[-1].message
    assert probe.calls == [("Echo", (1,), {})]


def test_graceful_stop_hands_unfinished_jobs_back_at_once(app: toniq.Toniq) -> None:
    handles = [toniq.enqueue(Sleeper, 30.0) for _ in range(3)]
    node = toniq.Node(app, grace_period=0.2).start()
    deadline = time.monotonic() + 10
    while node.running < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    node.stop()
    assert time.monotonic() - started < 3
    for handle in handles:
        record = handle.info()
        assert record is not None and record.state is toniq.JobState.AVAILABLE
        assert record.attempt == 0 and record.node is None
    assert app.nodes() == []


def _stop_while_a_claim_is_sent_ahead(app: toniq.Toniq, grace_period: float) -> toniq.Node:
    """A node with claim_batch=2 whose second claim (sent ahead, while the first claim's
    jobs start) is held until a stop has begun; returns the node, stopped."""
    backend = app.backend
    real_claim = backend.claim
    calls = 0
    ahead, release = threading.Event(), threading.Event()

    def claim(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 2:
            ahead.set()
            release.wait(10)
        return real_claim(*args, **kwargs)  # type: ignore[arg-type]

    backend.claim = claim  # type: ignore[method-assign, assignment]
    node = toniq.Node(app, claim_batch=2, grace_period=grace_period).start()
    assert ahead.wait(10)
    stopper = threading.Thread(target=node.stop)
    stopper.start()
    deadline = time.monotonic() + 10
    while not node._stop_requested:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    release.set()
    stopper.join(10)
    assert not stopper.is_alive() and calls == 2
    return node


# With no grace period, the jobs of the claim sent ahead are handed back before the task
# that would run them has started.
@pytest.mark.parametrize("grace_period", [0.2, 0.0])
def test_a_stop_while_a_claim_is_sent_ahead_hands_every_job_back(
    app: toniq.Toniq, grace_period: float
) -> None:
    """A claim that comes back full sends the next one before its jobs start; a stop that
    comes meanwhile still hands back every job, those of that claim too."""
    handles = [toniq.enqueue(Sleeper, 30.0) for _ in range(6)]
    node = _stop_while_a_claim_is_sent_ahead(app, grace_period)
    assert node.running == 0
    for handle in handles:
        record = handle.info()
        assert record is not None and record.state is toniq.JobState.AVAILABLE
        assert record.attempt == 0 and record.node is None
    assert app.nodes() == []


def test_jobs_of_a_claim_sent_ahead_finish_within_the_grace_period(app: toniq.Toniq) -> None:
    """As above, but the jobs end well within the grace period: every one of them finishes,
    those that got their task during the grace period too (found in review)."""
    handles = [toniq.enqueue(Sleeper, s) for s in (0.1, 0.1, 0.1, 0.6)]
    node = _stop_while_a_claim_is_sent_ahead(app, 5.0)
    assert node.running == 0
    assert [handle.info() for handle in handles] == [None] * 4
    assert app.counts()[Sleeper.worker_name] == {"done": 4}


def test_jobs_that_finish_within_the_grace_period_are_acknowledged(app: toniq.Toniq) -> None:
    handle = toniq.enqueue(Sleeper, 0.3)
    node = toniq.Node(app, grace_period=5).start()
    deadline = time.monotonic() + 10
    while node.running < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    node.stop()
    assert handle.info() is None
    assert app.counts()["tests.Sleeper"] == {"done": 1}


def test_a_node_presumed_dead_registers_again_and_its_late_acks_are_rejected(
    app: toniq.Toniq,
) -> None:
    handle = toniq.enqueue(Sleeper, 0.5)
    # Heart-beats further apart than FAST's: one between the unregistration and the take-over
    # below would register the node again first, and there would be nothing to take over.
    with toniq.Node(app, workers=[Sleeper], heartbeat_interval=0.5, takeover_timeout=2) as node:
        deadline = time.monotonic() + 10
        while node.running < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # Simulate a stall: the store forgets the node, another node takes the job.
        app.backend.unregister_node(node.id)
        report = app.backend.take_over(timeout=0.6, max_node_deaths=3)
        assert handle.id in report.requeued
        node.drain()
        assert node.stats.acks_rejected == 1
        deadline = time.monotonic() + 10
        while node.id not in {n.id for n in app.nodes()}:
            assert time.monotonic() < deadline, "the node did not register again"
            time.sleep(0.02)
        # Registered again, it claims the requeued job and finishes it for real.
        node.drain()
    assert handle.info() is None
    assert app.counts()["tests.Sleeper"]["done"] == 1


def test_node_registers_its_workers_and_leaves_on_stop(app: toniq.Toniq) -> None:
    with toniq.Node(app, workers=[Echo, "tests.Sleeper"]) as node:
        (info,) = app.nodes()
        assert info.id == node.id and info.workers == ("tests.Echo", "tests.Sleeper")
    assert app.nodes() == []


def test_drain_times_out_while_jobs_keep_running(app: toniq.Toniq) -> None:
    toniq.enqueue(Sleeper, 5.0)
    with toniq.Node(app, grace_period=0) as node, pytest.raises(TimeoutError):
        node.drain(timeout=0.3)


def test_serve_in_your_own_event_loop(app: toniq.Toniq) -> None:
    toniq.enqueue(Echo, "from serve")

    async def main() -> None:
        node = toniq.Node(app)
        task = asyncio.create_task(node.serve(burst=True))
        await asyncio.wait_for(task, 10)

    asyncio.run(main())
    assert probe.calls == [("Echo", ("from serve",), {})]


def test_unknown_worker_filter_is_an_error(app: toniq.Toniq) -> None:
    with pytest.raises(toniq.UnknownWorkerError):
        toniq.Node(app, workers=["no.Such"]).start()


class CpuHog(toniq.Worker, name="tests.CpuHog", retries=0):
    """Pure-Python CPU work that never yields to the event loop."""

    async def perform(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += 1


class CpuHogSync(toniq.Worker, name="tests.CpuHogSync", retries=0):
    def perform(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += 1


def test_long_cpu_bound_jobs_are_not_taken_over_while_their_node_lives(
    app: toniq.Toniq,
) -> None:
    # Each job runs for more than three takeover timeouts (0.6 s) while hogging the CPU
    # (and, for the async one, the event loop); a second node watches for dead nodes.
    hog = CpuHog.enqueue(2.0)
    hog_sync = CpuHogSync.enqueue(2.0)
    with (
        toniq.Node(app, workers=[CpuHog, CpuHogSync]) as node,
        toniq.Node(app, workers=[Echo]) as watcher,
    ):
        node.drain(timeout=30)
        watcher.drain()
    assert hog.info() is None and hog_sync.info() is None  # done, acknowledged once
    assert node.stats.acks_rejected == 0 and node.stats.done == 2
    assert app.counts()["tests.CpuHog"] == {"done": 1}


class LostReply:
    """A backend whose claim happens but whose reply is lost, once (a timeout, a dropped
    connection after the store ran the claim)."""

    def __init__(self, backend: object) -> None:
        self._backend = backend
        self.lost: list[str] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._backend, name)

    def claim(self, node_id: str, wants: dict[str, int], **options: object) -> list[object]:
        claimed = self._backend.claim(node_id, wants, **options)  # type: ignore[attr-defined]
        if claimed and not self.lost:
            self.lost = [c.id for c in claimed]
            raise ConnectionError("the reply was lost")
        return list(claimed)


def test_claims_whose_reply_was_lost_are_handed_back_and_run(app: toniq.Toniq) -> None:
    handles = [toniq.enqueue(Echo, i) for i in range(5)]
    wrapper = LostReply(app.backend)
    app._backend = wrapper  # type: ignore[assignment]
    # A long takeover timeout: only the node's own reconciliation can recover the jobs.
    with toniq.Node(app, takeover_timeout=300) as node:
        node.drain(timeout=10)
    assert sorted(wrapper.lost) == sorted(h.id for h in handles)
    assert sorted(c[1][0] for c in probe.calls) == list(range(5))
    assert all(h.info() is None for h in handles)


arrived = threading.Event()


class Arrives(toniq.Worker, name="tests.Arrives"):
    def perform(self) -> None:
        arrived.set()


class EnqueuesWhileClaiming:
    """A backend that enqueues one more job just after the first claim that found jobs,
    while the node still waits for that claim's reply."""

    #: The wake-up path: on Redis an idle node would otherwise get the job handed over.
    handoff = False

    def __init__(self, backend: object) -> None:
        self._backend = backend
        self.late: toniq.JobHandle | None = None

    def __getattr__(self, name: str) -> object:
        return getattr(self._backend, name)

    def claim(self, node_id: str, wants: dict[str, int], **options: object) -> list[object]:
        claimed = self._backend.claim(node_id, wants, **options)  # type: ignore[attr-defined]
        if claimed and self.late is None:
            self.late = toniq.enqueue(Arrives)
        return list(claimed)


def test_a_job_enqueued_while_an_idle_node_claims_starts_without_waiting_for_a_poll(
    app: toniq.Toniq,
) -> None:
    """An idle node claims on its I/O thread when woken; a wake-up that comes while that
    claim is under way (too late to be in it) must start another claim, not wait for
    the next poll (30 s here, while a long job keeps the node busy)."""
    arrived.clear()
    wrapper = EnqueuesWhileClaiming(app.backend)
    app._backend = wrapper  # type: ignore[assignment]
    with toniq.Node(app, workers=[Sleeper, Arrives], poll_interval=30, grace_period=0.1) as node:
        deadline = time.monotonic() + 10
        while not node._io_waiting:  # the node waits for a wake-up on its I/O thread
            assert time.monotonic() < deadline, "the node never went idle"
            time.sleep(0.001)
        toniq.enqueue(Sleeper, 30)
        assert arrived.wait(10), "the job enqueued during the claim waited for a poll"
    assert wrapper.late is not None
