"""Shared fixtures: apps on every backend with short timers, and a clean default app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import toniq
import toniq.app

#: Short timers so takeover and polling tests run in well under a second.
FAST: dict[str, Any] = {
    "heartbeat_interval": 0.1,
    "takeover_timeout": 0.6,
    "takeover_interval": 0.1,
    "poll_interval": 0.01,
    "grace_period": 2.0,
}

BACKENDS = ["memory", "sqlite"]


def backend_url(kind: str, tmp_path: Path) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'toniq.sqlite3'}"
    raise ValueError(kind)


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def app(backend_kind: str, tmp_path: Path) -> Iterator[toniq.Toniq]:
    """The default app on each backend, with short timers; closed afterwards."""
    app = toniq.configure(url=backend_url(backend_kind, tmp_path), **FAST)
    yield app
    app.close()
    toniq.app._default = None


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[toniq.Toniq]:
    app = toniq.configure(url=backend_url("sqlite", tmp_path), **FAST)
    yield app
    app.close()
    toniq.app._default = None
