#!/usr/bin/env python3
"""toniq's benchmark suite: toniq and its peers, side by side, in one run.

    python3 bench/run.py                 # everything, medians of 3; writes docs/benchmarks.md
    python3 bench/run.py --quick         # a smoke run: small N, 1 repetition
    python3 bench/run.py --only toniq,rq --workloads W1,W2 --reps 5

It makes one virtual environment per library under ``bench/.venvs/`` (pinned versions from
``bench/requirements/``; toniq from this repository), starts one private ``redis-server`` on a
free loopback port, runs every workload for every library (each repetition of each library
through ``driver.py`` in that library's environment), stops Redis, and writes the report.
See ``bench/README.md``. Standard library only.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from common import free_port, kill_tree, redis_command  # noqa: E402
from peers import BY_NAME, GROUPS, PARTICIPANTS, VENVS, WORKLOADS, Participant, Venv  # noqa: E402
from report import package_version, render  # noqa: E402

#: Jobs per workload: full run, then --quick.
SIZES = {
    "W1": (20_000, 2_000),
    "W1-bulk": (20_000, 2_000),
    "W2": (20_000, 2_000),
    "W3": (500, 100),
    "C100k": (100_000, 5_000),
    "T": (0, 0),
    "RTT": (20_000, 2_000),
}
#: How long a workload may wait for its jobs inside the driver (full, quick), in seconds.
INNER_TIMEOUT = {"W2": (120, 30), "W3": (60, 30), "C100k": (120, 30)}
#: T: how long a peer gets to re-run a killed worker's jobs (full, quick).
TAKEOVER_BOUND = (90.0, 20.0)
#: Extra time the driver gets (start-up, enqueueing 100,000 jobs one at a time...).
SLACK = 180.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- virtual environments -------------------------------------------------------------------


@dataclass
class VenvStatus:
    venv: Venv
    python: Path | None = None
    error: str | None = None
    freeze: list[str] = field(default_factory=list)

    @property
    def version(self) -> str:
        return package_version(self.venv.package, self.freeze)


def _tail(text: str, lines: int = 4) -> str:
    return " | ".join(t.strip() for t in text.strip().splitlines()[-lines:])


def ensure_venv(venv: Venv, cache: Path, python: str, reinstall: bool) -> VenvStatus:
    status = VenvStatus(venv)
    where = cache / venv.name
    requirements = BENCH / "requirements" / f"{venv.name}.txt"
    key = hashlib.sha256(requirements.read_bytes())
    key.update(subprocess.check_output([python, "--version"]))
    if venv.editable_repo:
        key.update((REPO / "pyproject.toml").read_bytes())
    marker = where / ".bench-installed"
    bin_python = where / "bin" / "python"
    if reinstall or not marker.exists() or marker.read_text() != key.hexdigest():
        log(f"installing {venv.name} into {where} ...")
        shutil.rmtree(where, ignore_errors=True)
        steps = [
            [python, "-m", "venv", str(where)],
            [
                str(bin_python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(requirements),
                *(["-e", str(REPO)] if venv.editable_repo else []),
            ],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                status.error = f"install failed: {_tail(done.stderr or done.stdout)}"
                return status
        marker.write_text(key.hexdigest())
    status.python = bin_python
    if venv.editable_repo:
        # pip compiled every peer's modules to .pyc as it installed them; an editable toniq
        # is compiled on each import unless its .pyc exist (and PYTHONDONTWRITEBYTECODE,
        # set on some machines, keeps Python from writing them): compile now, as pip would.
        subprocess.run([str(bin_python), "-m", "compileall", "-q", str(REPO / "toniq")], check=True)
    freeze = subprocess.run(
        [str(bin_python), "-m", "pip", "freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
    )
    status.freeze = [
        line for line in freeze.stdout.splitlines() if line and not line.startswith("WARNING")
    ]
    if venv.editable_repo:
        status.freeze.append(f"toniq at {git_revision()}")
    return status


# -- Redis ----------------------------------------------------------------------------------


class RedisServer:
    """A private ``redis-server`` on a free loopback port (never 6379), nothing persisted."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="toniq-bench-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.version = ""

    def __enter__(self) -> RedisServer:
        from common import die_with_parent

        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--databases",
                "32",
                "--dir",
                str(self.dir),
                "--logfile",
                str(self.dir / "redis.log"),
                "--daemonize",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        end = time.monotonic() + 10
        while True:
            try:
                redis_command(self.port, "PING", timeout=1)
                break
            except OSError as exc:
                if self.proc.poll() is not None or time.monotonic() > end:
                    raise SystemExit(
                        f"redis-server did not start: see {self.dir / 'redis.log'}"
                    ) from exc
                time.sleep(0.02)
        info = redis_command(self.port, "INFO", "server")
        assert isinstance(info, bytes)
        for line in info.decode().splitlines():
            if line.startswith("redis_version:"):
                self.version = line.split(":", 1)[1].strip()
        log(f"redis-server {self.version} on 127.0.0.1:{self.port}")
        return self

    def flush(self, db: int) -> None:
        redis_command(self.port, "FLUSHDB", db=db)

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        log("redis-server stopped")


