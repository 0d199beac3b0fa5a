#!/usr/bin/env python3
"""Where W1's time goes: toniq's one-at-a-time enqueue beside a bare LPUSH and the cheapest
enqueues toniq could make, on one private Redis, each figure the median of interleaved
repetitions. It shows how close to a bare redis-py round trip an enqueue that is one Lua
script (the charter's rule for every Redis state change) can get::

    python3 bench/run.py --only toniq --workloads W1 --reps 1   # makes bench/.venvs/toniq
    bench/.venvs/toniq/bin/python bench/w1_limit.py [--reps 7] [--n 20000] [--steps]

Rows (microseconds per call: wall, this process's CPU, and Redis's time for the command the
row sends, from INFO commandstats; rate as % of the bare LPUSH):

- ``redis-py LPUSH``: W1's baseline, ``client.lpush(key, i)`` one at a time;
- ``no script``: toniq's own work for a job (check, pickle, sign) and then one plain RPUSH
  of its payload on toniq's connection: an enqueue with no Lua at all, which could not check
  for a duplicate id, wake an idle node or hand the job over;
- ``script "return 1"``: ``app.enqueue`` with enqueue.lua replaced by a script that does
  nothing, with the same keys and arguments: any one-script enqueue costs at least this;
- ``3-command script``: the smallest script that still stores a job atomically (duplicate
  check on a hash that stays empty, RPUSH, idle check);
- ``4-command inbox``: the cheapest enqueue a different Redis layout could have: store the
  payload (checked for a duplicate id), append the id to a per-worker list, check for a
  waiting node; the record, sequence number and queue entry would be made by the next claim;
- ``toniq enqueue``: ``app.enqueue``, as W1 measures it.

``--steps`` prints instead where Redis's time in enqueue.lua goes for one job: the script
is cut short (``return 1``) after each of its steps in turn, and each row is Redis's time per
call up to there, with what that step added.

It uses toniq's private parts (``App._prepare``, ``RedisBackend._roundtrip``): a measurement
tool, not an example.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis
import toniq
from hiredis import pack_command
from toniq.backends.redis import script_source

from run import RedisServer

#: An enqueue that indexes nothing: the payload stored (and checked for a duplicate id), the
#: job appended to a per-worker list, the idle check; a node would do the rest at its claim.
INBOX = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return redis.error_reply('duplicate') end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[1] .. ' ' .. ARGV[3])
if redis.call('EXISTS', KEYS[3], KEYS[4]) == 1 then return 0 end
return 1
"""

