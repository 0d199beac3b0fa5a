"""The interface every adapter implements (see ``driver.py`` for how it is used)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from common import ENV_SETTINGS, ENV_URL

#: Job kinds: ``noop`` marks and returns; ``sleep`` awaits ``asyncio.sleep(1)`` then marks;
#: ``hang`` marks, then waits (polling shared memory) until the driver releases it.
KINDS = ("noop", "sleep", "hang")
#: How often a hanging job looks at the release flag.
HANG_POLL = 0.02


def url() -> str:
    return os.environ[ENV_URL]


def settings() -> dict[str, Any]:
    raw = os.environ.get(ENV_SETTINGS)
    return json.loads(raw) if raw else {}


def python() -> str:
    return sys.executable


def venv_bin(name: str) -> str:
    """A console script of the running virtual environment (e.g. ``celery``)."""
    return str(Path(sys.executable).parent / name)


class Adapter:
    """Enqueue side of one library. Methods may be plain or ``async`` (set ``is_async``)."""

    #: the methods below are coroutines
    is_async = False
    #: what the bulk API is, or None if the library has none (W1-bulk is then n/a)
    bulk: str | None = None
    #: jobs given to the worker that is killed in workload T (all must run at once on it)
    takeover_jobs = 4

    def worker_argv(self) -> list[str]:
        """The command that starts one worker process, run with ``cwd=bench/``."""
        raise NotImplementedError

    def open(self) -> Any:
        return None

    def enqueue(self, kind: str, i: int) -> Any:
        raise NotImplementedError

    def enqueue_bulk(self, kind: str, indices: list[int]) -> Any:
        raise NotImplementedError

    def close(self) -> Any:
        return None
