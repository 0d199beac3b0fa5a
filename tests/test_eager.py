"""A claim's ``async def`` jobs run one after the other in one task until one waits: each
still sees a context of its own, and a job that waits has that task to itself."""

from __future__ import annotations

import asyncio
import contextvars
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
