"""``toniq demo``: the toniq story in a few seconds, on the embedded SQLite backend.

Four workers: one limited to 3 jobs at a time (``def``, in threads), one unlimited
(``async def``), one that skips the store (``persist=False``) and one whose jobs
sometimes fail. A node runs in the background while the demo shows progress.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import toniq


class _Meter:
    """Counts running jobs per worker and remembers the peak."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.done: dict[str, int] = {}

    def enter(self, name: str) -> None:
        with self.lock:
            self.running[name] = self.running.get(name, 0) + 1
            self.peak[name] = max(self.peak.get(name, 0), self.running[name])

    def leave(self, name: str) -> None:
        with self.lock:
            self.running[name] -= 1
            self.done[name] = self.done.get(name, 0) + 1


meter = _Meter()


class ResizeImage(toniq.Worker, max_concurrency=3, name="demo.ResizeImage"):
    """CPU-ish work in a thread; at most 3 at once on a node."""

    def perform(self, image_id: int, size: tuple[int, int]) -> None:
        meter.enter("ResizeImage")
        try:
            time.sleep(0.02)
        finally:
            meter.leave("ResizeImage")


class FeedTimeout(Exception):
    pass


_timed_out: set[str] = set()


class FetchFeed(toniq.Worker, name="demo.FetchFeed", backoff=lambda attempt: 0.3):
    """I/O-bound work on the event loop; no limit. One feed in 70 times out once and
    succeeds when retried."""

    async def perform(self, url: str) -> None:
        meter.enter("FetchFeed")
        try:
            await asyncio.sleep(random.uniform(0.2, 0.6))
            number = int(url.rsplit("/", 1)[-1].split(".")[0])
            if number % 70 == 17 and url not in _timed_out:
                _timed_out.add(url)
                raise FeedTimeout(f"{url} did not answer in time")
        finally:
            meter.leave("FetchFeed")


class RecordPageHit(toniq.Worker, persist=False, name="demo.RecordPageHit"):
    """Not worth storing: runs in this process at once, never touches the store."""

    def perform(self, path: str) -> None:
        meter.enter("RecordPageHit")
        meter.leave("RecordPageHit")


class Noop(toniq.Worker, name="demo.Noop"):
    """Does nothing: shows what the machinery itself costs."""

    async def perform(self, n: int) -> None:
        pass


class PaymentDeclined(Exception):
    pass


class ChargeCard(toniq.Worker, name="demo.ChargeCard", retries=2, backoff=lambda n: 0.2 * n):
    """Fails for some cards: retried twice, then kept in the store as failed."""

    def perform(self, card: str, cents: int) -> None:
        meter.enter("ChargeCard")
        try:
            if card.endswith("0000"):
                raise PaymentDeclined(f"card {card} declined ({cents / 100:.2f} EUR)")
        finally:
            meter.leave("ChargeCard")


class _OneLine(logging.Handler):
    """Print toniq's error lines without tracebacks, above the progress line."""

    def __init__(self, out: _Screen) -> None:
        super().__init__(logging.WARNING)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        # Job ids are long: shorten them to keep one line per event.
        message = record.getMessage()
        if isinstance(record.args, tuple) and record.args:
            message = message.replace(str(record.args[0]), "…", 1)
        self.out.line(f"  {record.levelname:<7} {message}")


class _Screen:
    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.lock = threading.Lock()
        self.last_plain = 0.0

    def line(self, text: str) -> None:
        with self.lock:
            if self.tty:
                sys.stdout.write("\r\033[K")
            print(text, flush=True)

    def progress(self, text: str, final: bool = False) -> None:
        with self.lock:
            if self.tty:
                sys.stdout.write("\r\033[K" + text + ("\n" if final else ""))
                sys.stdout.flush()
            elif final or time.monotonic() - self.last_plain > 0.5:
                self.last_plain = time.monotonic()
                print(text, flush=True)


def run_demo(jobs: int = 300, url: str | None = None) -> int:
    screen = _Screen()
    tmp = None
    if url is None:
        tmp = tempfile.TemporaryDirectory(prefix="toniq-demo-")
        url = f"sqlite:///{Path(tmp.name) / 'toniq.sqlite3'}"
    log = logging.getLogger("toniq")
    handler = _OneLine(screen)
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.WARNING)
    try:
        return _run(screen, jobs, url)
    finally:
        log.removeHandler(handler)
        log.propagate = True
        if tmp is not None:
            tmp.cleanup()


