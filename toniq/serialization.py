"""How a job's arguments are stored: pickle, so they arrive exactly as enqueued.

The bytes start with a small envelope header (a magic and a format version) so a
node can tell toniq payloads from garbage, and so the format can grow (signing,
see the charter's safety section) without breaking stored jobs.
"""

from __future__ import annotations

import pickle
from typing import Any

from toniq.errors import SerializationError

MAGIC = b"TQ"
VERSION = 1
_HEADER = MAGIC + bytes([VERSION])


def dumps(args: tuple[Any, ...], kwargs: dict[str, Any], *, worker: str = "job") -> bytes:
    """Pickle ``(args, kwargs)``; on failure name the argument that cannot be pickled."""
    try:
        return _HEADER + pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # pickle raises TypeError, AttributeError, PicklingError...
        culprit = _find_culprit(args, kwargs)
        raise SerializationError(
            f"cannot enqueue {worker}: {culprit} cannot be pickled "
            f"({type(exc).__name__}: {exc}); job arguments must be picklable"
        ) from exc


def _find_culprit(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    for index, value in enumerate(args):
        if not _picklable(value):
            return f"positional argument {index} ({type(value).__name__})"
    for key, value in kwargs.items():
        if not _picklable(value):
            return f"argument {key!r} ({type(value).__name__})"
    return "an argument"


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return False
    return True


def loads(payload: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Unpickle a payload made by :func:`dumps`; ``ValueError`` if it is not one."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ValueError(f"payload is {type(payload).__name__}, not bytes")
    data = bytes(payload)
    if data[:2] != MAGIC:
        raise ValueError("payload is not a toniq envelope (bad magic)")
    if data[2:3] != bytes([VERSION]):
        raise ValueError(f"payload has unsupported envelope version {data[2:3]!r}")
    try:
        value = pickle.loads(data[3:])
    except Exception as exc:
        raise ValueError(f"payload cannot be unpickled: {type(exc).__name__}: {exc}") from exc
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not isinstance(value[0], tuple)
        or not isinstance(value[1], dict)
    ):
        raise ValueError("payload does not hold (args, kwargs)")
    return value[0], value[1]
