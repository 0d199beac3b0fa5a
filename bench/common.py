"""Helpers shared by the orchestrator (``run.py``), the per-run driver (``driver.py``) and
the job code of every adapter. Standard library only: it is imported in every peer's
virtual environment.

How a job is observed: every job writes ``time.monotonic()`` (system-wide
``CLOCK_MONOTONIC`` on Linux, so comparable between processes) and its process id into its own
slot of a shared-memory file, indexed by the job's number. That costs every library the same
two ``struct.pack_into`` calls (well under a microsecond) and no round trip to Redis.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import signal
import socket
import struct
import sys
import time
from array import array
from collections.abc import Callable
from pathlib import Path

#: Environment variables that tell an adapter module (in the driver and in the worker
#: process) where things are.
ENV_SHM = "BENCH_SHM"
ENV_SIZE = "BENCH_SHM_SIZE"
ENV_URL = "BENCH_URL"
ENV_SETTINGS = "BENCH_SETTINGS"

HEADER = 64  # bytes: [0:8] the "stop hanging" flag (T), the rest reserved
_D = struct.Struct("d")
_Q = struct.Struct("q")


class Marks:
    """A shared-memory file of ``n`` job slots: a start/finish time (float64) and the pid of
    the process that ran the job (int64). Slot ``i`` belongs to job ``i`` only."""

    def __init__(self, path: str, n: int, *, create: bool = False) -> None:
        self.path = path
        self.n = n
        size = HEADER + 16 * n
        flags = os.O_RDWR | (os.O_CREAT | os.O_TRUNC if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._times = HEADER
        self._pids = HEADER + 8 * n

    # -- written by jobs ---------------------------------------------------------------

    def mark(self, i: int) -> None:
        _D.pack_into(self.mm, self._times + 8 * i, time.monotonic())
        _Q.pack_into(self.mm, self._pids + 8 * i, os.getpid())

    def released(self) -> bool:
        """True once the driver set the flag that lets hanging jobs (workload T) return."""
        return bool(_Q.unpack_from(self.mm, 0)[0])

    # -- read by the driver --------------------------------------------------------------

    def release(self) -> None:
        _Q.pack_into(self.mm, 0, 1)

    def times(self) -> array[float]:
        out = array("d")
        out.frombytes(self.mm[self._times : self._times + 8 * self.n])
        return out

    def pids(self) -> array[int]:
        out = array("q")
        out.frombytes(self.mm[self._pids : self._pids + 8 * self.n])
        return out

    def done(self) -> int:
        return self.n - self.times().count(0.0)

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self.mm.close()


_marks: Marks | None = None


def job_marks() -> Marks:
    """The shared-memory file of this benchmark run, opened on first use in a job process
    (and again after a fork: the mapping is shared, so that is fine too)."""
    global _marks
    if _marks is None:
        _marks = Marks(os.environ[ENV_SHM], int(os.environ[ENV_SIZE]))
    return _marks


def mark(i: int) -> None:
    """What every benchmark job calls: record that job ``i`` ran now, in this process."""
    m = _marks if _marks is not None else job_marks()
    m.mark(i)


def shm_dir() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path("/tmp")


# -- processes ---------------------------------------------------------------------------


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGKILL this process if the one that started it dies (no strays after a crash
    or a timeout of the suite)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def new_group_dying_with_parent() -> None:  # pragma: no cover - runs in the child
    os.setpgrp()
    die_with_parent()


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may contain spaces and parentheses: ppid follows the last ")"
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (by parent pid)."""
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    for p in process_tree(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, sig)


def peak_rss_mb(pid: int) -> float:
    """The peak resident set (``VmHWM``) of ``pid`` and its descendants, summed, in MiB."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


# -- a minimal Redis client (the orchestrator has no redis-py) -------------------------


def free_port() -> int:
    """A free loopback TCP port, never Redis's 6379 (not ours on this machine)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379:
            return port


def _resp(*args: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _read_reply(f: object) -> object:
    line = f.readline()  # type: ignore[attr-defined]
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)  # type: ignore[attr-defined]
        return data[:-2]
    if kind == b"*":
        return [_read_reply(f) for _ in range(int(rest))]
    raise RuntimeError(f"bad reply {line!r}")


def redis_command(port: int, *args: str | bytes, db: int = 0, timeout: float = 10.0) -> object:
    """Send one command to the Redis on ``127.0.0.1:port`` (database ``db``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        f = sock.makefile("rb")
        sock.sendall(_resp("SELECT", str(db)) + _resp(*args))
        _read_reply(f)
        return _read_reply(f)


def wait_until(cond: Callable[[], object], timeout: float, step: float = 0.002) -> bool:
    """Poll ``cond()`` until it is true or ``timeout`` seconds passed."""
    end = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(step)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation between closest ranks."""
    s = sorted(values)
    if not s:
        return float("nan")
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)
