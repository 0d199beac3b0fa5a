"""How the dashboard shows jobs: arguments that never crash a page, times, states."""

from __future__ import annotations

import itertools
import math
import reprlib
import time
from collections import deque
from datetime import datetime
from typing import Any

from toniq.job import JobRecord, JobState

#: Long arguments are cut here on the job page; lists show a shorter line.
ARGUMENTS_LIMIT = 4000
RAW_LIMIT = 300

_repr = reprlib.Repr()
_repr.maxlevel = 6
_repr.maxstring = 1000
_repr.maxlong = 200
_repr.maxother = 1000
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = _repr.maxfrozenset = 50


def arguments(record: JobRecord, limit: int = ARGUMENTS_LIMIT) -> tuple[str, bool]:
    """``(text, decoded)``: the job's arguments as ``repr`` text, or, when they cannot be
    decoded here (a class this process cannot import, an unsigned or damaged payload),
    the reason and the start of the raw bytes. Never raises: a page must show the rest."""
    try:
        args, kwargs = record.arguments()
        parts = [_safe_repr(a) for a in args] + [f"{k}={_safe_repr(v)}" for k, v in kwargs.items()]
        text, decoded = ", ".join(parts), True
    except Exception as exc:
        try:
            raw = bytes(record.payload)
        except Exception:
            raw = b""
        shown = repr(raw[:RAW_LIMIT]) + (f" … ({len(raw)} bytes)" if len(raw) > RAW_LIMIT else "")
        text, decoded = f"cannot decode here ({type(exc).__name__}: {exc}); raw: {shown}", False
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text, decoded


def _safe_repr(value: Any) -> str:
    try:
        return _repr.repr(value)
    except Exception as exc:  # a user's __repr__ may raise
        return f"<{type(value).__name__}: repr failed: {type(exc).__name__}>"


def when(timestamp: float | None) -> str:
    """Local date and time, to the second."""
    if timestamp is None:
        return "—"
    if math.isinf(timestamp):
        return "held"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def iso(timestamp: float | None) -> str:
    if timestamp is None or math.isinf(timestamp):
        return ""
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def span(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 10 min``, ``3 d 4 h``."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def window_label(seconds: float) -> str:
    """``5 min`` or ``90 s``: how much history the chart shows."""
    whole = int(seconds)
    return f"{whole // 60} min" if whole >= 60 and whole % 60 == 0 else f"{whole} s"


def ago(timestamp: float | None, now: float | None = None) -> str:
    if timestamp is None:
        return "—"
    return f"{span((now or time.time()) - timestamp)} ago"


def until(timestamp: float | None, now: float | None = None) -> str:
    """``in 5 s`` for a future time, ``due`` for a past one, ``held`` for a held job."""
    if timestamp is None:
        return "—"
    if math.isinf(timestamp):
        return "held until released"
    left = timestamp - (now or time.time())
    return f"in {span(left)}" if left > 0 else "due"


def kind(record: JobRecord) -> str:
    """What a scheduled job waits for: ``held``, ``retrying`` (after an error) or
    ``delayed``; other states are their own name."""
    if record.state is JobState.SCHEDULED:
        if record.held:
            return "held"
        return "retrying" if record.errors else "delayed"
    return record.state.value


STATES = ("available", "scheduled", "running", "failed", "done")


def totals(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    out = dict.fromkeys(STATES, 0)
    for per in counts.values():
        for state, n in per.items():
            out[state] = out.get(state, 0) + n
    return out


class RateSampler:
    """Jobs done per second over time, from samples of the store's ``done`` counters.

    Each stats request adds a sample (samples closer than ``min_gap`` merge); samples older
    than ``window`` seconds are dropped. Kept in the server, so a reloaded page still has
    its history."""

    def __init__(self, window: float = 300.0, min_gap: float = 0.2) -> None:
        self.window = window
        self.min_gap = min_gap
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, done: int) -> None:
        samples = self._samples
        if len(samples) > 1 and samples[-1][0] - samples[-2][0] < self.min_gap:
            # The last sample came too soon after its predecessor (many pages polling at
            # once): it was provisional, and the newest replaces it. So samples stay
            # min_gap apart, yet the series always ends with the latest count.
            self._samples[-1] = (now, done)
        else:
            self._samples.append((now, done))
        while self._samples and now - self._samples[0][0] > self.window:
            self._samples.popleft()

    def series(self) -> list[tuple[float, float]]:
        """``(time, jobs per second since the previous sample)`` pairs, oldest first. A
        counter that went down (a store emptied or replaced) counts as zero, not negative."""
        points = []
        for (t0, d0), (t1, d1) in itertools.pairwise(self._samples):
            points.append((t1, max(0, d1 - d0) / (t1 - t0)))
        return points
