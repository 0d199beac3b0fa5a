"""Hostile input: bytes written straight into the store by someone without the key.

Each payload is written the way an attacker with write access would write it (a raw SQL
insert on SQLite, raw commands mimicking ``lua/enqueue.lua`` on Redis), and a real node
runs against the store. Every payload must end in failed with its reason and its raw bytes,
none may be unpickled (the canary pickle would create a file), and the node must keep
running jobs. SQLite runs with no key configured (its own key, kept in the database);
Redis with the session's key (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

import toniq
from tests.chaos.rig import SUMMARIES
from tests.conftest import FAST, backend_url, redis_server
from tests.workers import Echo, probe
from toniq.cli import main
from toniq.job import CANNOT_RUN, JobState
from toniq.serialization import seal
from toniq.signing import Keyring, key_id

#: The node refuses payloads larger than this (set small so the test stays small).
LIMIT = 4096


@pytest.fixture(autouse=True)
def _reset() -> None:
    probe.reset()


class Canary:
    """Unpickling this runs ``touch <path>``: the file must never appear."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.path}",))


@dataclass
class Hostile:
    name: str
    id: str
    worker: str
    payload: bytes
    reason: str  # expected in the failure message


def hostile_payloads(ring: Keyring, canary: Path) -> list[Hostile]:
    evil = pickle.dumps(((Canary(canary),), {}), protocol=pickle.HIGHEST_PROTOCOL)
    at = time.time()
    w = Echo.worker_name
    genuine = seal(ring, "truncated", w, at, ("hello",), {})
    # An envelope that looks signed with the real key id (ids are not secret): the
    # attacker cannot compute the HMAC, so the signature is bad.
    attacker = Keyring([b"attacker-key-0123456789abcdef"])
    forged = seal(attacker, "forged", w, at, ("hello",), {})
    forged = forged[:3] + ring.signing_id + forged[7:]
    meta = json.dumps({"id": "canary", "worker": w, "enqueued_at": at}).encode()
    canary_env = (
        b"TQ\x02" + ring.signing_id + os.urandom(32) + len(meta).to_bytes(2, "big") + meta + evil
    )
    unknown_key = b"TQ\x02" + key_id(b"some-other-key-0123456789") + canary_env[7:]
    big = seal(ring, "oversized", w, at, ("x" * (2 * LIMIT),), {})
    copied = seal(ring, "original", w, at, ("hello",), {})  # genuine, but another job's
    return [
        Hostile("unknown worker", "unknown", "attacker.Evil", b"TQ\x01" + evil, "no live node"),
        Hostile("truncated", "truncated", w, genuine[:-10], "signature is bad"),
        Hostile("wrong signature", "forged", w, forged, "signature is bad"),
        Hostile("unsigned v1", "unsigned", w, b"TQ\x01" + evil, "unsigned"),
        Hostile("oversized", "oversized", w, big, "more than max_payload_size"),
        Hostile("canary signed-look", "canary", w, canary_env, "signature is bad"),
        Hostile("unknown key id", "unknown-key", w, unknown_key, "not one of this process"),
        Hostile("copied from a job", "copy", w, copied, "signed for job original"),
        Hostile("not an envelope", "garbage", w, b"\x80\x04garbage", "bad magic"),
    ]


def write_sqlite(path: str, jobs: list[Hostile], at: float) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO toniq_jobs (id, worker, state, payload, enqueued_at) "
            "VALUES (?, ?, 'available', ?, ?)",
            [(j.id, j.worker, j.payload, at) for j in jobs],
        )
    conn.close()


def write_redis(url: str, queue: str, jobs: list[Hostile], at: float) -> None:
    """What lua/enqueue.lua does, by hand."""
    client = redis_server().client()
    p = f"toniq:{{{queue}}}:"
    try:
        for job in jobs:
            seq = client.incr(p + "seq")
            client.sadd(p + "workers", job.worker)
            record = {
                "worker": job.worker,
                "attempt": 0,
                "node_deaths": 0,
                "seq": seq,
                "enqueued_at": repr(at),
                "state": "available",
            }
            client.hset(p + "jobs", job.id, json.dumps(record))
            client.hset(p + "payloads", job.id, job.payload)
            client.zadd(p + f"available:{job.worker}", {job.id: seq})
    finally:
        client.close()


