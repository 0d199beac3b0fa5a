"""The dashboard over real HTTP: uvicorn serves it in a thread on a free port, on every
backend; pages, the anti-forgery token, authentication, mounting, and ``toniq web``.

The browser tests (a real headless Chromium) are in ``test_web_browser.py``.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import toniq
from tests.redis_server import free_port
from tests.workers import Echo, Fails, probe
from toniq.cli import main
from toniq.job import JobRecord, JobState, NewJob
from toniq.serialization import seal
from toniq.web import create_app
from toniq.web.present import RateSampler, arguments
from toniq.web.security import CSRF_COOKIE

ROOT = Path(__file__).resolve().parent.parent


# -- helpers shared with test_web_browser.py -----------------------------------------------


@contextmanager
def serve(asgi: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread; yields its base URL (no trailing /)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # bound here, so no other process can take the port
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), "uvicorn to start")
    assert thread.is_alive(), "uvicorn stopped at once"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def wait_for(condition: Callable[[], object], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def make_failed(app: toniq.Toniq, *messages: str) -> list[str]:
    """Jobs of tests.Fails (no retries) that failed, one per message, newest last."""
    handles = [Fails.enqueue(message) for message in messages]
    with toniq.Node(app) as node:
        node.drain()
    return [h.id for h in handles]


def form_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no anti-forgery field"
    return match.group(1)


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _reset() -> None:
    probe.reset()


@pytest.fixture
def site(app: toniq.Toniq) -> Iterator[str]:
    with serve(create_app(app, poll_interval=0.2)) as url:
        yield url


@pytest.fixture
def client(site: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site, timeout=10) as client:
        yield client


# -- pages -----------------------------------------------------------------------------------


def test_every_page_shows_the_store(app: toniq.Toniq, client: httpx.Client) -> None:
    (failed_id,) = make_failed(app, "disk <b>full</b>")
    queued = Echo.enqueue(1, b=[2, 3])
    delayed = Echo.with_options(delay=600).enqueue("later")
    held = Echo.with_options(hold=True).enqueue("held")

    overview = client.get("/")
    assert overview.status_code == 200
    assert "tests.Fails" in overview.text and "tests.Echo" in overview.text
    assert 'data-total="failed">1<' in overview.text

    page = client.get("/failed").text
    assert failed_id in page and "RuntimeError" in page
    assert "Traceback (most recent call last)" in page  # every attempt's traceback
    assert "disk &lt;b&gt;full&lt;/b&gt;" in page and "<b>full</b>" not in page

    page = client.get("/queued").text
    assert queued.id in page and "1, b=[2, 3]" in page
    page = client.get("/scheduled").text
    assert delayed.id in page and held.id in page
    assert "held until released" in page and re.search(r"in (9|10) min", page)

    page = client.get(f"/jobs/{failed_id}").text
    assert "&#39;disk &lt;b&gt;full&lt;/b&gt;&#39;" in page  # the argument, escaped
    assert "RuntimeError" in page and "Retry" in page
    missing = client.get("/jobs/no-such-job")
    assert missing.status_code == 404 and "does not hold this job" in missing.text

    css = client.get("/static/toniq.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert client.get("/static/toniq.js").status_code == 200


def test_running_page_names_the_node_and_the_start(app: toniq.Toniq, client: httpx.Client) -> None:
    gate = threading.Event()

    class Waits(toniq.Worker, name="tests.web.Waits"):
        def perform(self) -> None:
            gate.wait(10)

    handle = Waits.enqueue()
    with toniq.Node(app, workers=[Waits]) as node:
        record = wait_for(
            lambda: (r := app.get_job(handle.id)) and r.state is JobState.RUNNING and r,
            "the job to run",
        )
        page = client.get("/running").text
        assert handle.id[:12] in page and record.node is not None
        info = next(n for n in app.nodes() if n.id == node.id)
        assert info.host in page and f"pid {info.pid}" in page
        assert client.get("/").text.count(node.id) == 1  # the nodes table
        gate.set()


def test_stats_count_jobs_as_they_run_and_chart_the_rate(app: toniq.Toniq) -> None:
    with serve(create_app(app, poll_interval=0.001)) as url, httpx.Client(base_url=url) as client:
        _stats_count_jobs(app, client)


def _stats_count_jobs(app: toniq.Toniq, client: httpx.Client) -> None:
    first = client.get("/api/stats").json()
    assert first["totals"]["available"] == 0 and first["nodes"] == 0
    for i in range(20):
        Echo.enqueue(i)
    assert client.get("/api/stats").json()["totals"]["available"] == 20
    with toniq.Node(app) as node:
        node.drain()
        stats = client.get("/api/stats").json()
        assert stats["nodes"] == 1
    assert stats["totals"]["available"] == 0 and stats["totals"]["done"] == 20
    assert stats["counts"]["tests.Echo"]["done"] == 20
    assert stats["rate"] and stats["rate"][-1][1] > 0  # jobs per second since the last poll


def test_rate_sampler_keeps_its_window_and_never_goes_negative() -> None:
    sampler = RateSampler(window=10, min_gap=0.5)
    sampler.add(100.0, 0)
    sampler.add(101.0, 10)
    sampler.add(101.25, 12)  # too close to 101.0: provisional...
    sampler.add(103.0, 30)  # ...and replaced by the next one
    sampler.add(104.0, 0)  # the store was emptied
    assert sampler.series() == [(101.0, 10.0), (103.0, 10.0), (104.0, 0.0)]
    sampler.add(113.5, 8)
    assert [t for t, _ in sampler.series()] == [113.5]  # 104.0 is the oldest sample kept


# -- arguments that cannot be shown ----------------------------------------------------------


def test_arguments_that_cannot_be_decoded_never_break_a_page(
    app: toniq.Toniq, client: httpx.Client
) -> None:
    # A class of a module the dashboard's process cannot import (it is gone once the job is
    # signed), and bytes that are no payload at all.
    import sys
    import types

    module = types.ModuleType("toniq_vanished")
    vanishing = type("Vanishing", (), {"__module__": "toniq_vanished"})
    module.Vanishing = vanishing  # type: ignore[attr-defined]
    sys.modules["toniq_vanished"] = module
    now = time.time()
    try:
        unimportable = seal(app.keyring, "unimportable", "tests.Nobody", now, (vanishing(),), {})
    finally:
        del sys.modules["toniq_vanished"]
    garbage = b"\x00\x01 not a toniq payload <script>"
    app.backend.enqueue(
        [
            NewJob("unimportable", "tests.Nobody", unimportable, now),
            NewJob("garbage", "tests.Nobody", garbage, now),
        ]
    )
    page = client.get("/queued")
    assert page.status_code == 200
    assert (
        "cannot decode here (PayloadError: payload cannot be unpickled: ModuleNotFound" in page.text
    )
    assert "bad magic" in page.text and "&lt;script&gt;" in page.text
    job = client.get("/jobs/garbage")
    assert job.status_code == 200 and "not a toniq payload" in job.text


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no")


def test_arguments_text_survives_a_failing_repr_and_is_cut() -> None:
    def record(*args: Any) -> JobRecord:
        payload = seal(toniq.get_app().keyring, "x", "w", 0.0, args, {})
        return JobRecord("x", "w", JobState.AVAILABLE, payload, 0, 0.0)

    text, decoded = arguments(record(BadRepr(), "ok"))
    assert decoded and text.startswith("<BadRepr instance at 0x") and text.endswith(", 'ok'")
    text, decoded = arguments(record("x" * 10_000), limit=100)
    assert decoded and len(text) == 100 and text.endswith("…")


# -- write actions and the anti-forgery token ------------------------------------------------


def test_a_post_without_the_token_is_refused(app: toniq.Toniq, client: httpx.Client) -> None:
    (job_id,) = make_failed(app, "boom")
    refused = client.post("/failed/retry", data={"ids": job_id})
    assert refused.status_code == 403 and "anti-forgery token is missing" in refused.text

    token = form_token(client.get("/failed").text)  # also sets the cookie
    assert client.cookies.get(CSRF_COOKIE) == token
    wrong = client.post("/failed/delete", data={"ids": job_id, "csrf_token": token[:-2] + "xx"})
    assert wrong.status_code == 403
    # A token without its cookie (as another site would send it) is refused too.
    with httpx.Client(base_url=str(client.base_url)) as stranger:
        assert (
            stranger.post("/failed/delete", data={"ids": job_id, "csrf_token": token}).status_code
            == 403
        )
    # So is a request that says it comes from another origin, token or not.
    cross = client.post(
        "/failed/delete",
        data={"ids": job_id, "csrf_token": token},
        headers={"origin": "https://evil.example"},
    )
    assert cross.status_code == 403 and "another site" in cross.text
    fetch = client.post(
        "/failed/delete",
        data={"ids": job_id, "csrf_token": token},
        headers={"sec-fetch-site": "cross-site"},
    )
    assert fetch.status_code == 403
    record = app.get_job(job_id)
    assert record is not None and record.state is JobState.FAILED  # nothing happened

    done = client.post(
        "/failed/retry",
        data={"ids": job_id, "csrf_token": token},
        headers={"origin": str(client.base_url).rstrip("/")},
    )
    assert done.status_code == 303 and done.headers["location"] == "/failed?retried=1"
    record = app.get_job(job_id)
    assert record is not None and record.state is JobState.AVAILABLE


def test_retry_and_delete_selected_and_all(app: toniq.Toniq, client: httpx.Client) -> None:
    ids = make_failed(app, "a", "b", "c", "d", "e")
    token = form_token(client.get("/failed").text)

    def post(path: str, **data: Any) -> httpx.Response:
        return client.post(path, data={"csrf_token": token, **data})

    assert post("/failed/retry", ids=ids[:2]).headers["location"] == "/failed?retried=2"
    assert post("/failed/delete", ids=[ids[2]]).headers["location"] == "/failed?deleted=1"
    assert {r.id for r in app.failed_jobs()} == set(ids[3:])
    assert post("/failed/retry").status_code == 400  # nothing selected

    confirm = client.get("/failed/confirm", params={"action": "delete"})
    assert "Delete 2 failed jobs?" in confirm.text and 'name="confirm" value="yes"' in confirm.text
    assert post("/failed/delete", scope="all").status_code == 400  # not confirmed
    assert app.failed_jobs() != []
    deleted = post("/failed/delete", scope="all", confirm="yes")
    assert deleted.headers["location"] == "/failed?deleted=2"
    assert app.failed_jobs() == []
    assert {r.id for r in app.jobs("available")} == set(ids[:2])


def test_retry_all_of_one_worker(app: toniq.Toniq, client: httpx.Client) -> None:
    class AlsoFails(toniq.Worker, name="tests.web.AlsoFails", retries=0):
        def perform(self) -> None:
            raise KeyError("nope")

    make_failed(app, "x")
    other = AlsoFails.enqueue()
    with toniq.Node(app) as node:
        node.drain()
    page = client.get("/failed", params={"worker": "tests.web.AlsoFails"}).text
    assert other.id in page and "tests.Fails</td>" not in page
    token = form_token(page)
    response = client.post(
        "/failed/retry",
        data={
            "csrf_token": token,
            "scope": "all",
            "confirm": "yes",
            "worker": "tests.web.AlsoFails",
        },
    )
    assert response.headers["location"] == "/failed?retried=1&worker=tests.web.AlsoFails"
    assert [r.worker for r in app.failed_jobs()] == ["tests.Fails"]


def test_release_runs_a_scheduled_job_now(app: toniq.Toniq, client: httpx.Client) -> None:
    held = Echo.with_options(hold=True).enqueue("held")
    page = client.get(f"/jobs/{held.id}").text
    assert "Run now" in page
    response = client.post(f"/jobs/{held.id}/release", data={"csrf_token": form_token(page)})
    assert response.status_code == 303
    record = app.get_job(held.id)
    assert record is not None and record.state is JobState.AVAILABLE


def test_every_response_forbids_inline_scripts_and_framing(client: httpx.Client) -> None:
    response = client.get("/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


# -- authentication --------------------------------------------------------------------------


def _basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_credentials_are_required_when_set(sqlite_app: toniq.Toniq) -> None:
    dashboard = create_app(sqlite_app, username="ops", password="pw", token="t0ken")
    with serve(dashboard) as url, httpx.Client(base_url=url) as client:
        denied = client.get("/")
        assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Basic")
        assert client.get("/static/toniq.css").status_code == 401
        assert client.get("/", headers=_basic("ops", "pw")).status_code == 200
        assert client.get("/", headers=_basic("ops", "wrong")).status_code == 401
        assert client.get("/", headers=_basic("anyone", "t0ken")).status_code == 200
        assert client.get("/", headers={"authorization": "Bearer t0ken"}).status_code == 200
        assert client.get("/", headers={"authorization": "Bearer nope"}).status_code == 401
        assert client.get("/", headers={"authorization": "Basic !!!"}).status_code == 401
    with pytest.raises(ValueError, match="both"):
        create_app(sqlite_app, username="ops")
    with pytest.raises(ValueError, match="empty"):
        create_app(sqlite_app, token="")


# -- mounted inside another app --------------------------------------------------------------


def test_mounted_under_a_prefix_beside_another_app(sqlite_app: toniq.Toniq) -> None:
    """How it goes inside FastAPI/Starlette, and in front of Django's ASGI app."""

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("the user's own site")

    (job_id,) = make_failed(sqlite_app, "boom")
    outer = Starlette(
        routes=[Mount("/admin/jobs", create_app(sqlite_app)), Route("/", home)],
    )
    with serve(outer) as url, httpx.Client(base_url=url) as client:
        assert client.get("/").text == "the user's own site"
        page = client.get("/admin/jobs/failed")
        assert page.status_code == 200
        assert 'href="/admin/jobs/static/toniq.css"' in page.text
        assert f'href="/admin/jobs/jobs/{job_id}"' in page.text
        assert 'formaction="/admin/jobs/failed/retry"' in page.text
        assert "path=/admin/jobs;" in page.headers["set-cookie"].lower()
        assert client.get("/admin/jobs/static/toniq.js").status_code == 200
        response = client.post(
            "/admin/jobs/failed/delete", data={"ids": job_id, "csrf_token": form_token(page.text)}
        )
        assert response.headers["location"] == "/admin/jobs/failed?deleted=1"
    assert sqlite_app.get_job(job_id) is None


