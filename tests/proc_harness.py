"""The harness of the multi-process tests (``tests/test_processes.py``,
``tests/test_process_failures.py``, ``tests/test_redis_faults.py``): node processes started
with ``python -m toniq worker``, helper processes that run a function of
``tests/fixtures/procjobs.py``, the ledger they write, and waiting on conditions against
deadlines.

The store is a SQLite file in the test's directory unless :class:`Procs` is given a URL
(``redis://...`` for the Redis fault tests). Children get it as ``TONIQ_URL``; the worker
module passes it to ``toniq.configure`` with short timers, and ``toniq worker`` runs the app
the module configured.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

import toniq

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
MODULE = "tests/fixtures/procjobs.py"  # relative to ROOT, the children's working directory

# The timers the fixture module configures (it reads them from the environment).
HEARTBEAT = 0.2
TAKEOVER_TIMEOUT = 1.5
TAKEOVER_INTERVAL = 0.2

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One ledger line: ``<event> <key> <label> <pid> <time>``."""

    event: str
    key: str
    label: str
    pid: int
    at: float


class Procs:
    """The child processes of one test, its store and its ledger."""

    def __init__(self, tmp_path: Path, url: str | None = None) -> None:
        self.tmp = tmp_path
        self.ledger_dir = tmp_path / "ledger"
        self.ledger_dir.mkdir()
        self.log_dir = tmp_path / "logs"
        self.log_dir.mkdir()
        self.url = url or f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
        # Made here, before any child, so the schema exists; also the test's view of the store.
        self.store = toniq.Toniq(self.url)
        self.store.counts()
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        #: Variables every child gets (before a call's own), e.g. the chaos suite's ledger.
        self.child_env: dict[str, str] = {}

    # -- processes -----------------------------------------------------------------------

    def env(self, label: str, **extra: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TONIQ_", "PROCJOBS_"))}
        env.update(
            PYTHONUNBUFFERED="1",
            TONIQ_URL=self.url,
            PROCJOBS_LEDGER=str(self.ledger_dir),
            PROCJOBS_LABEL=label,
            PROCJOBS_HEARTBEAT=str(HEARTBEAT),
            PROCJOBS_TAKEOVER_TIMEOUT=str(TAKEOVER_TIMEOUT),
            PROCJOBS_TAKEOVER_INTERVAL=str(TAKEOVER_INTERVAL),
            PROCJOBS_POLL="0.01",
        )
        env.update(self.child_env)
        if "TONIQ_SECRET" in os.environ:  # the session's signing key (tests/conftest.py)
            env["TONIQ_SECRET"] = os.environ["TONIQ_SECRET"]
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def spawn(self, label: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        assert label not in self.children, label
        with (
            open(self.log_dir / f"{label}.out", "wb") as out,
            open(self.log_dir / f"{label}.err", "wb") as err,
        ):
            proc = subprocess.Popen(
                [sys.executable, *argv], cwd=ROOT, env=env, stdout=out, stderr=err
            )
        self.children[label] = proc
        return proc

    def node(self, label: str, *options: str, **env: Any) -> subprocess.Popen[bytes]:
        """Start ``python -m toniq worker tests/fixtures/procjobs.py [options]``."""
        argv = ["-m", "toniq", "worker", MODULE, "--log-level", "INFO", *options]
        return self.spawn(label, argv, self.env(label, **env))

    def run_fixture(
        self, label: str, function: str, *args: Any, **env: Any
    ) -> subprocess.Popen[bytes]:
        """Start a process that calls ``procjobs.<function>([args...])``."""
        code = (
            f"import sys; sys.path.insert(0, {str(FIXTURES)!r}); import procjobs; "
            f"procjobs.{function}(sys.argv[1:])"
        )
        return self.spawn(label, ["-c", code, *map(str, args)], self.env(label, **env))

    def start_enqueue(self, label: str, worker: str, count: int) -> subprocess.Popen[bytes]:
        """Start a process that enqueues ``count`` jobs with keys ``<label>-<i>``."""
        return self.run_fixture(label, "enqueue_main", worker, label, count)

    def finish_enqueue(self, label: str, timeout: float = 60.0) -> list[str]:
        """Wait for an enqueuing process; the ids of the jobs it enqueued."""
        proc = self.children[label]
        assert proc.wait(timeout) == 0, f"enqueuer {label} failed:\n{self.output(label)}"
        return list(json.loads((self.log_dir / f"{label}.out").read_text()))

    def enqueue(self, label: str, worker: str, count: int) -> list[str]:
        self.start_enqueue(label, worker, count)
        return self.finish_enqueue(label)

    def stop(self, label: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` and wait for the exit; returns the exit code."""
        proc = self.children[label]
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{label} still running {timeout}s after signal {sig}")

    def kill(self, label: str, sig: int = signal.SIGKILL, timeout: float = 15.0) -> int:
        """Send ``sig`` (SIGKILL by default) and wait for the exit; returns the exit code."""
        return self.stop(label, sig, timeout)

    def output(self, label: str) -> str:
        parts = []
        for stream in ("out", "err"):
            path = self.log_dir / f"{label}.{stream}"
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {label} std{stream} ---\n{text[-20000:]}")
        return "\n".join(parts)

    def check_alive(self, *labels: str) -> None:
        for label in labels:
            code = self.children[label].poll()
            if code is not None:
                pytest.fail(f"{label} exited early with {code}:\n{self.output(label)}")

    def close(self) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.children.values():
            proc.wait(10)
        self.store.close()

    # -- observation ---------------------------------------------------------------------

    def ledger(self) -> list[Entry]:
        entries = []
        for path in sorted(self.ledger_dir.iterdir()):
            text = path.read_text()
            lines = text.split("\n")[:-1]  # the last piece is "" or a line still being written
            for line in lines:
                event, key, label, pid, at = line.split(" ")
                entries.append(Entry(event, key, label, int(pid), float(at)))
        return entries

    def events(self, event: str, label: str | None = None) -> list[Entry]:
        return [
            e for e in self.ledger() if e.event == event and (label is None or e.label == label)
        ]

    def wait_until(
        self,
        condition: Callable[[], T | None],
        what: str,
        timeout: float = 20.0,
        alive: tuple[str, ...] = (),
    ) -> T:
        """Poll ``condition`` until it is truthy (returned) or fail after ``timeout``.

        Fails at once if one of the ``alive`` processes exited.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            self.check_alive(*alive)
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.02)

    def wait_nodes(self, n: int, alive: tuple[str, ...]) -> list[toniq.NodeInfo]:
        def registered() -> list[toniq.NodeInfo] | None:
            nodes = self.store.nodes()
            return nodes if len(nodes) == n else None

        return self.wait_until(registered, f"{n} registered node(s)", alive=alive)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    procs = Procs(tmp_path)
    try:
        yield procs
    finally:
        procs.close()
        # pytest shows this captured output only when the test failed.
        for label in procs.children:
            print(procs.output(label))


def keys(entries: list[Entry]) -> collections.Counter[str]:
    return collections.Counter(e.key for e in entries)
