"""Failed jobs: list, inspect, retry and delete, singly and in bulk, from Python and the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import toniq
import toniq.app
from tests.conftest import FAST, backend_url
from tests.workers import Echo, Fails, probe
from toniq.cli import main


@pytest.fixture(autouse=True)
def _reset() -> None:
    probe.reset()


def make_failed(app: toniq.Toniq, n: int, worker: type[toniq.Worker] = Fails) -> list[str]:
    handles = []
    for i in range(n):
        handles.append(worker.enqueue(f"boom {i}"))
        time.sleep(0.002)  # distinct failure times, so "newest first" is well defined
    with toniq.Node(app) as node:
        for _ in handles:
            node.drain()  # one at a time keeps the failure order = enqueue order
    return [h.id for h in handles]


class FailsToo(toniq.Worker, name="tests.FailsToo", retries=0):
    def perform(self, message: str) -> None:
        raise KeyError(message)


def test_list_newest_first_filter_and_page(app: toniq.Toniq) -> None:
    ids = make_failed(app, 3) + make_failed(app, 2, FailsToo)
    failed = toniq.failed_jobs()
    assert [r.id for r in failed] == ids[::-1]
    assert [r.id for r in toniq.failed_jobs(Fails)] == ids[2::-1]
    assert [r.id for r in toniq.failed_jobs("tests.FailsToo", limit=1)] == [ids[4]]
    assert [r.id for r in toniq.failed_jobs(limit=2, offset=1)] == [ids[3], ids[2]]
    record = failed[0]
    assert record.state is toniq.JobState.FAILED and record.last_error is not None
    assert record.last_error.type == "KeyError" and record.arguments() == (("boom 1",), {})


def test_retry_one_runs_it_again_with_a_fresh_attempt_count(app: toniq.Toniq) -> None:
    (job_id,) = make_failed(app, 1)
    assert toniq.retry(job_id) is True
    assert toniq.retry(job_id) is False  # no longer failed
    record = toniq.get_job(job_id)
    assert record is not None and record.state is toniq.JobState.AVAILABLE
    assert record.attempt == 0 and len(record.errors) == 1  # the history stays
    with toniq.Node(app) as node:
        node.drain()
    again = toniq.get_job(job_id)
    assert again is not None and again.state is toniq.JobState.FAILED
    assert [e.attempt for e in again.errors] == [1, 1]  # ran again as attempt 1
    assert len(probe.calls) == 2


def test_a_retried_job_that_now_succeeds_leaves_failed(app: toniq.Toniq) -> None:
    class SometimesFails(toniq.Worker, name="tests.SometimesFails", retries=0):
        broken = True

        def perform(self) -> None:
            if SometimesFails.broken:
                raise RuntimeError("not yet")

    handle = SometimesFails.enqueue()
    with toniq.Node(app) as node:
        node.drain()
        assert [r.id for r in toniq.failed_jobs()] == [handle.id]
        SometimesFails.broken = False
        toniq.retry(handle)
        node.drain()
    assert toniq.failed_jobs() == [] and handle.info() is None
    assert app.counts()["tests.SometimesFails"] == {"done": 1}


def test_bulk_retry_and_delete_with_a_worker_filter(app: toniq.Toniq) -> None:
    make_failed(app, 3)
    too = make_failed(app, 2, FailsToo)
    assert toniq.delete(too[0]) is True and toniq.get_job(too[0]) is None
    assert toniq.retry_all(FailsToo) == 1
    assert toniq.delete_all(worker="tests.Fails") == 3
    assert toniq.failed_jobs() == []
    assert app.counts() == {"tests.FailsToo": {"available": 1}}


def test_retention_prunes_the_oldest_failed_jobs(app: toniq.Toniq) -> None:
    ids = make_failed(app, 5)
    with toniq.Node(app, failed_max_count=2) as node:  # pruning runs as a node starts
        node.drain()
        deadline = time.monotonic() + 5
        while len(toniq.failed_jobs()) > 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert [r.id for r in toniq.failed_jobs()] == ids[:2:-1]


def test_a_job_that_raised_is_not_retried_when_retries_are_zero(app: toniq.Toniq) -> None:
    make_failed(app, 1)
    assert len(probe.calls) == 1


# -- the CLI -------------------------------------------------------------------------------


def cli(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(params=["sqlite", "redis"])
def stored_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[toniq.Toniq]:
    """An app whose store another process (or a fresh Toniq, as the CLI makes) can see."""
    app = toniq.configure(url=backend_url(request.param, tmp_path), **FAST)
    yield app
    app.close()
    toniq.app._default = None


def test_cli_list_show_retry_delete(stored_app: toniq.Toniq) -> None:
    store = stored_app
    ids = make_failed(store, 3) + make_failed(store, 1, FailsToo)
    url = store.url

    code, out = cli("failed", "--url", url)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["FAILED", "AT", "ID", "ATTEMPTS", "WORKER", "LAST", "ERROR"]
    assert [line.split()[2] for line in lines[1:]] == ids[::-1]
    assert "RuntimeError: boom 2" in lines[2] and "tests.Fails" in lines[2]

    code, out = cli("failed", "--url", url, "--worker", "tests.FailsToo", "--json")
    (item,) = json.loads(out)
    assert item["id"] == ids[3] and item["errors"][0]["type"] == "KeyError"

    code, out = cli("failed", "--url", url, "--limit", "1")
    assert "(1 of 4 shown; --offset 1 for more)" in out

    code, out = cli("failed", "--url", url, "show", ids[0])
    assert code == 0 and "arguments  'boom 0'" in out
    assert "error 1 of 1: attempt 1" in out and "raise RuntimeError(message)" in out
    code, out = cli("failed", "--url", url, "show", ids[0], "--json")
    assert json.loads(out)["arguments"] == "'boom 0'"

    code, out = cli("failed", "--url", url, "retry", ids[0])
    assert code == 0 and "retried 1 job(s)" in out
    assert store.get_job(ids[0]).state is toniq.JobState.AVAILABLE  # type: ignore[union-attr]

    code, out = cli("failed", "--url", url, "delete", ids[1])
    assert code == 0 and store.get_job(ids[1]) is None

    # Bulk actions ask first; "n" changes nothing.
    code, out = cli("failed", "--url", url, "delete", "--all", input="n\n")
    assert code == 1 and "Delete 2 failed jobs?" in out
    assert len(store.failed_jobs()) == 2
    code, out = cli("failed", "--url", url, "retry", "--all", "--worker", "tests.FailsToo", "--yes")
    assert code == 0 and "retried 1 job(s)" in out
    code, out = cli("failed", "--url", url, "delete", "--all", input="y\n")
    assert code == 0 and "deleted 1 job(s)" in out
    code, out = cli("failed", "--url", url)
    assert out.strip() == "no failed jobs"


def test_cli_errors(stored_app: toniq.Toniq) -> None:
    store = stored_app
    url = store.url
    result = CliRunner().invoke(main, ["failed", "--url", url, "show", "nope"])
    assert result.exit_code == 1 and "no job nope" in result.output
    result = CliRunner().invoke(main, ["failed", "--url", url, "retry"])
    assert result.exit_code == 2 and "or --all" in result.output
    result = CliRunner().invoke(main, ["failed", "--url", url, "retry", "x", "--all"])
    assert result.exit_code == 2 and "not both" in result.output
    Echo.enqueue(1)
    (record,) = store.jobs("available")
    result = CliRunner().invoke(main, ["failed", "--url", url, "delete", record.id])
    assert result.exit_code == 1 and "not failed, or not found" in result.output