# -- toniq web -------------------------------------------------------------------------------


def test_toniq_web_refuses_a_public_address_without_credentials(tmp_path: Path) -> None:
    runner = CliRunner()
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    env = {"TONIQ_WEB_USER": "", "TONIQ_WEB_PASSWORD": "", "TONIQ_WEB_TOKEN": ""}
    for host in ("0.0.0.0", "192.0.2.10", "::", "example.com"):
        result = runner.invoke(main, ["web", "--url", url, "--host", host], env=env)
        assert result.exit_code == 1, result.output
        assert f"refusing to serve the dashboard on {host} without credentials" in result.output
        assert "TONIQ_WEB_TOKEN" in result.output
    result = runner.invoke(main, ["web", "--url", url, "--user", "ops"], env=env)
    assert result.exit_code == 2 and "both --user and --password" in result.output


def test_toniq_web_serves_a_public_address_with_a_token(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TONIQ_URL": f"sqlite:///{tmp_path / 'jobs.sqlite3'}",
        "TONIQ_WEB_TOKEN": "s3cret-token",
    }
    env.pop("TONIQ_WEB_USER", None)
    env.pop("TONIQ_WEB_PASSWORD", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "toniq", "web", "--host", "0.0.0.0", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        def answers() -> httpx.Response | None:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                return httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
            except httpx.TransportError:
                return None

        first = wait_for(answers, "toniq web to answer", timeout=30)
        assert first.status_code == 401
        ok = httpx.get(
            f"http://127.0.0.1:{port}/", headers={"authorization": "Bearer s3cret-token"}
        )
        assert ok.status_code == 200 and "Overview" in ok.text
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=15)
    assert f"toniq dashboard on http://0.0.0.0:{port}/" in out.decode()
