"""Prometheus metrics: counters from the node's events, queue gauges read from the store at
scrape time, served over HTTP by toniq.metrics and by ``toniq worker --metrics-port``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import toniq
import toniq.metrics
from tests.conftest import FAST, backend_url
from tests.workers import Echo

ROOT = Path(__file__).resolve().parent.parent
attempts: dict[str, int] = {}
lock = threading.Lock()


class Ok(toniq.Worker, name="tests.metrics.Ok"):
    async def perform(self, n: int) -> None:
        pass


class FlakyOnce(toniq.Worker, name="tests.metrics.FlakyOnce", retries=1, backoff=lambda n: 0):
    """Fails its first run, succeeds on the retry."""

    def perform(self, key: str) -> None:
        with lock:
            attempts[key] = attempts.get(key, 0) + 1
            first = attempts[key] == 1
        if first:
            raise RuntimeError("first run fails")


class AlwaysFails(toniq.Worker, name="tests.metrics.AlwaysFails", retries=1, backoff=lambda n: 0):
    async def perform(self) -> None:
        raise ValueError("never works")


WORKERS = [Ok, FlakyOnce, AlwaysFails]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return parse(reply.read().decode())


@pytest.fixture(params=["sqlite", "redis"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[toniq.Toniq]:
    app = toniq.Toniq(backend_url(str(request.param), tmp_path), **FAST)
    yield app
    app.close()


def test_counters_match_the_jobs_run_scraped_over_http(app: toniq.Toniq) -> None:
    attempts.clear()
    registry = CollectorRegistry()
    server, _ = toniq.metrics.start_http_server(0, app=app, registry=registry)
    try:
        port = server.server_port
        before = scrape(port)
        # Series exist at zero before the first job, so rate() sees the first increase.
        assert value(before, "toniq_jobs_done_total", worker=Ok.worker_name) == 0
        for i in range(3):
            app.enqueue(Ok, i)
        app.enqueue(FlakyOnce, "a")
        app.enqueue(AlwaysFails)
        with toniq.Node(app, workers=WORKERS) as node:
            node.drain()
            samples = scrape(port)
            assert value(samples, "toniq_nodes_alive") == 1
        expected = {
            ("toniq_jobs_enqueued_total", Ok): 3,
            ("toniq_jobs_enqueued_total", FlakyOnce): 1,
            ("toniq_jobs_enqueued_total", AlwaysFails): 1,
            ("toniq_jobs_done_total", Ok): 3,
            ("toniq_jobs_done_total", FlakyOnce): 1,
            ("toniq_jobs_done_total", AlwaysFails): 0,
            ("toniq_jobs_retried_total", Ok): 0,
            ("toniq_jobs_retried_total", FlakyOnce): 1,
            ("toniq_jobs_retried_total", AlwaysFails): 1,
            ("toniq_jobs_failed_total", Ok): 0,
            ("toniq_jobs_failed_total", FlakyOnce): 0,
            ("toniq_jobs_failed_total", AlwaysFails): 1,
            ("toniq_job_duration_seconds_count", Ok): 3,
            ("toniq_job_duration_seconds_count", FlakyOnce): 2,
            ("toniq_job_duration_seconds_count", AlwaysFails): 2,
            ("toniq_queue_done_total", Ok): 3,
            ("toniq_queue_done_total", FlakyOnce): 1,
            ("toniq_queue_done_total", AlwaysFails): 0,
        }
        got = {
            (name, worker): value(samples, name, worker=worker.worker_name)
            for name, worker in expected
        }
        assert got == expected
        assert value(samples, "toniq_store_up") == 1
        for state, n in (("failed", 1), ("available", 0), ("running", 0), ("scheduled", 0)):
            assert (
                value(samples, "toniq_queue_jobs", worker=AlwaysFails.worker_name, state=state) == n
            ), state
        total = value(samples, "toniq_job_duration_seconds_sum", worker=Ok.worker_name)
        assert total is not None and 0 <= total < 5
        # The store gauges are read at each scrape: the node is gone, the failed job deleted.
        assert app.delete_all() == 1
        after = scrape(port)
        assert value(after, "toniq_nodes_alive") == 0
        assert value(after, "toniq_queue_jobs", worker=AlwaysFails.worker_name, state="failed") == 0
    finally:
        server.shutdown()
        toniq.metrics.instrument(app, registry).close()


def test_instrument_is_idempotent_and_close_unregisters(tmp_path: Path) -> None:
    app = toniq.Toniq(backend_url("memory", tmp_path), **FAST)
    registry = CollectorRegistry()
    try:
        metrics = toniq.metrics.instrument(app, registry)
        assert toniq.metrics.instrument(app, registry) is metrics
        app.enqueue(Ok.with_options(persist=False), 1)  # counted too: enqueued here
        assert (
            registry.get_sample_value("toniq_jobs_enqueued_total", {"worker": Ok.worker_name}) == 1
        )
        metrics.close()
        assert registry.get_sample_value("toniq_jobs_enqueued_total", {"worker": "x"}) is None
        assert b"toniq_" not in generate_latest(registry)
        again = toniq.metrics.instrument(app, registry)  # a fresh one can be made
        assert again is not metrics
        again.close()
    finally:
        app.close()


def test_store_up_is_zero_when_the_store_cannot_be_read() -> None:
    app = toniq.Toniq("redis://127.0.0.1:1/0?timeout=0.2")
    registry = CollectorRegistry()
    metrics = toniq.metrics.instrument(app, registry)
    try:
        samples = parse(generate_latest(registry).decode())
        assert value(samples, "toniq_store_up") == 0
        assert not any(name.startswith("toniq_queue") for name, _ in samples)
    finally:
        metrics.close()
        app.close()


def test_toniq_worker_serves_metrics(tmp_path: Path) -> None:
    """A real ``toniq worker --metrics-port`` process: banner, then /metrics that counts
    the jobs it ran."""
    url = backend_url("sqlite", tmp_path)
    producer = toniq.Toniq(url)
    for i in range(5):
        producer.enqueue(Echo, i)
    producer.close()
    # Not the test session's TONIQ_ settings, but its signing key, which signed the jobs.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONIQ_")}
    env["TONIQ_SECRET"] = os.environ["TONIQ_SECRET"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "toniq",
            "worker",
            "tests.workers",
            "--url",
            url,
            "--metrics-port",
            "0",
            "--summary-interval",
            "0.2",
        ],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"metrics\s+http://127\.0\.0\.1:(\d+)/metrics", line)
            if found:
                port = int(found[1])
        assert port is not None, "".join(lines)
        banner = "".join(lines)
        assert "toniq " in banner and url in banner and "tests.Echo" in banner
        deadline = time.monotonic() + 30
        while True:
            samples = scrape(port)
            done = value(samples, "toniq_jobs_done_total", worker="tests.Echo")
            if done == 5 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert done == 5
        assert value(samples, "toniq_queue_done_total", worker="tests.Echo") == 5
        assert value(samples, "toniq_nodes_alive") == 1
        assert any(name.startswith("process_") for name, _ in samples)  # the global registry
        # The periodic summary reaches the log (every 0.2 s here).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if "toniq: last" in line:
                break
        assert "toniq: last" in lines[-1], "".join(lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            if proc.stderr is not None:
                proc.stderr.close()