def _run(screen: _Screen, jobs: int, url: str) -> int:
    app = toniq.configure(url=url, poll_interval=0.02)
    print(f"toniq {toniq.__version__} demo: jobs stored in {url}\n")
    workers = (
        "ResizeImage (max 3 at once), FetchFeed (async, unlimited), ChargeCard, "
        "RecordPageHit (persist=False)"
    )
    print(f"workers: {workers}")
    random.seed(7)
    started = time.monotonic()
    plan = {"ResizeImage": jobs // 5, "ChargeCard": jobs // 10}
    plan["FetchFeed"] = jobs - plan["ResizeImage"] - plan["ChargeCard"]
    for i in range(plan["FetchFeed"]):
        toniq.enqueue(FetchFeed, url=f"https://example.com/feed/{i}.xml")
    for i in range(plan["ResizeImage"]):
        toniq.enqueue(ResizeImage, image_id=i, size=(640, 480))
    declined = 0
    for i in range(plan["ChargeCard"]):
        card = f"4242 4242 4242 {'0000' if i % 15 == 3 else f'{1000 + i:04d}'}"
        declined += card.endswith("0000")
        toniq.enqueue(ChargeCard, card, cents=1999 + i)
    enqueue_time = time.monotonic() - started
    stored = sum(plan.values())
    print(
        f"enqueued {stored} stored jobs in {enqueue_time * 1000:.0f} ms "
        f"({stored / enqueue_time:,.0f} jobs/s)\n"
    )

    run_started = time.monotonic()
    hits = 0
    finished: list[toniq.JobEvent] = []  # final outcomes (done or failed), from the event stream

    def on_event(event: toniq.JobEvent) -> None:
        if event.kind != "retrying" and event.persisted:
            finished.append(event)

    app.subscribe(on_event)
    with toniq.Node(app) as node:
        while True:
            for _ in range(10 if hits < 50 else 0):
                toniq.enqueue(RecordPageHit, path=f"/page/{hits}")  # runs now, stores nothing
                hits += 1
            done = len(finished)
            with meter.lock:
                running = dict(meter.running)
            bar = "#" * int(30 * done / stored)
            screen.progress(
                f"[{bar:<30}] {done}/{stored} done | running now: "
                f"FetchFeed {running.get('FetchFeed', 0):>3}, "
                f"ResizeImage {running.get('ResizeImage', 0)}/3"
            )
            if done >= stored and hits >= 50:
                break
            time.sleep(0.05)
        node.drain(timeout=30)
        stats = node.stats
    elapsed = time.monotonic() - run_started
    screen.progress(f"[{'#' * 30}] {stored}/{stored} done", final=True)

    # The machinery alone: no-op jobs, enqueued one call at a time, then run.
    noops = max(1000, jobs * 5)
    t0 = time.monotonic()
    for n in range(noops):
        toniq.enqueue(Noop, n)
    t1 = time.monotonic()
    with toniq.Node(app, workers=[Noop]) as node:
        node.drain(timeout=60)
    t2 = time.monotonic()

    counts = app.counts()
    failed = [toniq.get_job(job_id) for job_id in _failed_ids(app)]
    run = stats.done + stats.failed
    print("\nsummary")
    print(
        f"  jobs run           {run} stored + {stats.local_done} persist=False in {elapsed:.2f} s"
    )
    print(
        f"  peak concurrency   ResizeImage {meter.peak.get('ResizeImage', 0)} (limit 3), "
        f"FetchFeed {meter.peak.get('FetchFeed', 0)} (no limit)"
    )
    print(f"  retried runs       {stats.retried} (each one WARNING line; the job ran again later)")
    print(
        f"  failed             {stats.failed} (retries used up; kept in the store with every error)"
    )
    for record in failed:
        if record is not None and record.last_error is not None:
            runs = len(record.errors)
            print(f"    {record.id[:8]}  {record.worker}, {runs} runs: {record.last_error}")
    print(
        "  persist=False      "
        f"{meter.done.get('RecordPageHit', 0)} page hits recorded, "
        f"{counts.get(RecordPageHit.worker_name, {}).get('done', 0)} rows in the store"
    )
    print(
        f"  throughput         {noops} no-op jobs: enqueued at {noops / (t1 - t0):,.0f} jobs/s, "
        f"run at {noops / (t2 - t1):,.0f} jobs/s (one node, SQLite)"
    )
    print(
        "  in the store now   "
        + ", ".join(
            f"{name.removeprefix('demo.')}: "
            + " ".join(f"{state}={n}" for state, n in sorted(per.items()))
            for name, per in sorted(counts.items())
        )
    )
    app.close()
    ok = stats.failed == declined and done >= stored
    if not ok:
        print(f"unexpected: {stats.failed} failures, {declined} expected", file=sys.stderr)
    return 0 if ok else 1


def _failed_ids(app: toniq.Toniq) -> list[str]:
    backend = app.backend
    from toniq.backends.sqlite import SQLiteBackend

    if isinstance(backend, SQLiteBackend):
        rows = backend._read("SELECT id FROM toniq_jobs WHERE state = 'failed' ORDER BY seq")
        return [row[0] for row in rows]
    return []
