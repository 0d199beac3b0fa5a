"""The README's first command runs this demo; it must keep working."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_and_tells_the_story() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "toniq", "demo", "--jobs", "100"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "ResizeImage 3 (limit 3)" in out
    assert "failed             1 (retries used up" in out
    assert "PaymentDeclined" in out and "3 runs" in out
    assert "retried runs       3" in out  # 2 for the declined card, 1 for a feed
    assert "0 rows in the store" in out
    assert "no-op jobs" in out
