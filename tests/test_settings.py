"""Settings: durations as seconds or timedelta, the URL from TONIQ_URL, clear errors."""

from __future__ import annotations

from datetime import timedelta

import pytest

import toniq
from toniq.settings import DEFAULT_URL, Settings, redact


def test_defaults_put_takeover_in_toniqs_window() -> None:
    s = Settings()
    assert s.url == DEFAULT_URL == "sqlite:///toniq.sqlite3"
    # Dead after takeover_timeout, noticed within takeover_interval: 10-12 s.
    assert s.takeover_timeout >= 10 and s.takeover_timeout + s.takeover_interval <= 15


def test_durations_accept_timedelta() -> None:
    s = Settings(heartbeat_interval=timedelta(milliseconds=500), takeover_timeout=3)
    assert s.heartbeat_interval == 0.5 and isinstance(s.takeover_timeout, float)


@pytest.mark.parametrize(
    "bad",
    [{"poll_interval": -1}, {"threads": 0}, {"claim_batch": 1.5}, {"task_per_job": "yes"}],
)
def test_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(toniq.ConfigurationError):
        Settings(**bad)  # type: ignore[arg-type]


def test_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TONIQ_URL", "memory://")
    assert Settings.make().url == "memory://"
    assert Settings.make("sqlite:///x.sqlite3").url == "sqlite:///x.sqlite3"
    monkeypatch.delenv("TONIQ_URL")
    assert Settings.make().url == DEFAULT_URL


def test_redact_hides_passwords() -> None:
    assert redact("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact("sqlite:///x") == "sqlite:///x"
