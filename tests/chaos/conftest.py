"""The chaos suite's fixtures, and its report: every scenario's ledger summary line and fault
log, printed at the end of the run (visible in CI output without ``-s``)."""

from __future__ import annotations

import pytest

from tests.chaos.rig import SUMMARIES
from tests.chaos.rig import make_rig as make_rig  # the fixture


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARIES:
        terminalreporter.section("chaos ledger")
        for line in SUMMARIES:
            terminalreporter.write_line(line)
