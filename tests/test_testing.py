"""toniq.testing: inline and manual modes, drain, assertions, and no store touched."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar
from unittest.mock import ANY

import pytest

import toniq
import toniq.app
import toniq.testing
from toniq.backends import Backend
from toniq.events import EventKind, JobEvent
from toniq.testing import DrainLimitError, EnqueuedJob, JobResult

ROOT = Path(__file__).resolve().parent.parent

calls: list[tuple[Any, ...]] = []
events_seen: list[JobEvent] = []
marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")


class Record(toniq.Worker, name="tests.testing.Record"):
    def perform(self, *args: Any, **kwargs: Any) -> str:
        calls.append(("Record", args, kwargs, threading.get_ident()))
        marker.set("set by a job")
        return "recorded"


class AsyncRecord(toniq.Worker, name="tests.testing.AsyncRecord"):
    async def perform(self, value: Any) -> None:
        calls.append(("AsyncRecord", value, asyncio.get_running_loop()))


class Charge(toniq.Worker, name="tests.testing.Charge", retries=2, backoff=lambda n: 60.0):
    """Fails ``failures`` times per key, then succeeds. A backoff of a minute: a test mode
    that waited for it would time out."""

    runs: ClassVar[dict[str, int]] = {}

    def perform(self, key: str, failures: int = 0) -> str:
        Charge.runs[key] = Charge.runs.get(key, 0) + 1
        calls.append(("Charge", key, Charge.runs[key]))
        if Charge.runs[key] <= failures:
            raise ValueError(f"{key} failed run {Charge.runs[key]}")
        return f"{key} charged"


class Chain(toniq.Worker, name="tests.testing.Chain"):
    def perform(self, n: int) -> None:
        calls.append(("Chain start", n))
        if n > 0:
            Chain.enqueue(n - 1)
        calls.append(("Chain end", n))


class AsyncChain(toniq.Worker, name="tests.testing.AsyncChain"):
    async def perform(self, n: int) -> None:
        calls.append(("AsyncChain", n))
        if n > 0:
            await AsyncChain.enqueue_async(n - 1)
            Record.enqueue(f"sync enqueue from async job {n}")


class Forever(toniq.Worker, name="tests.testing.Forever"):
    def perform(self) -> None:
        Forever.enqueue()


class FromThread(toniq.Worker, name="tests.testing.FromThread"):
    """Enqueues from a thread of its own, which does not share the job's context."""

    def perform(self) -> None:
        thread = threading.Thread(target=Record.enqueue, args=("from a thread",))
        thread.start()
        thread.join()


class Mutates(toniq.Worker, name="tests.testing.Mutates"):
    def perform(self, items: list[str]) -> None:
        calls.append(("Mutates", list(items), items))
        items.append("changed by the job")


class Local(toniq.Worker, name="tests.testing.Local", persist=False):
    def perform(self, items: list[str], fail: bool = False) -> None:
        calls.append(("Local", items))
        if fail:
            raise RuntimeError("local failed")


