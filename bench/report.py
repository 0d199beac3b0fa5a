"""Render a run's results (the JSON ``run.py`` saves) as ``docs/benchmarks.md``."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from peers import BY_NAME, PEERS, VENVS

Reps = list[dict[str, Any]]


@dataclass(frozen=True)
class Metric:
    workload: str
    key: str
    title: str
    unit: str
    higher_is_better: bool
    fmt: Callable[[float], str]


def _rate(v: float) -> str:
    return f"{v:,.0f}"


def _ms(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:,.0f}"


def _s(v: float) -> str:
    return f"{v:.2f}" if v < 100 else f"{v:,.0f}"


def _mb(v: float) -> str:
    return f"{v:,.0f}"


THROUGHPUT = (
    Metric("W1", "rate", "W1 enqueue, jobs/s ↑", "jobs/s", True, _rate),
    Metric("W1-bulk", "rate", "W1-bulk enqueue, jobs/s ↑", "jobs/s", True, _rate),
    Metric("W2", "rate", "W2 run, jobs/s ↑", "jobs/s", True, _rate),
    Metric("W2", "first", "W2 first job, s ↓", "s", False, _s),
)
LATENCY = (
    Metric("W3", "p50_ms", "W3 p50, ms ↓", "ms", False, _ms),
    Metric("W3", "p99_ms", "W3 p99, ms ↓", "ms", False, _ms),
    Metric("C100k", "wall", "C100k wall, s ↓", "s", False, _s),
    Metric("C100k", "rss_mb", "C100k peak RSS, MB ↓", "MB", False, _mb),
    Metric("T", "max", "T takeover, s ↓", "s", False, _s),
)


def package_version(package: str, freeze: list[str]) -> str:
    """A distribution's version from ``pip freeze`` lines (an editable install shows as a
    comment ``# Editable ... (toniq==0.1.0)`` followed by ``-e /path``)."""
    name = package.lower()
    for line in freeze:
        low = line.lower().replace("_", "-")
        if low.startswith(name + "=="):
            return line.split("==", 1)[1]
        if f"({name}==" in low:
            return low.split(f"({name}==", 1)[1].split(")", 1)[0] + " (editable, this repo)"
    return "?"


def _ok(reps: Reps) -> Reps:
    return [r for r in reps if "error" not in r and "na" not in r]


def value(results: dict[str, Any], name: str, metric: Metric) -> float | None:
    """The median of a metric over the successful repetitions, or None."""
    reps = results.get(name, {}).get(metric.workload, [])
    ok = _ok(reps)
    if metric.workload == "T" and any("max" not in r for r in ok):
        return None  # some repetition did not take over at all
    timed_out = any("timeout" in r for r in ok)
    if metric.workload in ("W2", "C100k") and timed_out and metric.key != "rss_mb":
        return None
    values = [float(r[metric.key]) for r in ok if metric.key in r]
    return statistics.median(values) if values else None


def status(results: dict[str, Any], name: str, metric: Metric, bound: float) -> str:
    """Why there is no value: n/a, failed, timed out, never took over; or '' if there is one."""
    reps = results.get(name, {}).get(metric.workload)
    if not reps:
        return "–"
    if all("na" in r for r in reps):
        return "n/a"
    ok = _ok(reps)
    if not ok:
        return "failed"
    if metric.workload == "T":
        missing = [r for r in ok if "max" not in r]
        if missing:
            r = missing[0]
            return f"never ({r['recovered']}/{r['jobs']} in {bound:.0f} s)"
    if metric.workload in ("W2", "C100k"):
        timed = [r for r in ok if "timeout" in r]
        if timed and metric.key != "rss_mb":
            r = timed[0]
            n = r.get("done", 0)
            return f"> {r['timeout']:.0f} s ({n:,} done)"
    return ""


def best_peer(results: dict[str, Any], metric: Metric, peers: tuple[str, ...] = PEERS) -> Any:
    best: tuple[float, str] | None = None
    for name in peers:
        v = value(results, name, metric)
        if v is None:
            continue
        if best is None or (v > best[0] if metric.higher_is_better else v < best[0]):
            best = (v, name)
    return best


def cell(results: dict[str, Any], name: str, metric: Metric, bound: float, peers: Any) -> str:
    v = value(results, name, metric)
    if v is None:
        return status(results, name, metric, bound) or "–"
    text = metric.fmt(v)
    best = best_peer(results, metric, peers)
    if best is not None and best[0] > 0:
        text += f" ({v / best[0]:.2f}×)"
    if best is not None and best[1] == name:
        text = f"**{text}**"
    return text