@pytest.fixture(params=["sqlite", "redis"])
def hostile_app(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[toniq.Toniq]:
    kind = str(request.param)
    if kind == "sqlite":
        monkeypatch.delenv("TONIQ_SECRET")  # SQLite's own key, as out of the box
    app = toniq.configure(
        url=backend_url(kind, tmp_path),
        max_payload_size=LIMIT,
        unknown_worker_timeout=0.3,
        **FAST,
    )
    yield app
    app.close()
    toniq.app._default = None


def test_hostile_payloads_fail_with_their_reason_and_are_never_unpickled(
    hostile_app: toniq.Toniq, tmp_path: Path
) -> None:
    app = hostile_app
    canary = tmp_path / "CANARY"
    ring = app.keyring
    jobs = hostile_payloads(ring, canary)
    # Each payload is written with the enqueue time the forger chooses; this one is only
    # the stored job's time (the signed-looking ones claim it too).
    at = time.time()
    if app.url.startswith("sqlite"):
        write_sqlite(app.url[len("sqlite:///") :], jobs, at)
    else:
        queue = app.backend.queue  # type: ignore[attr-defined]
        write_redis(app.url, queue, jobs, at)
    with toniq.Node(app, workers=[Echo]) as node:
        deadline = time.monotonic() + 20
        while True:
            records = {j.id: app.get_job(j.id) for j in jobs}
            if all(r is not None and r.state is JobState.FAILED for r in records.values()):
                break
            assert time.monotonic() < deadline, {k: r and r.state for k, r in records.items()}
            time.sleep(0.05)
        toniq.enqueue(Echo, "after the attack")
        node.drain()
        assert node.running == 0
    assert probe.calls == [("Echo", ("after the attack",), {})]
    assert not canary.exists(), "a hostile pickle was unpickled"
    kind = app.url.split(":", 1)[0]
    for job in jobs:
        record = records[job.id]
        assert record is not None
        error = record.errors[-1]
        assert error.type == CANNOT_RUN, (job.name, error)
        assert job.reason in error.message, (job.name, error.message)
        assert record.payload == job.payload, job.name  # raw bytes kept for inspection
        assert record.attempt <= 1, job.name  # never retried
        with pytest.raises(toniq.PayloadError):
            record.arguments()  # the management API verifies too
        line = f"HOSTILE {kind:<6} {job.name:<19} -> failed: {error.message}"
        print(line)
        SUMMARIES.append(line)  # shown with the chaos ledger at the end of the run
    assert not canary.exists()
    SUMMARIES.append(
        f"HOSTILE {kind:<6} canary file never created; the node ran a normal job after"
    )


def test_failed_show_verifies_and_shows_raw_bytes(hostile_app: toniq.Toniq, tmp_path: Path) -> None:
    app = hostile_app
    canary = tmp_path / "CANARY"
    canary_job = next(j for j in hostile_payloads(app.keyring, canary) if j.name == "unsigned v1")
    if app.url.startswith("sqlite"):
        write_sqlite(app.url[len("sqlite:///") :], [canary_job], time.time())
    else:
        write_redis(app.url, app.backend.queue, [canary_job], time.time())  # type: ignore[attr-defined]
    good = app.enqueue(Echo, "visible", n=2)
    runner = CliRunner()
    shown = runner.invoke(main, ["failed", "--url", app.url, "show", canary_job.id])
    assert shown.exit_code == 0, shown.output
    assert "refused, not unpickled" in shown.output and "unsigned" in shown.output
    assert f"{len(canary_job.payload)} bytes: b'TQ\\x01" in shown.output
    as_json = runner.invoke(main, ["failed", "--url", app.url, "show", "--json", canary_job.id])
    data = json.loads(as_json.output)
    assert data["arguments"] is None and "unsigned" in data["payload_refused"]
    ok = runner.invoke(main, ["failed", "--url", app.url, "show", good.id])
    assert "arguments  'visible', n=2" in ok.output, ok.output
    assert not canary.exists()
