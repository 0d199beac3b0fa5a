"""Jobs as data: the job state machine, stored errors and job records.

The state machine, in one place (``docs/states.md`` tells the same story)::

    enqueue ─► AVAILABLE ──claim──► RUNNING ──ack ok──► done (deleted; a counter is kept)
                  ▲  ▲                 │
                  │  └── hand back ────┤  graceful shutdown of its node
                  │  └── take over ────┤  its node stopped heart-beating (a NodeLost error
                  │                    │  is recorded; too many of them ends in FAILED)
                  │                    └──ack error──► FAILED (kept, with every error)
    SCHEDULED ────┘ (due)

``SCHEDULED`` is the state of a job that waits for its time (delays and
retries); it is part of the stored schema so every backend shares one model.
"""

from __future__ import annotations

import enum
import time
import traceback as tb
from dataclasses import asdict, dataclass, field
from typing import Any


class JobState(enum.StrEnum):
    """Where a stored job is in its life. A finished job is deleted, so DONE is never stored."""

    SCHEDULED = "scheduled"
    AVAILABLE = "available"
    RUNNING = "running"
    FAILED = "failed"
    DONE = "done"


#: The error type recorded when a job's node stopped heart-beating while running it.
NODE_LOST = "toniq.NodeLost"
#: The error type recorded when a node cannot run a job (unknown worker, bad payload).
CANNOT_RUN = "toniq.CannotRun"


@dataclass(frozen=True)
class JobError:
    """One failed run of a job, stored as data (never as a pickled exception).

    ``type`` is the exception's qualified name (``"builtins.ValueError"``), or one of
    toniq's own reasons such as ``"toniq.NodeLost"``.
    """

    type: str
    message: str
    traceback: str
    attempt: int
    node: str | None
    at: float

    @classmethod
    def from_exception(cls, exc: BaseException, *, attempt: int, node: str | None) -> JobError:
        kind = type(exc)
        module = kind.__module__
        name = kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
        return cls(
            type=name,
            message=str(exc),
            traceback="".join(tb.format_exception(exc)),
            attempt=attempt,
            node=node,
            at=time.time(),
        )

    @classmethod
    def reason(cls, type: str, message: str, *, attempt: int, node: str | None) -> JobError:
        """An error that is not an exception: a node died, a payload could not be read."""
        return cls(
            type=type, message=message, traceback="", attempt=attempt, node=node, at=time.time()
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobError:
        return cls(
            type=str(data["type"]),
            message=str(data["message"]),
            traceback=str(data.get("traceback", "")),
            attempt=int(data.get("attempt", 0)),
            node=data.get("node"),
            at=float(data.get("at", 0.0)),
        )

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


@dataclass(frozen=True)
class NewJob:
    """A job as handed to :meth:`Backend.enqueue`: everything needed to store it."""

    id: str
    worker: str
    payload: bytes
    enqueued_at: float
    run_at: float | None = None


@dataclass(frozen=True)
class ClaimedJob:
    """A job leased to a node by :meth:`Backend.claim`.

    ``token`` identifies this one claim: an acknowledgement must carry it, so a node
    whose job was taken over cannot complete or fail it afterwards.
    """

    id: str
    worker: str
    payload: bytes
    attempt: int
    token: str
    enqueued_at: float


@dataclass(frozen=True)
class Outcome:
    """The end of one run, as acknowledged to the backend."""

    id: str
    token: str
    worker: str
    error: JobError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class AckReport:
    """What :meth:`Backend.ack` did: acknowledgements whose claim was no longer valid
    (the job was taken over, handed back or deleted) are rejected and listed here."""

    accepted: int = 0
    rejected: tuple[str, ...] = ()


@dataclass(frozen=True)
class TakeoverReport:
    """What one :meth:`Backend.take_over` call did."""

    dead_nodes: tuple[str, ...] = ()
    requeued: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeInfo:
    """A node as the store knows it."""

    id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    workers: tuple[str, ...] = ()


@dataclass
class JobRecord:
    """A stored job, as returned by :func:`toniq.get_job` and the management API."""

    id: str
    worker: str
    state: JobState
    payload: bytes
    attempt: int
    enqueued_at: float
    run_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    node: str | None = None
    errors: list[JobError] = field(default_factory=list)

    @property
    def last_error(self) -> JobError | None:
        return self.errors[-1] if self.errors else None

    def arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Decode the stored arguments as ``(args, kwargs)``."""
        from toniq.serialization import loads

        return loads(self.payload)
