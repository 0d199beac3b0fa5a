"""Enqueue: arguments arrive as they were, bad input is refused and stores nothing."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import threading
from pathlib import Path
from typing import Any

import pytest

import toniq
from tests.conftest import FAST
from tests.workers import AsyncEcho, Echo, Local, Point, add, probe


@pytest.fixture(autouse=True)
def _reset() -> None:
    probe.reset()


def test_arguments_arrive_exactly_as_enqueued(app: toniq.Toniq) -> None:
    when = datetime.datetime(2026, 11, 27, 12, 30, tzinfo=datetime.UTC)
    args = (decimal.Decimal("19.99"), when, Point(1, 2), (1, (2, 3)), {"a": [1, 2]}, b"\x00")
    handle = toniq.enqueue(Echo, *args, key=frozenset({1}))
    assert handle.persisted and len(handle.id) == 32 and handle.worker == "tests.Echo"
    with toniq.Node(app) as node:
        node.drain()
    ((_, got_args, got_kwargs),) = probe.calls
    assert got_args == args and got_kwargs == {"key": frozenset({1})}
    assert [type(a) for a in got_args] == [type(a) for a in args]


def test_async_twin_and_function_workers(app: toniq.Toniq) -> None:
    import asyncio

    async def main() -> None:
        await toniq.enqueue_async(AsyncEcho, 1, x=2)
        await add.enqueue_async(2, 3)

    asyncio.run(main())
    add.enqueue(a=5, b=6)
    asyncio.run(add(1, 1))  # calling the function still calls it directly, not as a job
    with toniq.Node(app) as node:
        node.drain()
    assert probe.calls[0] == ("add", (1, 1), {})
    assert sorted(map(repr, probe.calls[1:])) == sorted(
        map(repr, [("AsyncEcho", (1,), {"x": 2}), ("add", (2, 3), {}), ("add", (5, 6), {})])
    )


def test_job_handle_reports_the_stored_job(app: toniq.Toniq) -> None:
    handle = toniq.enqueue(Echo, 1)
    info = handle.info()
    assert info is not None and info.state is toniq.JobState.AVAILABLE
    assert info.arguments() == ((1,), {})


def test_not_a_worker_is_refused(app: toniq.Toniq) -> None:
    with pytest.raises(toniq.NotAWorkerError, match="Worker subclass"):
        toniq.enqueue(print, 1)  # type: ignore[arg-type]
    with pytest.raises(toniq.NotAWorkerError, match="class, not an instance"):
        toniq.enqueue(Echo(), 1)
    with pytest.raises(toniq.NotAWorkerError):
        toniq.enqueue("tests.Echo", 1)
    assert app.counts() == {}


def test_arguments_that_do_not_fit_perform_are_refused(app: toniq.Toniq) -> None:
    with pytest.raises(TypeError, match=r"cannot enqueue tests\.add"):
        add.enqueue(1, 2, 3)
    with pytest.raises(TypeError, match="unexpected keyword"):
        toniq.enqueue(add, a=1, b=2, c=3)
    assert app.counts() == {}


def test_unpicklable_arguments_name_the_argument_and_store_nothing(app: toniq.Toniq) -> None:
    with pytest.raises(toniq.SerializationError, match="argument 'lock'") as info:
        toniq.enqueue(Echo, 1, lock=threading.Lock())
    assert "cannot be pickled" in str(info.value)
    with pytest.raises(toniq.SerializationError, match="positional argument 1"):
        toniq.enqueue(Echo, 1, lambda: 2)
    assert app.counts() == {}


def test_per_enqueue_options_never_collide_with_job_arguments(app: toniq.Toniq) -> None:
    # A job may have its own `persist` argument: options go through with_options().
    handle = toniq.enqueue(Echo, persist=True)
    assert handle.persisted
    local = Echo.with_options(persist=False).enqueue(persist="mine")
    assert not local.persisted
    with pytest.raises(TypeError, match="unknown enqueue option"):
        Echo.with_options(priority=1)


def test_closed_store_gives_a_clear_error(app: toniq.Toniq) -> None:
    import asyncio

    toniq.enqueue(Echo, 1)  # the store is open (enqueue_async takes another path then)
    app.close()
    with pytest.raises(toniq.EnqueueError, match="closed"):
        toniq.enqueue(Echo, 1)
    with pytest.raises(toniq.EnqueueError, match="closed"):
        asyncio.run(toniq.enqueue_async(Echo, 1))


def test_unreachable_store_gives_a_clear_error(tmp_path: Path) -> None:
    import asyncio

    app = toniq.Toniq(url=f"sqlite:///{tmp_path / 'missing' / 'x.sqlite3'}")
    with pytest.raises(toniq.EnqueueError, match="does not exist"):
        app.enqueue(Echo, 1)
    with pytest.raises(toniq.EnqueueError, match="does not exist"):
        asyncio.run(app.enqueue_async(Echo, 1))
    assert not (tmp_path / "missing").exists()


def test_stored_jobs_survive_reopening_the_store(tmp_path: Path) -> None:
    path = tmp_path / "ro.sqlite3"
    app = toniq.Toniq(url=f"sqlite:///{path}")
    app.enqueue(Echo, 1)
    app.close()
    reader = toniq.Toniq(url=f"sqlite:///{path}")
    assert reader.counts()["tests.Echo"] == {"available": 1}
    reader.close()


def test_persist_false_runs_at_once_and_leaves_nothing_in_the_store(
    sqlite_app: toniq.Toniq, tmp_path: Path
) -> None:
    before = (tmp_path / "toniq.sqlite3").exists() and sqlite_app.counts()
    handle = toniq.enqueue(Local, Point(3, 4))
    per_enqueue = Echo.with_options(persist=False).enqueue("not stored")
    assert not handle.persisted and not per_enqueue.persisted and handle.info() is None
    sqlite_app.local_node().drain()
    assert ("Local", (Point(3, 4),), {}) in probe.calls
    assert ("Echo", ("not stored",), {}) in probe.calls
    assert sqlite_app.counts() == {} and before in (False, {})
    import sqlite3

    rows = (
        sqlite3.connect(tmp_path / "toniq.sqlite3")
        .execute("SELECT count(*) FROM toniq_jobs")
        .fetchone()
    )
    assert rows == (0,)


def test_persist_false_uses_the_running_node_of_this_process(app: toniq.Toniq) -> None:
    with toniq.Node(app) as node:
        assert app.local_node() is node
        toniq.enqueue(Local, 1)
        node.drain()
        assert node.stats.local_done == 1
    assert app.counts() == {}


def test_configure_rejects_unknown_settings_and_bad_urls() -> None:
    with pytest.raises(TypeError, match="unknown setting"):
        toniq.Toniq(url="memory://", heartbeat=1)
    with pytest.raises(toniq.ConfigurationError, match="unknown backend URL"):
        _ = toniq.Toniq(url="mongodb://x").backend
    with pytest.raises(toniq.ConfigurationError, match="memory://"):
        _ = toniq.Toniq(url="sqlite:///:memory:").backend
    with pytest.raises(toniq.ConfigurationError, match="takeover_timeout"):
        toniq.Toniq(url="memory://", heartbeat_interval=5, takeover_timeout=1)
    assert FAST["takeover_timeout"] > FAST["heartbeat_interval"]


# -- enqueue_many ------------------------------------------------------------------------------


def test_enqueue_many_stores_every_job_in_order_and_they_run(app: toniq.Toniq) -> None:
    handles = toniq.enqueue_many(add, [(i, i) for i in range(2_500)])  # three store calls
    assert len(handles) == 2_500 and len({h.id for h in handles}) == 2_500
    assert all(h.persisted and h.worker == add.worker.worker_name for h in handles)
    # made without __init__ (see JobHandle._stored), they are what __init__ makes
    twin = toniq.JobHandle(handles[0].id, add.worker.worker_name, True, app)
    assert handles[0] == twin and hash(handles[0]) == hash(twin) and repr(handles[0]) == repr(twin)
    with pytest.raises(dataclasses.FrozenInstanceError):
        handles[0].id = "other"  # type: ignore[misc]
    assert app.counts()[add.worker.worker_name] == {"available": 2_500}
    assert [r.id for r in app.jobs("available", limit=3)] == [h.id for h in handles[:3]]
    with toniq.Node(app, claim_batch=1) as node:  # one at a time: the run order is FIFO
        node.drain()
    assert [args for name, args, _ in probe.calls if name == "add"] == [
        (i, i) for i in range(2_500)
    ]


def test_enqueue_many_on_redis_signs_each_next_batch_while_redis_stores_one(
    app: toniq.Toniq, backend_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    overlapped: list[int] = []
    kind = type(app.backend)
    real = getattr(kind, "enqueue_overlapping", None)
    if real is not None:

        def spy(self: Any, jobs: list[toniq.job.NewJob], meanwhile: Any) -> None:
            overlapped.append(len(jobs))
            real(self, jobs, meanwhile)

        monkeypatch.setattr(kind, "enqueue_overlapping", spy)
    handles = toniq.enqueue_many(add, [(i, i) for i in range(2_500)])
    # the last batch has no next one to sign: stored as before
    assert overlapped == ([1_000, 1_000] if backend_kind.startswith("redis") else [])
    assert [r.id for r in app.jobs("available", limit=2_500)] == [h.id for h in handles]


def test_enqueue_many_takes_tuples_and_dicts_and_every_form_of_worker(app: toniq.Toniq) -> None:
    Echo.enqueue_many([(1,), {"x": 2}])
    toniq.enqueue_many(Echo.with_options(delay=3600), [("later",)])
    add.enqueue_many([{"a": 1, "b": 2}])
    app.enqueue_many(Echo, iter([(Point(1, 2),)]))  # any iterable
    assert asyncio_run(toniq.enqueue_many_async(Echo, [(3,)]))[0].persisted
    assert app.counts()["tests.Echo"] == {"available": 4, "scheduled": 1}
    with toniq.Node(app) as node:
        node.drain()
    assert sorted(map(repr, probe.calls)) == sorted(
        map(
            repr,
            [
                ("Echo", (1,), {}),
                ("Echo", (), {"x": 2}),
                ("add", (1, 2), {}),
                ("Echo", (Point(1, 2),), {}),
                ("Echo", (3,), {}),
            ],
        )
    )


def asyncio_run(coro: object) -> list[toniq.JobHandle]:
    import asyncio

    return asyncio.run(coro)  # type: ignore[arg-type]


def test_enqueue_many_checks_every_job_before_storing_any(app: toniq.Toniq) -> None:
    with pytest.raises(TypeError, match=r"cannot enqueue .*add"):
        toniq.enqueue_many(add, [(1, 2)] * 1_500 + [(1,)])  # the last one misses an argument
    with pytest.raises(TypeError, match=r"one tuple .* or dict"):
        toniq.enqueue_many(add, [(1, 2), [3, 4]])
    with pytest.raises(toniq.SerializationError, match="lock"):
        toniq.enqueue_many(Echo, [(1,)] * 1_500 + [{"lock": threading.Lock()}])
    with pytest.raises(toniq.PayloadTooLargeError, match="max_payload_size"):
        toniq.enqueue_many(Echo, [(1,)] * 1_500 + [("x" * 2_000_000,)])  # in the second batch
    with pytest.raises(toniq.NotAWorkerError):
        toniq.enqueue_many("tests.Echo", [(1,)])
    assert app.counts() == {}


def test_enqueue_many_reports_what_was_stored_when_the_store_fails_part_way(
    app: toniq.Toniq, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = app._store_batch
    calls = 0

    def fail_second(jobs: list[toniq.job.NewJob], *overlap: Any) -> None:  # a fault in toniq
        nonlocal calls
        calls += 1
        if calls == 2:
            raise toniq.EnqueueError("the store went away")
        real(jobs, *overlap)

    monkeypatch.setattr(app, "_store_batch", fail_second)
    with pytest.raises(toniq.EnqueueError, match="1000 of 2500 jobs were stored") as caught:
        toniq.enqueue_many(add, [(i, i) for i in range(2_500)])
    assert len(caught.value.stored) == 1_000
    assert app.counts()[add.worker.worker_name] == {"available": 1_000}
    stored = {r.id for r in app.jobs("available", limit=2_000)}
    assert stored == {h.id for h in caught.value.stored}


def test_enqueue_many_of_persist_false_jobs_runs_them_here(app: toniq.Toniq) -> None:
    handles = toniq.enqueue_many(Local, [(1,), (2,)])
    assert [h.persisted for h in handles] == [False, False]
    app.local_node().drain()
    assert sorted(args for name, args, _ in probe.calls if name == "Local") == [(1,), (2,)]
    assert app.counts() == {}
