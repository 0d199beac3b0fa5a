"""Shared fixtures: apps on every backend with short timers, and a clean default app."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import toniq
import toniq.app
from tests.redis_server import RedisCluster, RedisServer

#: Short timers so takeover and polling tests run in well under a second.
FAST: dict[str, Any] = {
    "heartbeat_interval": 0.1,
    "takeover_timeout": 0.6,
    "takeover_interval": 0.1,
    "poll_interval": 0.01,
    "grace_period": 2.0,
}

#: The signing key of the test session. Redis refuses to run without one (docs/security.md),
#: so every app of the session, and every node process it starts (they inherit the
#: environment), signs with this key. Tests of the key-less paths (SQLite's own key, the
#: refusals on Redis, the opt-out) remove it with ``monkeypatch.delenv("TONIQ_SECRET")``.
TEST_SECRET = "toniq-test-secret-0123456789abcdef"
os.environ["TONIQ_SECRET"] = TEST_SECRET
os.environ.pop("TONIQ_INSECURE_UNSIGNED", None)

BACKENDS = ["memory", "sqlite", "redis"]
#: The backend contract also runs on a three-master Redis Cluster ("redis-cluster"). The
#: node-level suites pass there too when "redis-cluster" is added to BACKENDS, but run only
#: on the single Redis by default: on the cluster they cost some 15 s and test nothing new.
CONTRACT_BACKENDS = [*BACKENDS, "redis-cluster"]

#: The private redis-server of this test session, started on first use (never the shared
#: Redis on 6379). Each test gets its own queue (key prefix) on it, named after its
#: tmp_path, and the server is flushed after every test that used it.
_redis: RedisServer | None = None
_redis_used = False


def redis_server() -> RedisServer:
    global _redis, _redis_used
    if _redis is None:
        _redis = RedisServer().start()
    _redis_used = True
    return _redis


#: The private Redis Cluster of this test session (three masters, no replicas), started on
#: first use; like the single server, a queue per test, and every master flushed after it.
_cluster: RedisCluster | None = None
_cluster_used = False


def redis_cluster() -> RedisCluster:
    global _cluster, _cluster_used
    if _cluster is None:
        _cluster = RedisCluster().start()
    _cluster_used = True
    return _cluster


def backend_url(kind: str, tmp_path: Path) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'toniq.sqlite3'}"
    if kind == "redis":
        queue = hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]
        return redis_server().url(queue=queue)
    if kind == "redis-cluster":
        queue = hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]
        return redis_cluster().url(queue=queue)
    raise ValueError(kind)


@pytest.fixture(scope="session", autouse=True)
def _private_redis() -> Iterator[None]:
    yield
    if _redis is not None:
        _redis.cleanup()
    if _cluster is not None:
        _cluster.cleanup()


@pytest.fixture(autouse=True)
def _flush_redis() -> Iterator[None]:
    """Leave the private Redis empty after each test that used it (runs after the
    test's own fixtures closed their apps)."""
    global _redis_used, _cluster_used
    _redis_used = _cluster_used = False
    yield
    if _cluster_used and _cluster is not None:
        _cluster.flushall()
    if _redis_used and _redis is not None and _redis.running:
        client = _redis.client()
        try:
            client.flushall()
        finally:
            client.close()


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def app(backend_kind: str, tmp_path: Path) -> Iterator[toniq.Toniq]:
    """The default app on each backend, with short timers; closed afterwards."""
    app = toniq.configure(url=backend_url(backend_kind, tmp_path), **FAST)
    yield app
    app.close()
    toniq.app._default = None


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[toniq.Toniq]:
    app = toniq.configure(url=backend_url("sqlite", tmp_path), **FAST)
    yield app
    app.close()
    toniq.app._default = None
