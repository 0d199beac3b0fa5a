"""Fixtures for the shop's tests: the recipe from docs/testing.md."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import shop

import toniq.testing


@pytest.fixture(autouse=True)
def clean_shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An empty shop for each test, run in an empty directory to show that no job store
    (the default SQLite file, toniq.sqlite3) is ever created by toniq.testing."""
    shop.reset()
    monkeypatch.chdir(tmp_path)
    yield
    assert not Path("toniq.sqlite3").exists()


@pytest.fixture
def jobs() -> Iterator[toniq.testing.Harness]:
    """Enqueued jobs are collected, not run: assert on them, then ``jobs.drain()``."""
    with toniq.testing.manual() as harness:
        yield harness


@pytest.fixture
def inline_jobs() -> Iterator[toniq.testing.Harness]:
    """Enqueued jobs run at once; a job that fails raises in the test."""
    with toniq.testing.inline() as harness:
        yield harness
