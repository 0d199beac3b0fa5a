"""Keys: Redis refuses to run without one, the opt-out is explicit and loud, keys rotate,
SQLite and memory sign out of the box, and oversized jobs are refused at enqueue."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import toniq
from tests.conftest import FAST, backend_url, redis_server
from tests.workers import Echo, probe
from toniq.job import CANNOT_RUN, JobState
from toniq.serialization import dumps_unsigned
from toniq.signing import key_id

OLD = "old-secret-0123456789abcdef"
NEW = "new-secret-0123456789abcdef"


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    probe.reset()
    yield
    toniq.app._default = None


@pytest.fixture
def no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TONIQ_SECRET")


def redis_keys(url: str) -> list[bytes]:
    queue = url.split("queue=")[1]
    client = redis_server().client()
    try:
        return list(client.scan_iter(match=f"toniq:{{{queue}}}:*"))
    finally:
        client.close()


@pytest.mark.usefixtures("no_secret")
def test_enqueue_on_redis_without_a_key_refuses_and_stores_nothing(tmp_path: Path) -> None:
    url = backend_url("redis", tmp_path)
    app = toniq.Toniq(url)
    try:
        with pytest.raises(toniq.MissingSecretError, match="TONIQ_SECRET") as info:
            app.enqueue(Echo, 1)
        assert "TONIQ_INSECURE_UNSIGNED" in str(info.value)
        assert isinstance(info.value, toniq.ConfigurationError)
        assert redis_keys(url) == []
    finally:
        app.close()


@pytest.mark.usefixtures("no_secret")
def test_a_node_on_redis_without_a_key_refuses_to_start(tmp_path: Path) -> None:
    app = toniq.Toniq(backend_url("redis", tmp_path), **FAST)
    try:
        with pytest.raises(toniq.MissingSecretError, match=r"secrets\.token_hex"):
            toniq.Node(app).start()
        assert app.nodes() == []  # it never registered
    finally:
        app.close()


@pytest.mark.usefixtures("no_secret")
def test_toniq_worker_on_redis_without_a_key_exits_non_zero_with_how_to_fix(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TONIQ_SECRET"}
    url = backend_url("redis", tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "toniq", "worker", "tests.workers", "--burst", "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=Path(__file__).parent.parent,
    )
    assert result.returncode != 0
    assert "TONIQ_SECRET" in result.stderr and "no signing key" in result.stderr, result.stderr


@pytest.mark.usefixtures("no_secret")
def test_the_opt_out_is_loud_writes_unsigned_and_reads_unsigned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TONIQ_INSECURE_UNSIGNED", "1")
    app = toniq.configure(backend_url("redis", tmp_path), **FAST)
    try:
        with caplog.at_level(logging.WARNING, logger="toniq"):
            handle = app.enqueue(Echo, "unsigned")
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("insecure_unsigned" in w and "run code" in w for w in warnings), warnings
        record = app.get_job(handle.id)
        assert record is not None and record.payload[:3] == b"TQ\x01"
        app.backend.enqueue(
            [toniq.job.NewJob("legacy", Echo.worker_name, dumps_unsigned((7,), {}), time.time())]
        )
        with toniq.Node(app) as node:
            node.drain()
        assert {c[1] for c in probe.calls} == {(7,), ("unsigned",)}
    finally:
        app.close()


def test_the_opt_out_with_a_key_still_signs_and_drains_old_unsigned_jobs(
    tmp_path: Path,
) -> None:
    app = toniq.configure(backend_url("redis", tmp_path), insecure_unsigned=True, **FAST)
    try:
        handle = app.enqueue(Echo, "signed")
        record = app.get_job(handle.id)
        assert record is not None and record.payload[:3] == b"TQ\x02"
        app.backend.enqueue(
            [toniq.job.NewJob("v1", Echo.worker_name, dumps_unsigned((1,), {}), time.time())]
        )
        with toniq.Node(app) as node:
            node.drain()
        assert {c[1] for c in probe.calls} == {(1,), ("signed",)}
    finally:
        app.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_key_rotation_new_key_signs_old_key_still_verifies(kind: str, tmp_path: Path) -> None:
    url = backend_url(kind, tmp_path)
    before = toniq.Toniq(url, secret=OLD, **FAST)
    old_job = before.enqueue(Echo, "signed with the old key")
    before.close()
    app = toniq.configure(url, secret=f"{NEW},{OLD}", **FAST)  # as TONIQ_SECRET="new,old"
    try:
        new_job = app.enqueue(Echo, "signed with the new key")
        record = app.get_job(new_job.id)
        assert record is not None and record.payload[3:7] == key_id(NEW.encode())
        with toniq.Node(app) as node:
            node.drain()
        assert sorted(c[1][0] for c in probe.calls) == [
            "signed with the new key",
            "signed with the old key",
        ]
        assert app.get_job(old_job.id) is None  # done
        # A node that has only the old key refuses what the new key signed.
        straggler = app.enqueue(Echo, "new key again")
        with toniq.Node(app, secret=OLD) as node:
            node.drain()
        failed = app.get_job(straggler.id)
        assert failed is not None and failed.state is JobState.FAILED
        assert failed.errors[-1].type == CANNOT_RUN
        assert "not one of this process's keys" in failed.errors[-1].message
    finally:
        app.close()


@pytest.mark.usefixtures("no_secret")
def test_sqlite_signs_out_of_the_box_with_a_key_of_its_own(tmp_path: Path) -> None:
    url = backend_url("sqlite", tmp_path)
    app = toniq.configure(url, **FAST)
    try:
        handle = app.enqueue(Echo, "no configuration")
        conn = sqlite3.connect(tmp_path / "toniq.sqlite3")
        (stored,) = conn.execute(
            "SELECT value FROM toniq_meta WHERE key = 'signing_key'"
        ).fetchone()
        conn.close()
        record = app.get_job(handle.id)
        assert record is not None
        assert record.payload[3:7] == key_id(bytes.fromhex(stored))
        other = toniq.Toniq(url, **FAST)  # another process on the same file: same key
        try:
            with toniq.Node(other) as node:
                node.drain()
        finally:
            other.close()
        assert probe.calls == [("Echo", ("no configuration",), {})]
    finally:
        app.close()


@pytest.mark.usefixtures("no_secret")
def test_memory_needs_no_key(tmp_path: Path) -> None:
    app = toniq.configure("memory://", **FAST)
    try:
        with toniq.Node(app) as node:
            toniq.enqueue(Echo, 1)
            node.drain()
        assert probe.calls == [("Echo", (1,), {})]
    finally:
        app.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_enqueue_of_an_oversized_job_raises_and_writes_nothing(kind: str, tmp_path: Path) -> None:
    app = toniq.configure(backend_url(kind, tmp_path), max_payload_size=1000, **FAST)
    try:
        with pytest.raises(toniq.PayloadTooLargeError, match="max_payload_size") as info:
            app.enqueue(Echo, "x" * 2000)
        assert isinstance(info.value, toniq.SerializationError)
        assert isinstance(info.value, toniq.EnqueueError)
        assert app.counts() == {}
        app.enqueue(Echo, "x" * 500)  # below the limit: fine
        assert app.counts() == {Echo.worker_name: {"available": 1}}
    finally:
        app.close()


def test_settings_never_show_the_secret() -> None:
    settings = toniq.Settings(secret=NEW)
    assert NEW not in repr(settings)
    with pytest.raises(toniq.ConfigurationError, match="at least 16"):
        toniq.Settings(secret="short")
    with pytest.raises(toniq.ConfigurationError, match="max_payload_size"):
        toniq.Settings(max_payload_size=0)


def test_bad_opt_out_value_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TONIQ_INSECURE_UNSIGNED", "maybe")
    with pytest.raises(toniq.ConfigurationError, match="TONIQ_INSECURE_UNSIGNED"):
        toniq.Settings.make("memory://")
