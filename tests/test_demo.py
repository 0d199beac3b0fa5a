"""The README's first command runs this demo; it must keep working."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_runs_and_tells_the_story() -> None:
    # As on a fresh machine: no key configured (SQLite signs with a key of its own).
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONIQ_")}
    result = subprocess.run(
        [sys.executable, "-m", "toniq", "demo", "--jobs", "100"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "ResizeImage 3 (limit 3)" in out
    assert "failed             1 (retries used up" in out
    assert "PaymentDeclined" in out and "3 runs" in out
    assert "retried runs       3" in out  # 2 for the declined card, 1 for a feed
    assert "0 rows in the store" in out
    assert "no-op jobs" in out