SMALLEST = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return redis.error_reply('duplicate') end
redis.call('RPUSH', KEYS[2], ARGV[2])
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
return 1
"""


#: enqueue.lua's one-job path, step by step: (name, text the step starts with, text it ends
#: with); the script is cut right after the end text. "call" cuts before everything.
STEPS = (
    ("call a script (12 keys, 10 arguments)", None, None),
    ("+ its helpers and arguments", "if n == 1 then", "if n == 1 then\n"),
    ("+ duplicate check (HEXISTS)", "redis.call('HEXISTS', KEYS[1], id)", "  end\n"),
    ("+ sequence number (INCRBY)", "  local seq = redis.call('INCRBY'", "\n"),
    ("+ worker set (SISMEMBER)", "  local state, extra = first_of_worker(", "\n"),
    ("+ waiting or idle node (EXISTS)", "  local nobody_waits = ", "\n"),
    ("+ the record (HSET)", "  redis.call('HSET', KEYS[1], id, head", "}')\n"),
    ("+ the payload (HSET)", "  redis.call('HSET', KEYS[2], id, ARGV[first + 2])", "\n"),
    ("+ the queue entry (ZADD), all of it", "", ""),
)


def cut_after(source: str, start: str | None, end: str | None) -> str:
    """enqueue.lua returning 1 right after a step (before everything for start None; the
    whole script for start "")."""
    if start is None:
        return "if true then return 1 end\n" + source
    if start == "":
        return source
    at = source.find(start, source.find("if n == 1 then"))  # in the one-job path
    stop = source.find(end or "", at)
    if at < 0 or stop < 0:
        raise SystemExit(f"--steps: enqueue.lua changed, no {start!r} in it; update STEPS")
    stop += len(end or "")
    return source[:stop] + "if true then return 1 end\n" + source[stop:]


class Noop(toniq.Worker, name="bench.noop"):
    async def perform(self, i: int) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--steps", action="store_true", help="where enqueue.lua's time goes")
    args = parser.parse_args()
    n = args.n
    with RedisServer() as server:
        url = server.url(0)
        plain = redis.Redis.from_url(url)
        app = toniq.configure(url=url, secret="toniq-bench-secret-0123456789abcdef")
        app.enqueue(Noop, -1)  # connects, loads the scripts
        backend = app.backend
        real = backend._scripts["enqueue"]  # type: ignore[attr-defined]
        smallest = plain.script_load(SMALLEST)
        deferred = plain.script_load(INBOX)
        inbox, jobs, idle = "toniq:{x}:inbox", backend.key("jobs"), backend.key("idle")  # type: ignore[attr-defined]
        roundtrip = backend._roundtrip  # type: ignore[attr-defined]
        prepare = app._prepare

        def lpush() -> None:
            client = redis.Redis.from_url(url)
            client.ping()
            for i in range(n):
                client.lpush("bench:rtt", i)
            client.close()

        def no_script() -> None:
            for i in range(n):
                job = prepare(Noop, (i,), {})[2]
                assert job is not None
                roundtrip(pack_command(("RPUSH", inbox, job.payload)))

        def three() -> None:
            for i in range(n):
                job = prepare(Noop, (i,), {})[2]
                assert job is not None
                roundtrip(
                    pack_command(("EVALSHA", smallest, 3, jobs, inbox, idle, job.id, job.payload))
                )

        def inbox_script() -> None:
            keys = (backend.key("payloads"), inbox, idle, backend.key("waiting:bench.noop"))  # type: ignore[attr-defined]
            for i in range(n):
                job = prepare(Noop, (i,), {})[2]
                assert job is not None
                at = repr(job.enqueued_at)
                roundtrip(pack_command(("EVALSHA", deferred, 4, *keys, job.id, job.payload, at)))

        def enqueue() -> None:
            for i in range(n):
                app.enqueue(Noop, i)

        def with_script(source: str) -> Callable[[], None]:
            """app.enqueue with enqueue.lua replaced by ``source``."""
            script = plain.register_script(source)
            script.sha = plain.script_load(source)

            def run() -> None:
                backend._scripts["enqueue"] = script  # type: ignore[attr-defined]
                backend._one_of.clear()  # type: ignore[attr-defined]
                try:
                    enqueue()
                finally:
                    backend._scripts["enqueue"] = real  # type: ignore[attr-defined]
                    backend._one_of.clear()  # type: ignore[attr-defined]

            return run

        rows: dict[str, Callable[[], None]] = {
            "redis-py LPUSH": lpush,
            "no script": no_script,
            'script "return 1"': with_script("return 1"),
            "3-command script": three,
            "4-command inbox": inbox_script,
            "toniq enqueue": enqueue,
        }
        if args.steps:
            source = script_source("enqueue")
            rows = {name: with_script(cut_after(source, a, b)) for name, a, b in STEPS}
        # The command each row sends, whose INFO commandstats time is Redis's share of the
        # row (a script's includes the commands it calls).
        sent = {"redis-py LPUSH": "lpush", "no script": "rpush"}
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in rows}
        for rep in range(args.reps):
            for name, run in rows.items():
                plain.flushdb()
                plain.config_resetstat()
                wall, cpu = time.perf_counter(), time.process_time()
                run()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                stats = plain.info("commandstats").get(f"cmdstat_{sent.get(name, 'evalsha')}")
                usec = stats["usec"] if stats else 0.0
                results[name].append((wall / n * 1e6, cpu / n * 1e6, usec / n))
            print(f"repetition {rep + 1}/{args.reps} done", file=sys.stderr)
        app.close()
        if args.steps:
            print(f"{n:,} app.enqueue calls, median of {args.reps}, redis-server {server.version}")
            print(f"{'enqueue.lua cut after':40s} {'Redis us':>9s} {'step':>6s} {'wall us':>8s}")
            before = 0.0
            for name, values in results.items():
                redis_us = statistics.median(r for _, _, r in values)
                wall = statistics.median(w for w, _, _ in values)
                print(f"{name:40s} {redis_us:9.1f} {redis_us - before:+6.1f} {wall:8.1f}")
                before = redis_us
            return
        base = statistics.median(w for w, _, _ in results["redis-py LPUSH"])
        print(f"{n:,} calls, median of {args.reps}, redis-server {server.version}")
        print(f"{'':20s} {'wall us':>8s} {'cpu us':>7s} {'redis us':>9s} {'% of LPUSH':>11s}")
        for name, values in results.items():
            wall = statistics.median(w for w, _, _ in values)
            cpu = statistics.median(c for _, c, _ in values)
            redis_us = statistics.median(r for _, _, r in values)
            print(f"{name:20s} {wall:8.1f} {cpu:7.1f} {redis_us:9.1f} {base / wall * 100:10.0f} %")


if __name__ == "__main__":
    main()
