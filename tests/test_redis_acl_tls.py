"""Redis with TLS (a CA, client certificates required) and the least-privilege ACL user of
docs/security.md, end to end: enqueue, a node, a failing job, retries, all through it."""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import toniq
from tests.conftest import FAST
from tests.redis_server import RedisServer
from tests.workers import Echo, Fails, Flaky, probe

DOCS = Path(__file__).parent.parent / "docs" / "security.md"
PASSWORD = "acl-test-password-123"
ADMIN = "admin-test-password-123"


def documented_rule() -> list[str]:
    """The ACL SETUSER line of docs/security.md, exactly as documented."""
    lines = [line for line in DOCS.read_text().splitlines() if line.startswith("ACL SETUSER")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0].replace("CHANGE-ME", PASSWORD))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "redis").mkdir()
    with RedisServer(client_certs=True, directory=tmp_path / "redis") as server:
        admin = server.client()
        try:
            admin.execute_command(*documented_rule())
            admin.execute_command("ACL", "SETUSER", "admin", "on", f">{ADMIN}", "~*", "&*", "+@all")
            admin.execute_command("ACL", "SETUSER", "default", "off")
        finally:
            admin.close()
        yield server


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    probe.reset()
    Flaky.attempts.clear()
    yield
    toniq.app._default = None


def toniq_url(server: RedisServer) -> str:
    base = server.url(queue="acl")  # rediss://127.0.0.1:port/0?ssl_ca_certs=...&ssl_certfile=...
    assert base.startswith("rediss://") and "ssl_certfile=" in base
    return base.replace("rediss://", f"rediss://toniq:{quote(PASSWORD)}@", 1)


def test_the_default_user_and_clients_without_a_certificate_are_refused(
    server: RedisServer,
) -> None:
    default = server.client(retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(redis.AuthenticationError):
            default.ping()
    finally:
        default.close()
    no_cert = redis.Redis(
        host="127.0.0.1",
        port=server.port,
        ssl=True,
        ssl_ca_certs=str(server.ca),
        username="toniq",
        password=PASSWORD,
        socket_timeout=0.5,  # the server drops it after the handshake; do not wait long
        retry=Retry(NoBackoff(), 0),
    )
    try:
        with pytest.raises(redis.ConnectionError):
            no_cert.ping()
    finally:
        no_cert.close()
    user = server.client(username="toniq", password=PASSWORD)
    try:
        assert user.hset("toniq:{acl}:probe", "k", "v") == 1  # its own keys: allowed
        for command in (("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "requirepass")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                user.execute_command(*command)
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.hset("other:key", "k", "v")  # keys outside toniq:*
    finally:
        user.close()


def test_enqueue_node_failure_and_retry_through_tls_and_the_acl_user(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    app = toniq.configure(toniq_url(server), **FAST)
    try:
        assert "toniq:***@" in app.backend.url  # the password is never shown
        app.enqueue(Echo, "over TLS")
        failing = app.enqueue(Fails, "declined")
        app.enqueue(Flaky, "flaky", 1)  # fails once, retried after a backoff, then done
        with toniq.Node(app) as node:
            node.drain()
            deadline = time.monotonic() + 10
            while len(Flaky.attempts.get("flaky", [])) < 2:
                assert time.monotonic() < deadline, "the flaky job was not retried"
                node.drain()
            record = app.get_job(failing.id)
            assert record is not None and record.state is toniq.JobState.FAILED
            assert record.errors[-1].message == "declined"
            assert record.arguments() == (("declined",), {})
            assert app.retry(failing)
            node.drain()
        record = app.get_job(failing.id)
        assert record is not None and record.state is toniq.JobState.FAILED
        assert len(record.errors) == 2  # ran again after the retry, and failed again
        calls = [name for name, _, _ in probe.calls]
        assert calls.count("Echo") == 1 and calls.count("Fails") == 2
        assert Flaky.attempts["flaky"] and len(Flaky.attempts["flaky"]) == 2
        counts = app.counts()
        assert counts[Echo.worker_name]["done"] == 1 and counts[Flaky.worker_name]["done"] == 1
        # Without CONFIG GET the node says it could not check the server's settings.
        logged = [r.getMessage() for r in caplog.records]
        assert any("could not read the Redis configuration" in m for m in logged), logged
    finally:
        app.close()


#: The commands of the documented rule that only hand-over uses (see docs/redis.md).
HAND_OVER = {"+rpush", "+lrange", "+blpop", "+pexpire"}


def test_a_user_whose_acl_predates_hand_over_still_gets_its_jobs_run(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A rule written before hand-over (without its commands): nodes say so and wait for
    wake-ups instead; enqueue, claim and an idle node's wake-up all still work."""
    admin = server.client(username="admin", password=ADMIN)
    try:
        old_rule = [word for word in documented_rule() if word not in HAND_OVER]
        assert len(old_rule) == len(documented_rule()) - len(HAND_OVER)
        admin.execute_command(*old_rule)  # "-@all" first: exactly the old commands
    finally:
        admin.close()
    app = toniq.configure(toniq_url(server), **FAST)
    try:
        with caplog.at_level("WARNING", logger="toniq"), toniq.Node(app) as node:
            node.drain()  # idle
            app.enqueue(Echo, "old rule")
            node.drain()
        assert ("Echo", ("old rule",), {}) in probe.calls
        assert "this Redis user may not BLPOP" in caplog.text
    finally:
        app.close()
