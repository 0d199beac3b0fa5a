"""Workers shared by tests (module level, so nodes in this process register them)."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

import toniq


class Probe:
    """Records calls and the peak number of jobs running at once, per worker."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.running: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.running.clear()
            self.peak.clear()

    def enter(
        self, name: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> None:
        with self.lock:
            self.calls.append((name, args, kwargs or {}))
            self.running[name] = self.running.get(name, 0) + 1
            self.peak[name] = max(self.peak.get(name, 0), self.running[name])

    def leave(self, name: str) -> None:
        with self.lock:
            self.running[name] -= 1


probe = Probe()


@dataclass(frozen=True)
class Point:
    x: int
    y: int


class Echo(toniq.Worker, name="tests.Echo"):
    def perform(self, *args: Any, **kwargs: Any) -> None:
        probe.enter("Echo", args, kwargs)
        probe.leave("Echo")


class AsyncEcho(toniq.Worker, name="tests.AsyncEcho"):
    async def perform(self, *args: Any, **kwargs: Any) -> None:
        probe.enter("AsyncEcho", args, kwargs)
        probe.leave("AsyncEcho")


class Limited(toniq.Worker, max_concurrency=3, name="tests.Limited"):
    async def perform(self, seconds: float) -> None:
        probe.enter("Limited")
        try:
            await asyncio.sleep(seconds)
        finally:
            probe.leave("Limited")


class LimitedSync(toniq.Worker, max_concurrency=2, name="tests.LimitedSync"):
    def perform(self, seconds: float) -> None:
        probe.enter("LimitedSync")
        try:
            time.sleep(seconds)
        finally:
            probe.leave("LimitedSync")


class Sleeper(toniq.Worker, name="tests.Sleeper"):
    async def perform(self, seconds: float) -> None:
        probe.enter("Sleeper")
        try:
            await asyncio.sleep(seconds)
        finally:
            probe.leave("Sleeper")


class Fails(toniq.Worker, name="tests.Fails", retries=0):
    def perform(self, message: str) -> None:
        probe.enter("Fails")
        probe.leave("Fails")
        raise RuntimeError(message)


class Local(toniq.Worker, persist=False, name="tests.Local"):
    def perform(self, value: Any) -> None:
        probe.enter("Local", (value,))
        probe.leave("Local")


@toniq.worker(name="tests.add")
async def add(a: int, b: int) -> None:
    probe.enter("add", (a, b))
    probe.leave("add")


class Flaky(toniq.Worker, name="tests.Flaky", retries=3, backoff=lambda n: 0.1 * n):
    """Fails ``failures`` times (counted per key), then succeeds; records start times."""

    attempts: dict[str, list[float]] = {}

    def perform(self, key: str, failures: int) -> None:
        runs = Flaky.attempts.setdefault(key, [])
        runs.append(time.monotonic())
        probe.enter("Flaky", (key, len(runs)))
        probe.leave("Flaky")
        if len(runs) <= failures:
            raise ValueError(f"{key} failed run {len(runs)}")


class SlowAsync(toniq.Worker, name="tests.SlowAsync", timeout=0.3, max_concurrency=1, retries=0):
    async def perform(self, seconds: float) -> None:
        probe.enter("SlowAsync", (seconds,))
        try:
            await asyncio.sleep(seconds)
        finally:
            probe.leave("SlowAsync")


class SlowSync(toniq.Worker, name="tests.SlowSync", timeout=0.5, retries=0):
    """Runs in a child process (it has a timeout); leaves a file behind if it finishes."""

    def perform(self, seconds: float, marker: str) -> None:
        if seconds < 0:
            raise KeyError("negative")
        time.sleep(seconds)
        with open(marker, "w") as f:
            f.write("finished")