# -- running one repetition -------------------------------------------------------------------


@dataclass
class Plan:
    quick: bool
    reps: int
    takeover_bound: float
    logs: Path

    def size(self, workload: str) -> int:
        full, quick = SIZES[workload]
        return quick if self.quick else full

    def inner_timeout(self, workload: str) -> float:
        full, quick = INNER_TIMEOUT.get(workload, (120, 30))
        return float(quick if self.quick else full)


class Runner:
    def __init__(self, plan: Plan, redis: RedisServer, venvs: dict[str, VenvStatus]) -> None:
        self.plan = plan
        self.redis = redis
        self.venvs = venvs

    def start(self, p: Participant, workload: str, rep: int) -> tuple[subprocess.Popen[str], Any]:
        venv = self.venvs[p.venv]
        assert venv.python is not None
        scratch: Any = None
        if p.backend == "sqlite":
            scratch = tempfile.TemporaryDirectory(prefix="toniq-bench-sqlite-")
            url = f"sqlite:///{scratch.name}/{p.adapter}.sqlite3"
        else:
            self.redis.flush(p.db)
            url = self.redis.url(p.db)
        settings = p.settings_for(workload)
        adapter = p.adapter
        if workload == "RTT":
            url = self.redis.url(31)
            self.redis.flush(31)
        argv = [
            str(venv.python),
            str(BENCH / "driver.py"),
            "--adapter",
            adapter,
            "--workload",
            workload,
            "--n",
            str(self.plan.size(workload)),
            "--url",
            url,
            "--settings",
            json.dumps(settings),
            "--timeout",
            str(self.plan.inner_timeout(workload)),
            "--takeover-bound",
            str(self.plan.takeover_bound),
            "--log",
            str(self.plan.logs / f"{p.name}-{workload}-{rep}.log"),
        ]
        proc = subprocess.Popen(
            argv,
            cwd=BENCH,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        return proc, scratch

    def finish(self, proc: subprocess.Popen[str], scratch: Any, timeout: float) -> dict[str, Any]:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            result: dict[str, Any] = {"error": f"timed out after {timeout:.0f}s (killed)"}
        else:
            result = {"error": f"driver exited with {proc.returncode}: {_tail(err)}"}
            for line in out.splitlines():
                if line.startswith("RESULT "):
                    result = json.loads(line[len("RESULT ") :])
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # anything the driver left behind
            if scratch is not None:
                scratch.cleanup()
        return result

    def outer_timeout(self, workload: str) -> float:
        if workload == "T":
            return self.plan.takeover_bound + SLACK
        return self.plan.inner_timeout(workload) + SLACK

    def run(self, p: Participant, workload: str, rep: int) -> dict[str, Any]:
        proc, scratch = self.start(p, workload, rep)
        return self.finish(proc, scratch, self.outer_timeout(workload))

    def run_parallel(self, items: list[tuple[Participant, str]], rep: int) -> list[dict[str, Any]]:
        """Workload T: timers, not CPU, decide it, so every library runs it at once."""
        started = [self.start(p, w, rep) for p, w in items]
        return [
            self.finish(proc, s, self.outer_timeout(w))
            for (proc, s), (_, w) in zip(started, items, strict=True)
        ]


def summary(workload: str, result: dict[str, Any]) -> str:
    if "error" in result:
        return "failed: " + result["error"][:160]
    if "na" in result:
        return "n/a: " + result["na"]
    if workload in ("W1", "W1-bulk", "RTT"):
        return f"{result['rate']:,.0f} jobs/s"
    if workload == "W2":
        extra = " (timed out)" if "timeout" in result else ""
        return f"{result['rate']:,.0f} jobs/s, first job {result['first']:.2f}s{extra}"
    if workload == "W3":
        return f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms"
    if workload == "C100k":
        if "wall" not in result:
            return f"timed out: {result['done']:,} done, {result['rss_mb']:.0f} MB"
        return f"{result['wall']:.2f}s after the last enqueue, {result['rss_mb']:.0f} MB"
    if workload == "T":
        if "max" in result:
            return f"all {result['jobs']} re-run within {result['max']:.2f}s"
        return f"{result['recovered']}/{result['jobs']} re-run within {result['bound']:.0f}s"
    return json.dumps(result)


def repeatable(workload: str, result: dict[str, Any]) -> bool:
    """A slow, deterministic outcome (never took over, timed out) is not repeated."""
    if workload == "T" and "max" not in result and "error" not in result:
        return False
    if workload in ("W2", "C100k") and "timeout" in result:
        return False
    return "na" not in result


# -- the whole run --------------------------------------------------------------------------


def select(only: str | None) -> list[Participant]:
    if not only:
        return list(PARTICIPANTS)
    names: list[str] = []
    for item in only.split(","):
        item = item.strip()
        if item in GROUPS:
            names.extend(GROUPS[item])
        elif item in BY_NAME:
            names.append(item)
        else:
            raise SystemExit(f"unknown library {item!r}; known: {', '.join(BY_NAME)}")
    return [p for p in PARTICIPANTS if p.name in names]


def git_revision() -> str:
    """The repository's commit, with ``-dirty`` if toniq's files have uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "toniq", "pyproject.toml"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + ("-dirty (uncommitted changes in toniq/)" if dirty else "")


def machine() -> dict[str, str]:
    info = {"cores": str(os.cpu_count()), "os": platform.platform()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return info


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Benchmark toniq against its peers.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--reps", type=int, help="repetitions of every figure (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small N, 1 repetition")
    parser.add_argument("--only", help="libraries, e.g. toniq,rq (toniq includes its variants)")
    parser.add_argument("--workloads", help=f"a subset of {','.join(WORKLOADS)}")
    parser.add_argument(
        "--out", type=Path, help="report file (default docs/benchmarks.md; --quick: bench/results/)"
    )
    parser.add_argument("--cache", type=Path, default=BENCH / ".venvs", help="virtualenvs here")
    parser.add_argument("--python", default=sys.executable, help="Python for the virtualenvs")
    parser.add_argument("--reinstall", action="store_true", help="rebuild every virtualenv")
    parser.add_argument(
        "--takeover-bound", type=float, help="T: seconds to wait for a re-run (default 90)"
    )
    parser.add_argument("--from-json", type=Path, help="only re-render a saved results file")
    args = parser.parse_args()

    if args.from_json:
        data = json.loads(args.from_json.read_text())
        out = args.out or REPO / "docs" / "benchmarks.md"
        out.write_text(render(data))
        log(f"report written to {out}")
        return

    reps = args.reps or (1 if args.quick else 3)
    participants = select(args.only)
    workloads = list(WORKLOADS)
    if args.workloads:
        workloads = [w.strip() for w in args.workloads.split(",")]
        unknown = set(workloads) - set(WORKLOADS)
        if unknown:
            raise SystemExit(f"unknown workload(s) {', '.join(sorted(unknown))}")
    started_at = datetime.now(UTC)
    t_start = time.monotonic()
    stamp = started_at.strftime("%Y%m%d-%H%M%S")
    results_dir = BENCH / "results"
    logs = results_dir / f"logs-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    plan = Plan(
        quick=args.quick,
        reps=reps,
        takeover_bound=args.takeover_bound or TAKEOVER_BOUND[1 if args.quick else 0],
        logs=logs,
    )

    needed = sorted({p.venv for p in participants} | {"toniq"})
    args.cache.mkdir(parents=True, exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = {
            name: pool.submit(ensure_venv, VENVS[name], args.cache, args.python, args.reinstall)
            for name in needed
        }
        venvs = {name: f.result() for name, f in futures.items()}
    for status in venvs.values():
        if status.error:
            log(f"{status.venv.name}: {status.error}")

    results: dict[str, dict[str, list[dict[str, Any]]]] = {p.name: {} for p in participants}
    results["redis-py"] = {"RTT": []}
    with RedisServer() as redis:
        runner = Runner(plan, redis, venvs)
        toniq = BY_NAME["toniq"]
        for rep in range(1, reps + 1):
            if venvs["toniq"].python is not None:
                r = runner.run(toniq, "RTT", rep)
                results["redis-py"]["RTT"].append(r)
                log(f"[rep {rep}/{reps}] bare redis-py LPUSH: {summary('RTT', r)}")
            for workload in workloads:
                todo: list[Participant] = []
                for p in participants:
                    if workload not in p.workloads and workload not in p.na:
                        continue
                    done = results[p.name].setdefault(workload, [])
                    if workload in p.na:
                        if not done:
                            done.append({"na": p.na[workload]})
                        continue
                    if venvs[p.venv].error:
                        if not done:
                            done.append({"error": venvs[p.venv].error or ""})
                        continue
                    if done and not repeatable(workload, done[0]):
                        continue
                    todo.append(p)
                if workload == "T":
                    outcomes = runner.run_parallel([(p, workload) for p in todo], rep)
                else:
                    outcomes = []
                    for p in todo:
                        outcomes.append(runner.run(p, workload, rep))
                        log(
                            f"[rep {rep}/{reps}] {workload} {p.name}: "
                            f"{summary(workload, outcomes[-1])}"
                        )
                for p, outcome in zip(todo, outcomes, strict=True):
                    results[p.name][workload].append(outcome)
                    if workload == "T":
                        log(f"[rep {rep}/{reps}] T {p.name}: {summary(workload, outcome)}")

    duration = time.monotonic() - t_start
    command = "python3 bench/run.py" + "".join(f" {a}" for a in sys.argv[1:])
    data = {
        "command": command,
        "started": started_at.isoformat(timespec="seconds"),
        "duration_s": duration,
        "reps": reps,
        "quick": args.quick,
        "sizes": {w: plan.size(w) for w in SIZES},
        "takeover_bound": plan.takeover_bound,
        "machine": machine(),
        "python": subprocess.run(
            [args.python, "--version"], capture_output=True, text=True
        ).stdout.strip(),
        "redis": redis.version,
        "venvs": {
            name: {"version": s.version, "freeze": s.freeze, "error": s.error}
            for name, s in venvs.items()
        },
        "participants": [p.name for p in participants],
        "workloads": workloads,
        "results": results,
    }
    raw = results_dir / f"results-{stamp}.json"
    raw.write_text(json.dumps(data, indent=1))
    out = args.out or (
        results_dir / "benchmarks-quick.md" if args.quick else REPO / "docs" / "benchmarks.md"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(data))
    log(f"done in {duration / 60:.1f} min; raw results {raw}; report {out}")


if __name__ == "__main__":
    main()