class SlowAsync(toniq.Worker, name="tests.testing.SlowAsync", timeout=0.05):
    async def perform(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        calls.append(("SlowAsync", seconds))


class SlowSync(toniq.Worker, name="tests.testing.SlowSync", timeout=0.05):
    def perform(self, seconds: float) -> None:
        time.sleep(seconds)
        calls.append(("SlowSync", seconds))


class Hooked(toniq.Worker, name="tests.testing.Hooked", retries=1, backoff=lambda n: 30.0):
    def perform(self, fail: bool) -> None:
        if fail:
            raise KeyError("hooked")

    def on_success(self, event: JobEvent) -> None:
        events_seen.append(event)

    def on_retry(self, event: JobEvent) -> None:
        events_seen.append(event)

    def on_failure(self, event: JobEvent) -> None:
        events_seen.append(event)
        raise RuntimeError("a broken hook")  # logged, as on a node


class BreaksOnLoad:
    """Pickles fine, but cannot be unpickled: a node fails such a job as toniq.CannotRun."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_explode, ())


def _explode() -> None:
    raise RuntimeError("cannot be rebuilt")


@toniq.worker(name="tests.testing.add")
def add(a: int, b: int = 10) -> int:
    calls.append(("add", a, b))
    return a + b


class NoStore(toniq.Toniq):
    """An app whose store must never be touched."""

    @property
    def backend(self) -> Backend:
        raise AssertionError("toniq.testing touched the store")


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[NoStore]:
    """The default app for this module's tests (overrides conftest's): one that fails if
    anything opens its store, on a SQLite URL whose file must never appear."""
    calls.clear()
    events_seen.clear()
    Charge.runs.clear()
    app = NoStore(url=f"sqlite:///{tmp_path / 'never.sqlite3'}")
    monkeypatch.setattr(toniq.app, "_default", app)
    yield app
    assert app.interceptor is None
    assert not (tmp_path / "never.sqlite3").exists()


# -- inline mode ----------------------------------------------------------------------------------


def test_inline_runs_a_def_job_at_once_in_the_callers_thread(app: NoStore) -> None:
    with toniq.testing.inline() as jobs:
        handle = Record.enqueue(1, key="a")
        assert calls == [("Record", (1,), {"key": "a"}, threading.get_ident())]
    assert handle.persisted and handle.worker == "tests.testing.Record"
    assert handle.info() is None  # done, so gone, as in a store
    [result] = jobs.results
    assert result.ok and result.outcome is EventKind.DONE and result.value == "recorded"
    assert (result.id, result.worker, result.args, result.kwargs) == (
        handle.id,
        "tests.testing.Record",
        (1,),
        {"key": "a"},
    )
    assert result.attempts == 1 and result.error is None and result.exception is None


def test_inline_runs_an_async_job_under_asyncio_run_from_sync_code(app: NoStore) -> None:
    with toniq.testing.inline():
        AsyncRecord.enqueue("x")
    [(name, value, loop)] = calls
    assert (name, value) == ("AsyncRecord", "x") and loop.is_closed()  # its own, finished loop


def test_inline_awaits_an_async_job_on_the_callers_loop_from_enqueue_async(app: NoStore) -> None:
    async def main() -> asyncio.AbstractEventLoop:
        await AsyncRecord.enqueue_async("y")
        await toniq.enqueue_async(Record, 2)  # a def job from async code: in a thread
        return asyncio.get_running_loop()

    with toniq.testing.inline() as jobs:
        loop = asyncio.run(main())
    assert calls[0] == ("AsyncRecord", "y", loop)
    assert calls[1][:3] == ("Record", (2,), {}) and calls[1][3] != threading.get_ident()
    assert [r.outcome for r in jobs.results] == [EventKind.DONE, EventKind.DONE]


def test_sync_enqueue_of_an_async_job_inside_a_running_loop(app: NoStore) -> None:
    async def main() -> None:
        AsyncRecord.enqueue("from sync code in a loop")  # cannot use asyncio.run here

    with toniq.testing.inline():
        asyncio.run(main())
    assert calls[0][:2] == ("AsyncRecord", "from sync code in a loop")


def test_a_jobs_context_variables_do_not_leak_into_the_test(app: NoStore) -> None:
    with toniq.testing.inline():
        Record.enqueue()
    assert marker.get() == "unset"


def test_arguments_arrive_unpickled_so_mutation_after_enqueue_does_not_show(
    app: NoStore,
) -> None:
    items = ["a"]
    with toniq.testing.manual() as jobs:
        Mutates.enqueue(items)
        items.append("added after enqueue")
        jobs.assert_enqueued(Mutates, ["a"])
        jobs.drain()
    [(_, seen, received)] = calls
    assert seen == ["a"] and received is not items
    assert items == ["a", "added after enqueue"]  # the job changed its own copy

    calls.clear()
    with toniq.testing.inline():
        Mutates.enqueue(items)
    assert calls[0][2] is not items and items == ["a", "added after enqueue"]


def test_persist_false_jobs_get_the_objects_themselves(app: NoStore) -> None:
    items = ["a"]
    with toniq.testing.inline() as jobs:
        handle = Local.enqueue(items)
    assert calls == [("Local", items)] and calls[0][1] is items
    assert not handle.persisted and handle.info() is None
    assert jobs.results[0].job.payload is None and not jobs.results[0].events[0].persisted


def test_bad_arguments_are_refused_at_enqueue_in_both_modes(app: NoStore) -> None:
    for mode in (toniq.testing.inline, toniq.testing.manual):
        with mode() as jobs:
            with pytest.raises(toniq.SerializationError, match="argument 0"):
                Record.enqueue(threading.Lock())
            with pytest.raises(TypeError, match=r"cannot enqueue tests\.testing\.add"):
                add.enqueue(1, 2, 3)  # type: ignore[call-arg]
        assert jobs.jobs == [] and calls == []


def test_a_payload_that_cannot_be_unpickled_fails_as_cannot_run(app: NoStore) -> None:
    with toniq.testing.manual() as jobs:
        Record.enqueue(BreaksOnLoad())
        [result] = jobs.drain(raise_errors=False)
    assert calls == []  # never ran
    assert result.outcome is EventKind.FAILED and result.error is not None
    assert result.error.type == "toniq.CannotRun" and "cannot be rebuilt" in result.error.message
    assert isinstance(result.exception, toniq.SerializationError)


def test_inline_raises_the_jobs_own_exception_by_default(app: NoStore) -> None:
    with toniq.testing.inline() as jobs, pytest.raises(ValueError, match="k failed run 1") as info:
        Charge.enqueue("k", failures=1)
    assert Charge.runs == {"k": 1}  # retries are off by default: one run
    assert any("toniq.testing" in note for note in info.value.__notes__)
    [failure] = jobs.failures
    assert failure.exception is info.value


def test_inline_with_raise_errors_false_collects_failures(
    app: NoStore, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="toniq"),
        toniq.testing.inline(raise_errors=False) as jobs,
    ):
        handle = Charge.enqueue("k", failures=5)
        Record.enqueue("still runs")
    [failure] = jobs.failures
    assert failure.outcome is EventKind.FAILED and not failure.ok and failure.value is None
    assert failure.error is not None and failure.error.type == "ValueError"
    assert failure.error.message == "k failed run 1" and failure.error.node == toniq.testing.NODE
    assert isinstance(failure.exception, ValueError)
    record = handle.info()  # a failed job stays, with its errors, as in a store
    assert record is not None and record.state is toniq.JobState.FAILED
    assert [e.message for e in record.errors] == ["k failed run 1"]
    assert [r.outcome for r in jobs.results] == [EventKind.FAILED, EventKind.DONE]
    [error_line] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "attempt 1 of 1, no retries left" in error_line.getMessage()


def test_inline_retries_as_configured_without_waiting(
    app: NoStore, caplog: pytest.LogCaptureFixture
) -> None:
    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="toniq"),
        toniq.testing.inline(retries=True) as jobs,
    ):
        Charge.enqueue("twice", failures=2)  # retries=2: the third run succeeds
        with pytest.raises(ValueError, match="always failed run 3"):
            Charge.enqueue("always", failures=99)
    assert time.monotonic() - started < 5  # the backoff is a minute per retry
    assert Charge.runs == {"twice": 3, "always": 3}
    done, failed = jobs.results
    assert done.ok and done.attempts == 3 and done.value == "twice charged"
    assert [e.kind for e in done.events] == [EventKind.RETRYING] * 2 + [EventKind.DONE]
    retrying = done.events[0]
    assert retrying.error is not None and retrying.retry_at is not None
    assert retrying.retry_at - time.time() > 50  # when a node would have retried it
    assert failed.attempts == 3 and failed.job.state is toniq.JobState.FAILED
    assert [e.attempt for e in failed.job.errors] == [1, 2, 3]
    levels = [r.levelno for r in caplog.records]
    assert levels.count(logging.WARNING) == 4 and levels.count(logging.ERROR) == 1


def test_retries_as_a_number_override_every_worker(app: NoStore) -> None:
    with toniq.testing.inline(retries=4, raise_errors=False) as jobs:
        Charge.enqueue("k", failures=99)
        Local.enqueue([], fail=True)  # persist=False jobs are never retried, as on a node
    assert Charge.runs == {"k": 5}
    assert [r.attempts for r in jobs.results] == [5, 1]
    with pytest.raises(toniq.ConfigurationError, match="retries"):
        toniq.testing.inline(retries=-1)


def test_jobs_enqueued_by_an_inline_job_run_after_it(app: NoStore) -> None:
    with toniq.testing.inline() as jobs:
        Chain.enqueue(2)
        assert calls == [
            ("Chain start", 2),
            ("Chain end", 2),  # its follow-up did not run inside it
            ("Chain start", 1),
            ("Chain end", 1),
            ("Chain start", 0),
            ("Chain end", 0),
        ]
    assert [r.args for r in jobs.results] == [(2,), (1,), (0,)]


def test_jobs_enqueued_by_an_async_inline_job_run_too(app: NoStore) -> None:
    async def main() -> None:
        await AsyncChain.enqueue_async(2)

    with toniq.testing.inline() as jobs:
        AsyncChain.enqueue(1)
        asyncio.run(main())
    ran = [(r.worker.rsplit(".", 1)[1], r.args) for r in jobs.results]
    assert ran == [
        ("AsyncChain", (1,)),
        ("AsyncChain", (0,)),
        ("Record", ("sync enqueue from async job 1",)),
        ("AsyncChain", (2,)),
        ("AsyncChain", (1,)),
        ("Record", ("sync enqueue from async job 2",)),
        ("AsyncChain", (0,)),
        ("Record", ("sync enqueue from async job 1",)),
    ]


def test_a_failing_follow_up_job_raises_from_the_outer_enqueue(app: NoStore) -> None:
    class Parent(toniq.Worker, name="tests.testing.Parent"):
        def perform(self) -> None:
            Charge.enqueue("child", failures=1)
            calls.append(("Parent done",))

    with toniq.testing.inline() as jobs, pytest.raises(ValueError, match="child failed"):
        Parent.enqueue()
    assert [r.outcome for r in jobs.results] == [EventKind.DONE, EventKind.FAILED]


def test_inline_keeps_delayed_and_held_jobs_for_drain(app: NoStore) -> None:
    with toniq.testing.inline() as jobs:
        delayed = Record.with_options(delay=3600).enqueue("later")
        held = Record.with_options(hold=True).enqueue("held")
        Record.with_options(delay=0).enqueue("due now")
        assert [c[1] for c in calls] == [("due now",)]
        delayed_record, held_record = delayed.info(), held.info()
        assert delayed_record is not None and delayed_record.state is toniq.JobState.SCHEDULED
        assert held_record is not None and held_record.held
        assert [str(j) for j in jobs.pending()] == [
            "tests.testing.Record('later') [scheduled, due in 3600s]",
            "tests.testing.Record('held') [scheduled, held]",
        ]
        assert jobs.drain() == []  # not due
        assert [r.args for r in jobs.drain(scheduled=True)] == [("later",), ("held",)]
    assert delayed.info() is None and held.info() is None


def test_inline_scheduled_true_runs_delayed_and_held_jobs_at_once(app: NoStore) -> None:
    with toniq.testing.inline(scheduled=True) as jobs:
        Record.with_options(delay=3600).enqueue("later")
        Record.with_options(hold=True).enqueue("held")
    assert [c[1] for c in calls] == [("later",), ("held",)] and jobs.pending() == []


def test_an_inline_job_that_enqueues_itself_forever_hits_the_limit(app: NoStore) -> None:
    with toniq.testing.inline(limit=50) as jobs, pytest.raises(DrainLimitError, match="Forever"):
        Forever.enqueue()
    assert len(jobs.results) == 50 and len(jobs.pending()) == 1


# -- timeouts ----------------------------------------------------------------------------------


def test_an_async_job_is_stopped_at_its_timeout(app: NoStore) -> None:
    with toniq.testing.inline(raise_errors=False) as jobs:
        SlowAsync.enqueue(5)
        SlowAsync.with_options(timeout=5).enqueue(0.1)  # a per-enqueue timeout wins
    slow, fine = jobs.results
    assert isinstance(slow.exception, toniq.JobTimeout)
    assert slow.error is not None and slow.error.type == "toniq.JobTimeout"
    assert fine.ok and calls == [("SlowAsync", 0.1)]
    with toniq.testing.inline(), pytest.raises(toniq.JobTimeout):
        SlowAsync.enqueue(5)


def test_a_def_job_runs_in_process_without_its_timeout(app: NoStore) -> None:
    with toniq.testing.inline() as jobs:
        SlowSync.enqueue(0.1)  # over its timeout; a node would kill its child process
    assert jobs.results[0].ok and calls == [("SlowSync", 0.1)]  # its effects are visible


# -- events and hooks -------------------------------------------------------------------------


def test_events_and_hooks_as_on_a_node(app: NoStore, caplog: pytest.LogCaptureFixture) -> None:
    with app.events.listen() as queue, toniq.testing.inline(retries=True, raise_errors=False):
        ok = Hooked.enqueue(False)
        bad = Hooked.enqueue(True)
    got = [queue.get_nowait() for _ in range(3)]
    assert queue.empty()
    assert [(e.job_id, e.kind, e.attempt) for e in got] == [
        (ok.id, EventKind.DONE, 1),
        (bad.id, EventKind.RETRYING, 1),
        (bad.id, EventKind.FAILED, 2),
    ]
    assert events_seen == got  # on_success, on_retry, on_failure
    assert all(e.node == toniq.testing.NODE and e.persisted for e in got)
    assert "a broken hook" in caplog.text  # logged, and nothing else happened


def test_persist_false_events(app: NoStore) -> None:
    seen: list[JobEvent] = []
    unsubscribe = app.subscribe(seen.append)
    with toniq.testing.inline(raise_errors=False):
        Local.enqueue([])
        Local.enqueue([], fail=True)
    unsubscribe()
    assert [(e.kind, e.attempt, e.persisted) for e in seen] == [
        (EventKind.DONE, 1, False),
        (EventKind.FAILED, 1, False),
    ]


# -- manual mode, assertions ------------------------------------------------------------------


def test_manual_collects_without_running(app: NoStore) -> None:
    with toniq.testing.manual() as jobs:
        handle = Record.enqueue(1)
        local = Local.enqueue(["x"])
        add.enqueue(1, b=2)
        assert calls == []
        record = handle.info()
        assert record is not None and record.state is toniq.JobState.AVAILABLE
        assert record.arguments() == ((1,), {}) and record.attempt == 0
        assert [j.worker for j in jobs.enqueued()] == [
            "tests.testing.Record",
            "tests.testing.Local",
            "tests.testing.add",
        ]
        assert [j.id for j in jobs.enqueued(Local)] == [local.id]
        assert jobs.enqueued("tests.testing.add")[0].args == (1,)
        assert jobs.enqueued(add)[0].kwargs == {"b": 2}
        assert not jobs.enqueued(Local)[0].persisted and jobs.pending() == jobs.jobs
    assert calls == []  # leaving the block runs nothing either


def test_assert_enqueued_matches_arguments_as_perform_receives_them(app: NoStore) -> None:
    with toniq.testing.manual() as jobs:
        add.enqueue(1)
        Record.with_options(delay=60).enqueue("a", n=1)
        job = jobs.assert_enqueued(add, 1)
        assert isinstance(job, EnqueuedJob) and job.args == (1,)
        jobs.assert_enqueued(add, a=1)  # positional or keyword: the same call
        jobs.assert_enqueued(add, 1, 10)  # defaults count
        jobs.assert_enqueued(add, ANY)
        jobs.assert_enqueued(add)  # no arguments: any job of add
        found = jobs.assert_enqueued(Record, "a", n=ANY)
        assert found.options == {"delay": 60.0} and found.state is toniq.JobState.SCHEDULED
        jobs.assert_enqueued(Record.with_options(), "a", n=1)  # a spec names its worker
        jobs.assert_not_enqueued(add, 2)
        jobs.assert_not_enqueued(Local)
        with pytest.raises(TypeError, match=r"do not fit tests\.testing\.add"):
            jobs.assert_enqueued(add, 1, 2, 3)


def test_assertion_messages_list_what_was_enqueued(app: NoStore) -> None:
    with toniq.testing.manual() as jobs:
        with pytest.raises(AssertionError, match="Nothing was enqueued"):
            jobs.assert_enqueued(Record)
        Record.enqueue(1, key="a")
        Local.enqueue(["x"])
        with pytest.raises(AssertionError) as info:
            jobs.assert_enqueued(Record, 2)
        assert str(info.value) == (
            "tests.testing.Record(2) was not enqueued.\n"
            "Jobs of tests.testing.Record that were enqueued (1):\n"
            "  tests.testing.Record(1, key='a') [available]\n"
            "Other jobs that were enqueued (1):\n"
            "  tests.testing.Local(['x']) [available, persist=False]"
        )
        with pytest.raises(AssertionError, match=r"No job of tests.testing.add was enqueued"):
            jobs.assert_enqueued(add)
        with pytest.raises(AssertionError) as info:
            jobs.assert_not_enqueued(Record)
        assert str(info.value) == (
            "a job of tests.testing.Record was enqueued 1 time(s):\n"
            "  tests.testing.Record(1, key='a') [available]"
        )
        with pytest.raises(AssertionError, match=r"Record\(1, key=<ANY>\) was enqueued 1 time"):
            jobs.assert_not_enqueued(Record, 1, key=ANY)
        for n in range(25):
            Record.enqueue(n)
        with pytest.raises(AssertionError, match=r"enqueued \(26\):\n(.*\n){20}  ... and 6 more"):
            jobs.assert_enqueued(Record, -1)


def test_assertions_work_in_inline_mode_too(app: NoStore) -> None:
    with toniq.testing.inline() as jobs:
        Record.enqueue(1)
        job = jobs.assert_enqueued(Record, 1)
        assert job.state is toniq.JobState.DONE and job.attempt == 1
        jobs.assert_not_enqueued(Record, 2)
        assert jobs.pending() == []


# -- drain ----------------------------------------------------------------------------------------


def test_drain_runs_everything_due_and_reports_it(app: NoStore) -> None:
    with toniq.testing.manual() as jobs:
        Record.enqueue(1)
        Charge.enqueue("k", failures=1)
        Record.with_options(delay=3600).enqueue("later")
        Local.enqueue(["x"])
        results = jobs.drain(raise_errors=False)
        assert all(isinstance(r, JobResult) for r in results)
        assert [(r.worker.rsplit(".", 1)[1], r.args, r.outcome.value) for r in results] == [
            ("Record", (1,), "done"),
            ("Charge", ("k",), "failed"),
            ("Local", (["x"],), "done"),
        ]
        assert results[1].error is not None and results[1].error.message == "k failed run 1"
        assert [j.args for j in jobs.pending()] == [("later",)]
        assert jobs.drain() == []  # nothing else is due
        [later] = jobs.drain(scheduled=True)
        assert later.args == ("later",) and jobs.pending() == []
    assert jobs.results == [*results, later]


def test_drain_raises_the_first_failure_after_running_everything(app: NoStore) -> None:
    with toniq.testing.manual() as jobs:
        Charge.enqueue("first", failures=1)
        Charge.enqueue("second", failures=1)
        Record.enqueue("ok")
        with pytest.raises(ValueError, match="first failed run 1") as info:
            jobs.drain()
    assert "1 more job(s) failed too" in info.value.__notes__[0]
    assert [r.outcome.value for r in jobs.results] == ["failed", "failed", "done"]


def test_drain_honours_retries(app: NoStore) -> None:
    with toniq.testing.manual(retries=True) as jobs:
        Charge.enqueue("k", failures=2)
        [result] = jobs.drain()
    assert result.ok and result.attempts == 3 and Charge.runs == {"k": 3}
    with toniq.testing.manual() as jobs:
        Charge.enqueue("j", failures=2)
        [result] = jobs.drain(raise_errors=False)
    assert not result.ok and result.attempts == 1


def test_drain_runs_jobs_enqueued_by_jobs_until_quiet(app: NoStore) -> None:
    with toniq.testing.manual() as jobs:
        Chain.enqueue(3)
        assert [r.args for r in jobs.drain()] == [(3,), (2,), (1,), (0,)]
        Forever.enqueue()
        with pytest.raises(DrainLimitError, match=r"ran 100 jobs .*Forever ×100"):
            jobs.drain(limit=100)
        assert len(jobs.pending(Forever)) == 1


def test_jobs_enqueued_from_other_threads_run_too(app: NoStore) -> None:
    with toniq.testing.manual() as jobs:
        FromThread.enqueue()
        assert [r.worker for r in jobs.drain()] == [
            "tests.testing.FromThread",
            "tests.testing.Record",
        ]
    with toniq.testing.inline() as jobs:
        FromThread.enqueue()  # the thread's enqueue ran its job there, inline
    assert [r.worker for r in jobs.results] == ["tests.testing.Record", "tests.testing.FromThread"]
    assert [c[1] for c in calls] == [("from a thread",)] * 2 and calls[1][3] != calls[0][3]


def test_drain_of_one_worker(app: NoStore) -> None:
    with toniq.testing.manual() as jobs:
        Record.enqueue(1)
        add.enqueue(1)
        assert [r.worker for r in jobs.drain(worker=add)] == ["tests.testing.add"]
        assert [j.worker for j in jobs.pending()] == ["tests.testing.Record"]


def test_drain_runs_scheduled_jobs_in_due_order(app: NoStore) -> None:
    with toniq.testing.manual() as jobs:
        Record.with_options(hold=True).enqueue("held")
        Record.with_options(delay=200).enqueue("second")
        Record.with_options(delay=100).enqueue("first")
        Record.enqueue("now")
        assert [r.args[0] for r in jobs.drain(scheduled=True)] == [
            "now",
            "first",
            "second",
            "held",
        ]


def test_drain_async_awaits_on_the_callers_loop(app: NoStore) -> None:
    async def main() -> tuple[list[JobResult], asyncio.AbstractEventLoop]:
        with toniq.testing.manual() as jobs:
            await AsyncRecord.enqueue_async(1)
            await AsyncChain.enqueue_async(1)
            return await jobs.drain_async(), asyncio.get_running_loop()

    results, loop = asyncio.run(main())
    assert [r.worker.rsplit(".", 1)[1] for r in results] == [
        "AsyncRecord",
        "AsyncChain",
        "AsyncChain",
        "Record",
    ]
    assert calls[0] == ("AsyncRecord", 1, loop)
    assert calls[1:3] == [("AsyncChain", 1), ("AsyncChain", 0)]
    assert all(r.ok for r in results)


def test_sync_drain_inside_a_running_loop(app: NoStore) -> None:
    async def main() -> list[JobResult]:
        with toniq.testing.manual() as jobs:
            AsyncRecord.enqueue(1)
            return jobs.drain()

    [result] = asyncio.run(main())
    assert result.ok and calls[0][:2] == ("AsyncRecord", 1)


def test_clear_forgets_everything(app: NoStore) -> None:
    with toniq.testing.manual() as jobs:
        Record.enqueue(1)
        jobs.drain()
        Record.enqueue(2)
        jobs.clear()
        assert jobs.jobs == [] and jobs.results == [] and jobs.drain() == []


# -- installing ---------------------------------------------------------------------------------


def test_modes_never_open_the_store_of_the_default_app(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TONIQ_URL", raising=False)
    monkeypatch.setattr(toniq.app, "_default", None)
    with toniq.testing.manual() as jobs:
        Record.enqueue(1)
        Local.enqueue([])
        jobs.drain()
    with toniq.testing.inline():
        Record.enqueue(2)
        Record.with_options(hold=True).enqueue(3)
    app = toniq.get_app()
    assert app.url == "sqlite:///toniq.sqlite3" and jobs.app is app
    assert app._backend is None and app._local_node is None
    assert list(tmp_path.iterdir()) == []


def test_the_previous_interceptor_comes_back_and_enqueue_stores_again() -> None:
    app = toniq.Toniq(url="memory://")
    try:
        with toniq.testing.manual(app) as outer:
            with toniq.testing.inline(app) as inner:
                assert app.interceptor is inner
                app.enqueue(Record, "inner")
            assert app.interceptor is outer
            app.enqueue(Record, "outer")
            with pytest.raises(toniq.ToniqError, match="already in use"):
                outer.__enter__()
        assert app.interceptor is None
        assert [j.args for j in inner.jobs] == [("inner",)]
        assert [j.args for j in outer.jobs] == [("outer",)]
        handle = app.enqueue(Record, "stored")  # the store again
        record = app.get_job(handle.id)
        assert record is not None and record.state is toniq.JobState.AVAILABLE
    finally:
        app.close()


def test_a_harness_acts_on_the_app_it_was_given(app: NoStore) -> None:
    other = NoStore(url="memory://")
    with toniq.testing.manual(other) as jobs:
        other.enqueue(Record, 1)
    assert jobs.app is other and len(jobs.jobs) == 1
    assert repr(jobs).startswith("<toniq.testing.Harness manual 1 job(s)")


# -- the example app ---------------------------------------------------------------------------


def test_the_shop_example_suite_passes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "examples/shop", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout and "failed" not in done.stdout
