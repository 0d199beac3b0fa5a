"""Run ONE repetition of ONE workload for ONE library, inside that library's virtual
environment, and print its figures as one JSON line (``RESULT {...}``).

``run.py`` starts it as ``<venv>/bin/python driver.py --adapter rq --workload W2 ...`` after
emptying the library's Redis database; the driver enqueues through the adapter, starts the
library's worker process(es) with the adapter's command, watches the shared-memory marks the
jobs write, and kills what it started.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import (  # noqa: E402
    ENV_SETTINGS,
    ENV_SHM,
    ENV_SIZE,
    ENV_URL,
    Marks,
    kill_tree,
    new_group_dying_with_parent,
    peak_rss_mb,
    percentile,
    process_tree,
    shm_dir,
)

#: Jobs per bulk call (every library's bulk API gets the same list size).
BULK = 1000
#: W3: warm-up jobs before the measured ones, and the pace of the measured ones.
W3_WARMUP = 50
W3_RATE = 500.0
#: T: how long the second worker gets to start before the first one is killed.
T_STANDBY = 5.0


class Failure(Exception):
    """The library did not do what the workload needs (reported, not a crash)."""


class WorkerProcess:
    """One worker started with the adapter's command, in its own process group, dying with
    the driver; its output goes to a log file."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv = argv
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self.out = open(log, "ab")  # noqa: SIM115 - closed in kill()
        self.out.write(f"$ {' '.join(argv)}\n".encode())
        self.out.flush()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            cwd=BENCH,
            stdin=subprocess.DEVNULL,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            preexec_fn=new_group_dying_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise Failure(f"worker exited with code {code}: {self.tail()}")

    def tail(self, lines: int = 6) -> str:
        self.out.flush()
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            kill_tree(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.out.close()


class Run:
    def __init__(self, args: argparse.Namespace, size: int) -> None:
        self.args = args
        self.n: int = args.n
        path = shm_dir() / f"toniq-bench-{os.getpid()}.bin"
        self.marks = Marks(str(path), size, create=True)
        os.environ[ENV_SHM] = str(path)
        os.environ[ENV_SIZE] = str(size)
        os.environ[ENV_URL] = args.url
        os.environ[ENV_SETTINGS] = args.settings
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(BENCH), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        module = importlib.import_module(f"adapters.{args.adapter}_bench")
        self.adapter = module.Bench()
        self.workers: list[WorkerProcess] = []

    # -- helpers -------------------------------------------------------------------------

    async def call(self, name: str, *args: Any) -> Any:
        result = getattr(self.adapter, name)(*args)
        if asyncio.iscoroutine(result):
            result = await result
        return result

    async def enqueue_all(self, kind: str, indices: list[int], *, bulk: bool) -> None:
        """Enqueue (untimed set-up): in bulk if asked and possible, else one at a time (an
        async client keeps up to 100 enqueues in flight)."""
        if bulk and self.adapter.bulk:
            for start in range(0, len(indices), BULK):
                await self.call("enqueue_bulk", kind, indices[start : start + BULK])
        elif self.adapter.is_async and bulk:
            for start in range(0, len(indices), 100):
                await asyncio.gather(
                    *(self.adapter.enqueue(kind, i) for i in indices[start : start + 100])
                )
        elif self.adapter.is_async:
            for i in indices:
                await self.adapter.enqueue(kind, i)
        else:
            for i in indices:
                self.adapter.enqueue(kind, i)

    def start_worker(self, tag: str = "") -> WorkerProcess:
        log = Path(self.args.log)
        if tag:
            log = log.with_name(f"{log.stem}-{tag}{log.suffix}")
        worker = WorkerProcess(self.adapter.worker_argv(), log)
        self.workers.append(worker)
        return worker

    def wait_done(
        self, lo: int, hi: int, timeout: float, worker: WorkerProcess | None = None
    ) -> bool:
        """Until jobs ``lo..hi-1`` all ran (True) or ``timeout`` (False)."""
        end = time.monotonic() + timeout
        step = 0.001
        while True:
            times = self.marks.times()[lo:hi]
            if times.count(0.0) == 0:
                return True
            if time.monotonic() >= end:
                return False
            for w in [worker] if worker else self.workers:
                w.check()
            time.sleep(step)
            step = min(step * 1.5, 0.02)

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.marks.close()
        try:
            os.unlink(self.marks.path)
        except OSError:
            pass

    # -- workloads -----------------------------------------------------------------------

    async def w1(self) -> dict[str, Any]:
        n = self.n
        a = self.adapter
        started = time.perf_counter()
        if a.is_async:
            for i in range(n):
                await a.enqueue("noop", i)
        else:
            enqueue = a.enqueue
            for i in range(n):
                enqueue("noop", i)
        elapsed = time.perf_counter() - started
        return {"rate": n / elapsed, "elapsed": elapsed}

    async def w1_bulk(self) -> dict[str, Any]:
        if not self.adapter.bulk:
            return {"na": "no bulk-enqueue API"}
        n = self.n
        started = time.perf_counter()
        for start in range(0, n, BULK):
            await self.call("enqueue_bulk", "noop", list(range(start, min(n, start + BULK))))
        elapsed = time.perf_counter() - started
        return {"rate": n / elapsed, "elapsed": elapsed, "bulk": self.adapter.bulk}

    async def w2(self) -> dict[str, Any]:
        n = self.n
        await self.enqueue_all("noop", list(range(n)), bulk=True)
        worker = self.start_worker()
        t0 = worker.started
        finished = self.wait_done(0, n, self.args.timeout, worker)
        times = self.marks.times()
        done = [t for t in times if t]
        if not done:
            raise Failure(f"no job ran within {self.args.timeout:g}s: {worker.tail()}")
        first, last = min(done) - t0, max(done) - t0
        out: dict[str, Any] = {"first": first, "elapsed": last, "done": len(done)}
        if finished:
            out["rate"] = n / last
        else:
            out["timeout"] = self.args.timeout
            out["rate"] = len(done) / (time.monotonic() - t0)
        return out

    async def w3(self) -> dict[str, Any]:
        n = self.n
        worker = self.start_worker()
        for i in range(n, n + W3_WARMUP):
            await self.call("enqueue", "noop", i)
        if not self.wait_done(n, n + W3_WARMUP, 60.0, worker):
            raise Failure(f"the warm-up jobs did not run within 60s: {worker.tail()}")
        time.sleep(1.0)  # idle
        enqueued = [0.0] * n
        t0 = time.monotonic() + 0.01
        for i in range(n):
            target = t0 + i / W3_RATE
            while True:
                now = time.monotonic()
                if now >= target:
                    break
                if target - now > 0.0015:
                    time.sleep(target - now - 0.001)
            enqueued[i] = time.monotonic()
            await self.call("enqueue", "noop", i)
        paced = n / (time.monotonic() - t0)
        if not self.wait_done(0, n, self.args.timeout, worker):
            raise Failure(f"not all jobs ran within {self.args.timeout:g}s")
        times = self.marks.times()
        lat = [(times[i] - enqueued[i]) * 1000 for i in range(n)]
        return {
            "p50_ms": percentile(lat, 0.5),
            "p99_ms": percentile(lat, 0.99),
            "max_ms": max(lat),
            "paced_rate": paced,
        }

    async def c100k(self) -> dict[str, Any]:
        n = self.n
        worker = self.start_worker()
        await self.call("enqueue", "noop", n)
        if not self.wait_done(n, n + 1, 60.0, worker):
            raise Failure(f"the warm-up job did not run within 60s: {worker.tail()}")
        t0 = time.monotonic()
        await self.enqueue_all("sleep", list(range(n)), bulk=True)
        t1 = time.monotonic()
        finished = self.wait_done(0, n, self.args.timeout, worker)
        rss = peak_rss_mb(worker.pid)
        times = self.marks.times()[:n]
        done = [t for t in times if t]
        out: dict[str, Any] = {"enqueue_s": t1 - t0, "rss_mb": rss, "done": len(done)}
        if finished:
            out["wall"] = max(done) - t1
        else:
            out["timeout"] = self.args.timeout
        return out

    async def takeover(self) -> dict[str, Any]:
        k = self.adapter.takeover_jobs
        a = self.start_worker("a")
        await self.call("enqueue", "noop", k)
        if not self.wait_done(k, k + 1, 60.0, a):
            raise Failure(f"the warm-up job did not run within 60s: {a.tail()}")
        for i in range(k):
            await self.call("enqueue", "hang", i)
        if not self.wait_done(0, k, 30.0, a):
            raise Failure(f"the {k} hanging jobs did not all start on one worker within 30s")
        a_pids = set(process_tree(a.pid))
        if not set(self.marks.pids()[:k]) <= a_pids:
            raise Failure("the hanging jobs did not run on the first worker")
        b = self.start_worker("b")
        time.sleep(T_STANDBY)
        b.check()
        killed = time.monotonic()
        a.kill()
        self.marks.release()  # re-runs return at once
        bound = self.args.takeover_bound
        end = killed + bound
        while time.monotonic() < end:
            if all(t > killed for t in self.marks.times()[:k]):
                break
            b.check()
            time.sleep(0.005)
        times = self.marks.times()[:k]
        delays = sorted(t - killed for t in times if t > killed)
        out: dict[str, Any] = {"jobs": k, "recovered": len(delays), "bound": bound}
        out["delays"] = delays
        if len(delays) == k:
            out["max"] = max(delays)
        return out

    async def redis_rtt(self) -> dict[str, Any]:
        """The bare redis-py baseline: LPUSH one at a time, then pipelined."""
        import redis

        n = self.n
        client = redis.Redis.from_url(self.args.url)
        client.ping()
        started = time.perf_counter()
        for i in range(n):
            client.lpush("bench:rtt", i)
        single = n / (time.perf_counter() - started)
        client.delete("bench:rtt")
        started = time.perf_counter()
        for start in range(0, n, BULK):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(n, start + BULK)):
                pipe.lpush("bench:rtt", i)
            pipe.execute()
        piped = n / (time.perf_counter() - started)
        client.delete("bench:rtt")
        client.close()
        hiredis = bool(getattr(redis.utils, "HIREDIS_AVAILABLE", False))
        return {
            "rate": single,
            "pipelined": piped,
            "redis_py": redis.__version__,
            "hiredis": hiredis,
        }


WORKLOADS = {
    "W1": ("w1", lambda n: n),
    "W1-bulk": ("w1_bulk", lambda n: n),
    "W2": ("w2", lambda n: n),
    "W3": ("w3", lambda n: n + W3_WARMUP),
    "C100k": ("c100k", lambda n: n + 1),
    "T": ("takeover", lambda n: 16),
    "RTT": ("redis_rtt", lambda n: 1),
}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    method, size = WORKLOADS[args.workload]
    run = Run(args, size(args.n))
    try:
        await run.call("open")
        try:
            result: dict[str, Any] = await getattr(run, method)()
        finally:
            await run.call("close")
        return result
    finally:
        run.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--settings", default="{}")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--takeover-bound", type=float, default=90.0)
    parser.add_argument("--log", default=str(BENCH / "results" / "logs" / "worker.log"))
    args = parser.parse_args()
    try:
        result = asyncio.run(main_async(args))
    except Failure as exc:
        result = {"error": str(exc)}
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