def table(data: dict[str, Any], names: list[str], metrics: tuple[Metric, ...], peers: Any) -> str:
    results = data["results"]
    bound = data["takeover_bound"]
    rows = [
        "| library | " + " | ".join(m.title for m in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for name in names:
        if name not in results:
            continue
        if not any(m.workload in results[name] for m in metrics):
            continue
        cells = [cell(results, name, m, bound, peers) for m in metrics]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


# -- targets ------------------------------------------------------------------------------


def _mark(ok: bool | None) -> str:
    return "–" if ok is None else ("✔" if ok else "✘")


def targets(data: dict[str, Any]) -> str:
    r = data["results"]
    rows = ["| workload | target | toniq, measured | met |", "|---|---|---|---|"]

    def add(workload: str, target: str, measured: str, ok: bool | None) -> None:
        rows.append(f"| {workload} | {target} | {measured} | {_mark(ok)} |")

    w2 = THROUGHPUT[2]
    v, best = value(r, "toniq", w2), best_peer(r, w2)
    if v is not None and best is not None:
        add(
            "W2, Redis",
            "≥ 20,000 jobs/s and ≥ 10× the best peer",
            f"{v:,.0f} jobs/s = {v / best[0]:.1f}× {best[1]} ({best[0]:,.0f})",
            v >= 20_000 and v >= 10 * best[0],
        )
    else:
        add("W2, Redis", "≥ 20,000 jobs/s and ≥ 10× the best peer", "not measured", None)

    v, best = value(r, "toniq-sqlite", w2), best_peer(r, w2, ("huey-sqlite",))
    if v is not None and best is not None:
        add(
            "W2, SQLite",
            "≥ 5,000 jobs/s and ≥ 2× Huey's SQLite storage",
            f"{v:,.0f} jobs/s = {v / best[0]:.1f}× huey-sqlite ({best[0]:,.0f})",
            v >= 5_000 and v >= 2 * best[0],
        )
    else:
        add("W2, SQLite", "≥ 5,000 jobs/s and ≥ 2× Huey's SQLite storage", "not measured", None)

    w1 = THROUGHPUT[0]
    v, best = value(r, "toniq", w1), best_peer(r, w1)
    rtt = value(r, "redis-py", Metric("RTT", "rate", "", "", True, _rate))
    if v is not None and best is not None and rtt is not None:
        add(
            "W1, Redis",
            "≥ 1.2× the best peer, and ≥ 90 % of a bare redis-py round-trip rate",
            f"{v:,.0f} jobs/s = {v / best[0]:.2f}× {best[1]} ({best[0]:,.0f}); "
            f"{100 * v / rtt:.0f} % of redis-py LPUSH ({rtt:,.0f}/s)",
            v >= 1.2 * best[0] and v >= 0.9 * rtt,
        )
    else:
        add("W1, Redis", "≥ 1.2× the best peer, and ≥ 90 % of redis-py", "not measured", None)

    v = value(r, "toniq", THROUGHPUT[1])
    add(
        "W1-bulk, Redis",
        "≥ 100,000 jobs/s",
        "not measured" if v is None else f"{v:,.0f} jobs/s",
        None if v is None else v >= 100_000,
    )

    p50, p99 = value(r, "toniq", LATENCY[0]), value(r, "toniq", LATENCY[1])
    add(
        "W3, Redis",
        "p50 ≤ 0.5 ms, p99 ≤ 1 ms",
        "not measured" if p50 is None or p99 is None else f"p50 {p50:.2f} ms, p99 {p99:.2f} ms",
        None if p50 is None or p99 is None else p50 <= 0.5 and p99 <= 1.0,
    )

    wall, rss = value(r, "toniq", LATENCY[2]), value(r, "toniq", LATENCY[3])
    add(
        "C100k",
        "all done within 5 s of the last enqueue, peak RSS ≤ 600 MB",
        "not measured" if wall is None or rss is None else f"{wall:.2f} s, {rss:,.0f} MB",
        None if wall is None or rss is None else wall <= 5 and rss <= 600,
    )

    t_default, t_short = value(r, "toniq", LATENCY[4]), value(r, "toniq-short", LATENCY[4])
    measured = (
        f"defaults {'–' if t_default is None else f'{t_default:.2f} s'}; "
        f"short settings {'–' if t_short is None else f'{t_short:.2f} s'}"
    )
    add(
        "T",
        "≤ 15 s with defaults; ≤ 3 s with the shortest documented safe settings",
        measured,
        None if t_default is None or t_short is None else t_default <= 15 and t_short <= 3,
    )
    return "\n".join(rows)


# -- the rest ------------------------------------------------------------------------------


def failures(data: dict[str, Any]) -> list[str]:
    out = []
    for name, workloads in data["results"].items():
        for workload, reps in workloads.items():
            for i, r in enumerate(reps, 1):
                if "error" in r:
                    out.append(f"- {name} {workload} (repetition {i}): failed: {r['error']}")
    for name, v in data["venvs"].items():
        if v.get("error"):
            out.append(f"- virtualenv {name}: {v['error']}")
    return out


def takeover_details(data: dict[str, Any]) -> list[str]:
    lines = []
    for name, workloads in data["results"].items():
        for i, r in enumerate(workloads.get("T", []), 1):
            if "delays" not in r:
                continue
            delays = ", ".join(f"{d:.2f}" for d in r["delays"]) or "none"
            lines.append(f"| {name} | {i} | {r['jobs']} | {r['recovered']} | {delays} |")
    if not lines:
        return []
    return [
        "| library | repetition | jobs on the killed worker | re-run in time | "
        "seconds from SIGKILL to each re-run |",
        "|---|---|---|---|---|",
        *lines,
    ]


def raw_table(data: dict[str, Any]) -> list[str]:
    lines = ["| library | workload | every repetition |", "|---|---|---|"]
    for name, workloads in data["results"].items():
        for workload, reps in workloads.items():
            parts = []
            for r in reps:
                if "error" in r:
                    parts.append("failed")
                elif "na" in r:
                    parts.append("n/a")
                else:
                    parts.append(
                        ", ".join(
                            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in r.items()
                            if k not in ("delays", "bulk", "traceback")
                        )
                    )
            lines.append(f"| {name} | {workload} | " + " · ".join(parts) + " |")
    return lines


METHOD = """\
- **Observation.** Every job writes `time.monotonic()` (the system-wide `CLOCK_MONOTONIC`,
  comparable between processes) and its pid into its own slot of a shared-memory file
  (`/dev/shm`), indexed by the job's number: two `struct.pack_into` calls, the same for every
  library, and no Redis round trip. The driver polls that file.
- **W1**: one process enqueues N no-op jobs, one call at a time, with each library's ordinary
  enqueue call (`await` for async clients); no worker runs. Jobs/s over the whole loop.
- **W1-bulk**: the same N through the library's bulk API in lists of 1,000, where one exists.
- **W2**: N no-op jobs are enqueued first (untimed, in bulk where possible); then ONE worker
  process is started and the clock runs from just before it is spawned (start-up included)
  until the last job ran. Also the time to the first job.
- **W3**: a worker is started and warmed up (50 jobs, then 1 s idle); then N jobs are enqueued
  one at a time at 500/s; latency = the job's start − the moment just before its enqueue call.
- **C100k**: a warmed-up worker; N jobs that each `await asyncio.sleep(1)` are enqueued (in bulk
  where possible, else up to 100 enqueues in flight); wall time from the end of the last
  enqueue until the last job finished, and the peak RSS (`VmHWM`, summed over the worker's
  process tree) of the worker.
- **T**: worker A runs hanging jobs (all at once); worker B is started and given 5 s; then A's
  whole process tree gets SIGKILL. Time from the kill until each of A's jobs starts again
  (on B), waiting at most the bound. Every library runs T at the same time (each on its own
  Redis database): the waits are timers, not CPU.
- Each library uses its own Redis database of one private `redis-server` (nothing persisted),
  emptied before every run. A figure is the median of the repetitions; a library that timed
  out or never took over in its first repetition is not repeated for that workload.
- Noise: these machines are virtual, and a bare Redis round trip varies by up to 2× from one
  minute to the next (the baseline below, every repetition). One-at-a-time enqueue rates (W1)
  move the most; repetitions interleave the libraries so that drift hits all of them, and
  medians are reported. Compare figures of one run only.
- Ratios: each figure ÷ the best peer's figure for the same column (↑ higher is better, ↓
  lower is better; the best peer is in bold). Peers: rq, arq, dramatiq, huey, celery, saq,
  taskiq, streaq (toniq's own variants are not peers)."""


def render(data: dict[str, Any]) -> str:
    results = data["results"]
    names = [n for n in data["participants"] if BY_NAME[n].backend == "redis"]
    sqlite = [n for n in data["participants"] if BY_NAME[n].backend == "sqlite"]
    sizes = data["sizes"]
    reps = data["reps"]
    out = ["# Benchmarks: toniq and its peers", ""]
    out.append(
        f"Made by `{data['command']}` on {data['started']} in "
        f"{data['duration_s'] / 60:.0f} minutes; every figure is the median of {reps} "
        f"repetition{'s' if reps != 1 else ''}."
    )
    if data.get("quick"):
        out += ["", "**A `--quick` smoke run: small N and 1 repetition; not for comparison.**"]
    elif reps < 3:
        out += ["", f"**Only {reps} repetition(s): figures are single measurements.**"]
    out += [
        "",
        f"N: W1 {sizes['W1']:,}, W1-bulk {sizes['W1-bulk']:,}, W2 {sizes['W2']:,}, "
        f"W3 {sizes['W3']:,}, C100k {sizes['C100k']:,}; T waits at most "
        f"{data['takeover_bound']:.0f} s. How to run it: [bench/README.md](../bench/README.md).",
        "",
        "## Targets (issue 5)",
        "",
        targets(data),
        "",
        "## Redis: throughput",
        "",
        table(data, names, THROUGHPUT, PEERS),
        "",
        "## Redis: latency, 100,000 concurrent jobs, takeover",
        "",
        table(data, names, LATENCY, PEERS),
        "",
        "n/a, with the reason:",
        "",
    ]
    for name in names:
        for workload, why in BY_NAME[name].na.items():
            out.append(f"- {name}, {workload}: {why}")
    details = takeover_details(data)
    if details:
        out += ["", "### Takeover, job by job", "", *details]
    if sqlite:
        out += [
            "",
            "## SQLite: toniq's backend and Huey's SQLite storage",
            "",
            table(data, sqlite, THROUGHPUT[:1] + THROUGHPUT[2:], ("huey-sqlite",)),
        ]
    rtt = results.get("redis-py", {}).get("RTT", [])
    ok = _ok(rtt)
    if ok:
        single = statistics.median(r["rate"] for r in ok)
        piped = statistics.median(r["pipelined"] for r in ok)
        w1 = value(results, "toniq", THROUGHPUT[0])
        out += [
            "",
            "## Baseline: bare redis-py",
            "",
            f"`LPUSH` one call at a time: **{single:,.0f}/s**; pipelined 1,000 at a time: "
            f"{piped:,.0f}/s (redis-py {ok[0]['redis_py']}, hiredis "
            f"{'on' if ok[0]['hiredis'] else 'off'}, in toniq's virtualenv)."
            + (
                f" toniq's W1 is **{100 * w1 / single:.0f} %** of the one-at-a-time rate."
                if w1
                else ""
            ),
            "",
            "Where W1's time goes, and how close an enqueue that is one Lua script can get "
            "to a bare `LPUSH`: `bench/w1_limit.py` "
            "([bench/README.md](../bench/README.md#w1s-limit)).",
        ]
    out += ["", "## How it is measured", "", METHOD, "", "## Configuration", ""]
    for name in data["participants"]:
        out.append(f"- **{name}**: {BY_NAME[name].config}")
    out += [
        "",
        "Job code, enqueue calls and worker commands: `bench/adapters/<library>_bench.py`.",
        "",
        "## Versions",
        "",
        f"Python: {data['python']}; Redis: {data['redis']}.",
        "",
        "| virtualenv | version | every package (pinned in bench/requirements/) |",
        "|---|---|---|",
    ]
    for name, v in data["venvs"].items():
        lines = [f for f in v["freeze"] if not f.startswith("#")]
        freeze = ", ".join(lines) if lines else v.get("error") or ""
        version = package_version(VENVS[name].package if name in VENVS else name, v["freeze"])
        out.append(f"| {name} | {version} | {freeze} |")
    m = data["machine"]
    out += [
        "",
        "## Machine",
        "",
        f"{m.get('cpu', '?')}, {m['cores']} cores, {m.get('memory', '?')} memory; {m['os']}.",
    ]
    fails = failures(data)
    out += ["", "## Failures", ""]
    out += fails or ["None."]
    out += ["", "## Every repetition", "", *raw_table(data), ""]
    return "\n".join(out)
