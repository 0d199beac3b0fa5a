"""A claim's ``async def`` jobs run one after the other in one task until one waits: each
still sees a context of its own, and a job that waits has that task to itself."""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from typing import Any

import pytest

import toniq
from tests.workers import AsyncEcho, probe

marker: contextvars.ContextVar[str] = contextvars.ContextVar("eager_marker", default="unset")
seen: list[Any] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    probe.reset()
    seen.clear()


class SetsContext(toniq.Worker, name="tests.eager.SetsContext"):
    async def perform(self, i: int) -> None:
        seen.append(marker.get())
        marker.set(f"job {i}")


class Waits(toniq.Worker, name="tests.eager.Waits"):
    async def perform(self) -> None:
        before = asyncio.current_task()
        marker.set(f"waiter {id(self)}")
        await asyncio.sleep(0.01)
        after = asyncio.current_task()
        assert after is not None
        seen.append((before, after, after.get_name(), marker.get() == f"waiter {id(self)}"))


class TimesOut(toniq.Worker, name="tests.eager.TimesOut"):
    async def perform(self) -> None:
        try:
            async with asyncio.timeout(0.05):
                await asyncio.sleep(30)
        except TimeoutError:
            seen.append("timed out")


class GroupFails(toniq.Worker, name="tests.eager.GroupFails"):
    async def perform(self) -> None:
        async def boom() -> None:
            await asyncio.sleep(0.01)
            raise LookupError("child failed")

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(boom())
                await asyncio.sleep(30)  # cancelled by the group when its child fails
        except* LookupError:
            seen.append("group failed")


class CancelsItself(toniq.Worker, name="tests.eager.CancelsItself", retries=0):
    async def perform(self) -> None:
        raise asyncio.CancelledError


