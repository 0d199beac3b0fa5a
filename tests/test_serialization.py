"""Payloads: arguments round-trip as themselves; garbage is refused with a reason."""

from __future__ import annotations

import datetime
import decimal

import pytest

from tests.workers import Point
from toniq.errors import SerializationError
from toniq.serialization import dumps, loads


def test_round_trip_keeps_types() -> None:
    args = (decimal.Decimal("1.10"), datetime.date(2026, 1, 2), Point(1, 2), (1, 2), {1, 2})
    assert loads(dumps(args, {"k": b"v"})) == (args, {"k": b"v"})


def test_unpicklable_argument_is_named() -> None:
    with pytest.raises(SerializationError, match=r"argument 'f' \(function\)"):
        dumps((), {"f": lambda: None}, worker="w.W")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "bad magic"),
        (b"garbage", "bad magic"),
        (b"TQ\x09xxxx", "unsupported envelope version"),
        (b"TQ\x01not pickle", "cannot be unpickled"),
        (dumps((), {})[:-3], "cannot be unpickled"),
    ],
)
def test_bad_payloads_are_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        loads(payload)
