"""``toniq status`` and :func:`toniq.status.snapshot` against a running node (SQLite, Redis),
the throughput ring, the worker's banner and its periodic summary."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

import toniq
import toniq.app
from tests.conftest import FAST, backend_url, redis_server
from toniq.backends import from_url
from toniq.backends.redis import RedisBackend
from toniq.cli import banner, main
from toniq.job import JobError, NewJob, NodeInfo, Outcome
from toniq.serialization import dumps_unsigned as dumps
from toniq.status import SCHEMA_VERSION, ThroughputLog, snapshot

gate = threading.Event()


class Quick(toniq.Worker, name="tests.status.Quick"):
    def perform(self, n: int) -> None:
        pass


class Boom(toniq.Worker, name="tests.status.Boom", retries=0):
    async def perform(self) -> None:
        raise ValueError("boom")


class Blocker(toniq.Worker, name="tests.status.Blocker", max_concurrency=2):
    def perform(self) -> None:
        gate.wait(30)


WORKERS = [Quick, Boom, Blocker]


def poll(check: Callable[[], Any], timeout: float = 10.0, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(str(request.param), tmp_path)


@pytest.fixture
def busy(store_url: str) -> Iterator[tuple[toniq.Toniq, toniq.Node]]:
    """A node that finished 3 Quick jobs and failed a Boom, and now runs 2 Blocker jobs
    (a third waits: max_concurrency=2); one Quick job is delayed."""
    gate.clear()
    app = toniq.Toniq(store_url, **FAST)
    node = toniq.Node(app, workers=WORKERS).start()
    try:
        for i in range(3):
            app.enqueue(Quick, i)
        app.enqueue(Boom)
        node.drain()
        for _ in range(3):
            app.enqueue(Blocker)
        app.enqueue(Quick.with_options(delay=3600), 9)
        assert poll(lambda: node.running == 2)
        yield app, node
    finally:
        gate.set()
        node.stop()
        app.close()


def test_snapshot_of_a_running_node(busy: tuple[toniq.Toniq, toniq.Node]) -> None:
    app, node = busy
    # Another app on the same store, as a `toniq status` process would be: everything it
    # shows comes from the store, throughput included.
    reader = toniq.Toniq(app.url)
    try:
        status = snapshot(reader)
    finally:
        reader.close()
    workers = {w.name: w for w in status.workers}
    quick, boom, blocker = (
        workers[Quick.worker_name],
        workers[Boom.worker_name],
        workers[Blocker.worker_name],
    )
    assert (quick.available, quick.scheduled, quick.running, quick.failed) == (0, 1, 0, 0)
    assert (quick.done, quick.done_recently, quick.errors_recently) == (3, 3, 0)
    assert (boom.failed, boom.done_recently, boom.errors_recently) == (1, 0, 1)
    assert (blocker.available, blocker.running, blocker.done) == (1, 2, 0)
    assert quick.per_second == pytest.approx(3 / 60)
    assert status.per_second == pytest.approx(4 / 60)
    assert status.totals["running"] == 2 and status.totals["nodes"] == 1

    (live,) = status.nodes
    assert (live.id, live.pid) == (node.id, os.getpid())
    assert set(live.workers) == {w.worker_name for w in WORKERS}
    assert 0 <= live.heartbeat_age < 5
    assert len(live.running) == 2
    assert {j.worker for j in live.running} == {Blocker.worker_name}
    assert all(j.node == node.id and j.attempt == 1 for j in live.running)
    assert all(j.running_for is not None and 0 <= j.running_for < 30 for j in live.running)
    assert status.orphaned == () and status.running_truncated is False
    running_ids = {r.id for r in app.jobs("running")}
    assert {j.id for j in live.running} == running_ids

    limited = snapshot(app, running_limit=1, window=10)
    assert limited.running_truncated is True and limited.window == 10
    assert sum(len(n.running) for n in limited.nodes) == 1
    assert {w.name: w.per_second for w in limited.workers}[Quick.worker_name] == pytest.approx(
        3 / 10
    )


JOB_KEYS = {"id", "worker", "node", "attempt", "started_at", "running_for"}
WORKER_KEYS = {
    "name",
    "available",
    "scheduled",
    "running",
    "failed",
    "done",
    "done_recently",
    "errors_recently",
    "per_second",
}
NODE_KEYS = {
    "id",
    "host",
    "pid",
    "started_at",
    "heartbeat_at",
    "heartbeat_age",
    "workers",
    "running",
}
TOTAL_KEYS = {
    "available",
    "scheduled",
    "running",
    "failed",
    "done",
    "done_recently",
    "errors_recently",
    "per_second",
    "nodes",
}


def test_cli_status_json_and_table(busy: tuple[toniq.Toniq, toniq.Node]) -> None:
    app, node = busy
    result = CliRunner().invoke(main, ["status", "--url", app.url, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {
        "schema",
        "url",
        "time",
        "window",
        "totals",
        "workers",
        "nodes",
        "orphaned",
        "running_truncated",
    }
    assert data["schema"] == SCHEMA_VERSION == 1 and data["window"] == 60
    assert set(data["totals"]) == TOTAL_KEYS
    assert all(set(w) == WORKER_KEYS for w in data["workers"])
    workers = {w["name"]: w for w in data["workers"]}
    assert workers[Quick.worker_name]["done"] == 3
    assert workers[Blocker.worker_name]["running"] == 2
    (live,) = data["nodes"]
    assert set(live) == NODE_KEYS and live["id"] == node.id and live["pid"] == os.getpid()
    assert len(live["running"]) == 2 and all(set(j) == JOB_KEYS for j in live["running"])

    table = CliRunner().invoke(main, ["status", "--url", app.url])
    assert table.exit_code == 0, table.output
    for text in (node.id, Quick.worker_name, Blocker.worker_name, "jobs/s", "Nodes", "Workers"):
        assert text in table.output


def test_cli_status_without_nodes_and_a_bad_store(tmp_path: Path) -> None:
    url = backend_url("sqlite", tmp_path)
    result = CliRunner().invoke(main, ["status", "--url", url])
    assert result.exit_code == 0, result.output
    assert "no live node" in result.output and "no jobs yet" in result.output
    result = CliRunner().invoke(main, ["status", "--url", url, "--json", "--window", "61"])
    assert result.exit_code == 2 and "61" in result.output
    bad = CliRunner().invoke(main, ["status", "--url", "redis://127.0.0.1:1/0?timeout=0.2"])
    assert bad.exit_code == 1 and "Error" in bad.output


def test_cli_status_watch_refreshes_until_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = backend_url("sqlite", tmp_path)
    looks: list[float] = []
    real = toniq.status.snapshot

    def counting(*args: Any, **kwargs: Any) -> toniq.status.Status:
        looks.append(time.monotonic())
        if len(looks) == 3:
            raise KeyboardInterrupt  # what Ctrl-C does
        return real(*args, **kwargs)

    monkeypatch.setattr(toniq.status, "snapshot", counting)
    result = CliRunner().invoke(main, ["status", "--url", url, "--json", "--watch", "0.1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2 and all(json.loads(line)["schema"] == 1 for line in lines)
    assert looks[2] - looks[0] >= 0.2


# -- the throughput ring ---------------------------------------------------------------------------


def _one_run(backend: Any, worker: str, ok: bool = True) -> None:
    job = NewJob(f"{worker}-{time.monotonic_ns()}", worker, dumps((), {}), time.time())
    backend.enqueue([job])
    (claimed,) = backend.claim("n1", {worker: 1})
    error = None if ok else JobError.reason("ValueError", "no", attempt=1, node="n1")
    assert backend.ack("n1", [Outcome(claimed.id, claimed.token, worker, error)]).accepted == 1


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_bucket_is_restarted_when_its_slot_comes_round_again(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = from_url(backend_url(kind, tmp_path))
    clock = [1_000_000.5]
    module = f"toniq.backends.{kind}"
    monkeypatch.setattr(f"{module}.time", SimpleNamespace(time=lambda: clock[0]))
    try:
        backend.register_node(NodeInfo("n1", "h", 1, clock[0], clock[0], ("w",)))
        _one_run(backend, "w")
        _one_run(backend, "w", ok=False)
        assert backend.finished_recently() == {"w": {"done": 1, "errors": 1}}
        clock[0] += 30
        assert backend.finished_recently() == {"w": {"done": 1, "errors": 1}}
        assert backend.finished_recently(30) == {}
        clock[0] += 34  # 64 s later: the same slot of the ring
        backend.heartbeat("n1")
        _one_run(backend, "w")
        assert backend.finished_recently() == {"w": {"done": 1, "errors": 0}}
    finally:
        backend.close()


def test_redis_restarts_stale_buckets_and_bounds_the_ring(tmp_path: Path) -> None:
    backend = from_url(backend_url("redis", tmp_path))
    assert isinstance(backend, RedisBackend)
    client = redis_server().client()
    try:
        now = int(client.time()[0])
        stale = now - 6400  # a second long gone, in every slot of the ring
        rate = backend.key("rate")
        client.hset(rate, mapping={f"{(stale + i) % 64}:w": f"{stale + i} 5 5" for i in range(64)})
        backend.register_node(NodeInfo("n1", "h", 1, now, now, ("w",)))
        _one_run(backend, "w")
        _one_run(backend, "w", ok=False)
        assert backend.finished_recently() == {"w": {"done": 1, "errors": 1}}
        assert client.hlen(rate) == 64  # restarted in place, not added
        assert 0 < client.ttl(rate) <= 120
    finally:
        client.close()
        backend.close()


# -- toniq worker: banner and summary --------------------------------------------------------------


def test_banner_hides_the_password_and_lists_workers(tmp_path: Path) -> None:
    app = toniq.Toniq("redis://user:s3cret@localhost:6379/0?queue=q", threads=7)
    node = toniq.Node(app, workers=WORKERS)
    text = banner(node, "http://127.0.0.1:9100/metrics", 60)
    assert "s3cret" not in text and "redis://user:***@localhost:6379/0?queue=q" in text
    assert node.id in text and "threads   7" in text
    assert "tests.status.Blocker  thread  max_concurrency 2" in text
    assert "tests.status.Boom     async   max_concurrency unlimited" in text
    assert "metrics   http://127.0.0.1:9100/metrics" in text
    assert "every 60s at INFO" in text
    app.close()


def test_summary_logs_what_the_node_did_each_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = toniq.Toniq(backend_url("sqlite", tmp_path), **FAST)
    caplog.set_level(logging.INFO, logger="toniq")
    try:
        with toniq.Node(app, workers=WORKERS) as node, ThroughputLog(node, interval=0.05):
            for i in range(4):
                app.enqueue(Quick, i)
            app.enqueue(Boom)
            node.drain()

            def summed() -> bool:
                lines = [m for r in caplog.records if "toniq: last" in (m := r.getMessage())]
                found = [re.search(r"(\d+) done, (\d+) retried, (\d+) failed", m) for m in lines]
                done = sum(int(m[1]) for m in found if m)
                failed = sum(int(m[3]) for m in found if m)
                return done == 4 and failed == 1

            assert poll(summed)
    finally:
        app.close()
    line = next(r.getMessage() for r in caplog.records if "toniq: last" in r.getMessage())
    assert "jobs/s" in line and "running" in line
    with pytest.raises(ValueError, match="interval"):
        ThroughputLog(node, interval=0)


def test_bulk_retry_and_delete_go_by_chunks_with_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import toniq.cli

    monkeypatch.setattr(toniq.cli, "BULK_CHUNK", 2)
    url = backend_url("sqlite", tmp_path)
    app = toniq.Toniq(url, **FAST)
    try:
        for _ in range(5):
            app.enqueue(Boom)
        with toniq.Node(app, workers=[Boom]) as node:
            node.drain()
        assert app.counts()[Boom.worker_name]["failed"] == 5
        result = CliRunner().invoke(main, ["failed", "--url", url, "retry", "--all", "--yes"])
        assert result.exit_code == 0, result.output
        assert "retried 5 job(s)" in result.output
        assert app.counts()[Boom.worker_name] == {"available": 5}
        with toniq.Node(app, workers=[Boom]) as node:
            node.drain()
        result = CliRunner().invoke(main, ["failed", "--url", url, "delete", "--all", "--yes"])
        assert result.exit_code == 0 and "deleted 5 job(s)" in result.output, result.output
        assert app.counts().get(Boom.worker_name, {}).get("failed", 0) == 0
    finally:
        app.close()