class CancelsItsTask(toniq.Worker, name="tests.eager.CancelsItsTask", retries=0):
    """Cancels its task and returns: in a task of its own, that task ends cancelled after
    the job is done, and nothing else notices."""

    async def perform(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()


class CancelsItsTaskLater(toniq.Worker, name="tests.eager.CancelsItsTaskLater", retries=0):
    """A watchdog on its task that outlives the job."""

    async def perform(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().call_later(0.05, task.cancel)


class Naps(toniq.Worker, name="tests.eager.Naps", retries=0):
    async def perform(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        seen.append("napped")


# State kept per task, as SQLAlchemy's async_scoped_session(scopefunc=current_task) does.
per_task: weakref.WeakKeyDictionary[asyncio.Task[Any], list[int]] = weakref.WeakKeyDictionary()


class TaskLocal(toniq.Worker, name="tests.eager.TaskLocal"):
    async def perform(self, i: int) -> None:
        task = asyncio.current_task()
        assert task is not None
        state = per_task.setdefault(task, [])
        seen.append((list(state), task.get_name()))
        state.append(i)


def test_jobs_of_one_claim_each_run_in_a_context_of_their_own(app: toniq.Toniq) -> None:
    app.enqueue_many(SetsContext, [(i,) for i in range(20)])
    with toniq.Node(app) as node:
        node.drain()
        assert node.stats.done == 20
    assert seen == ["unset"] * 20


def test_a_job_that_waits_has_its_own_task_from_start_to_end(app: toniq.Toniq) -> None:
    echoes = [AsyncEcho.enqueue(i) for i in range(3)]
    waiters = [Waits.enqueue() for _ in range(3)]
    echoes += [AsyncEcho.enqueue(i) for i in range(3, 6)]
    with toniq.Node(app) as node:
        node.drain()
        assert node.stats.done == 9
    assert [call[1] for call in probe.calls] == [(i,) for i in range(6)]
    assert len(seen) == 3
    tasks = set()
    for before, after, name, context_kept in seen:
        assert before is after  # what asyncio.current_task() said at the start holds
        assert context_kept
        tasks.add(after)
        assert name.startswith("toniq-job-")
    assert sorted(name for *_, name, _ in seen) == sorted(f"toniq-job-{h.id}" for h in waiters)
    assert len(tasks) == 3  # each job its own task


@pytest.mark.parametrize("first", [TimesOut, GroupFails])
def test_timeouts_and_task_groups_in_a_job_act_on_that_job_alone(
    app: toniq.Toniq, first: type[toniq.Worker]
) -> None:
    """asyncio.timeout and TaskGroup cancel the task they started in: the job's own, even
    for the first job of a claim to wait (it started in the claim's shared task)."""
    first.enqueue()
    AsyncEcho.enqueue(1)
    (GroupFails if first is TimesOut else TimesOut).enqueue()
    AsyncEcho.enqueue(2)
    with toniq.Node(app) as node:
        node.drain()
        assert node.stats.done == 4 and node.running == 0
        AsyncEcho.enqueue(3)  # and the node still claims and runs jobs
        node.drain()
    assert sorted(seen) == ["group failed", "timed out"]
    assert [call[1] for call in probe.calls] == [(1,), (2,), (3,)]


def test_a_job_that_raises_cancelled_error_itself_fails_and_the_next_jobs_run(
    app: toniq.Toniq,
) -> None:
    """Only a stop cancels a job (which is then handed back); a CancelledError the job
    raises itself, not cancelled (say, from a task it awaited), is its failure."""
    AsyncEcho.enqueue(1)
    handle = CancelsItself.enqueue()
    AsyncEcho.enqueue(2)
    with toniq.Node(app) as node:
        node.drain()
        assert node.stats.failed == 1 and node.stats.done == 2
    assert [call[1] for call in probe.calls] == [(1,), (2,)]
    record = handle.info()
    assert record is not None and record.state is toniq.JobState.FAILED
    assert record.errors[-1].type == "asyncio.exceptions.CancelledError"


class LocalCancelsItself(toniq.Worker, name="tests.eager.LocalCancelsItself", persist=False):
    async def perform(self) -> None:
        raise asyncio.CancelledError


def test_a_persist_false_job_that_raises_cancelled_error_itself_fails(app: toniq.Toniq) -> None:
    """As for stored jobs: only a stop's cancel is a stop; the node counts a failure."""
    failed: list[toniq.JobEvent] = []
    app.subscribe(failed.append)
    with toniq.Node(app) as node:
        LocalCancelsItself.enqueue()
        node.drain()
        assert node.stats.local_failed == 1 and node.running == 0
    assert [event.error.type for event in failed if event.error] == [
        "asyncio.exceptions.CancelledError"
    ]


def test_a_job_that_cancels_its_task_and_returns_leaves_the_next_job_alone(
    app: toniq.Toniq,
) -> None:
    CancelsItsTask.enqueue()
    Naps.enqueue(0.05)
    with toniq.Node(app) as node:
        node.drain()
        assert node.stats.done == 2 and node.running == 0
    assert seen == ["napped"]


def test_a_watchdog_left_behind_by_a_job_loses_no_job(app: toniq.Toniq) -> None:
    """A cancel sent later to a job's task may reach the job that keeps the shared task
    (see docs): that job fails with the CancelledError and is kept, never lost; with
    task_per_job the cancel reaches a finished task and nothing happens."""
    for task_per_job in (False, True):
        seen.clear()
        CancelsItsTaskLater.enqueue()
        handle = Naps.enqueue(0.5)
        with toniq.Node(app, task_per_job=task_per_job) as node:
            node.drain()
            assert node.running == 0
        record = handle.info()
        if task_per_job:
            assert record is None and seen == ["napped"]
        else:
            assert record is not None and record.state is toniq.JobState.FAILED
            assert record.errors[-1].type == "asyncio.exceptions.CancelledError"


def test_task_per_job_gives_every_job_a_task_of_its_own(app: toniq.Toniq) -> None:
    handles = [TaskLocal.enqueue(i) for i in range(3)]
    with toniq.Node(app, task_per_job=True) as node:
        node.drain()
    assert [state for state, _ in seen] == [[], [], []]
    assert sorted(name for _, name in seen) == sorted(f"toniq-job-{h.id}" for h in handles)


def test_by_default_jobs_that_never_await_share_their_claims_task(app: toniq.Toniq) -> None:
    """The documented difference (Python 3.11 has no eager tasks): state kept per task is
    shared by the jobs of one claim that never await."""
    for i in range(3):
        TaskLocal.enqueue(i)
    with toniq.Node(app) as node:
        node.drain()
    assert seen == [([], "toniq-jobs"), ([0], "toniq-jobs"), ([0, 1], "toniq-jobs")]


@pytest.mark.skipif(
    not hasattr(asyncio, "eager_task_factory"),
    reason="needs asyncio.eager_task_factory, new in Python 3.12 (CI runs 3.11; run it with 3.12)",
)
def test_serve_in_a_loop_whose_tasks_start_eagerly(app: toniq.Toniq) -> None:
    """A loop of the user's may run a task's first step inside create_task."""
    for i in range(3):
        AsyncEcho.enqueue(i)
    for _ in range(2):
        Naps.enqueue(0.01)
    node = toniq.Node(app)

    async def main() -> None:
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        await asyncio.wait_for(node.serve(burst=True), 10)

    asyncio.run(main())
    assert node.stats.done == 5 and node.running == 0
    assert seen == ["napped"] * 2
    assert app.counts() == {AsyncEcho.worker_name: {"done": 3}, Naps.worker_name: {"done": 2}}
