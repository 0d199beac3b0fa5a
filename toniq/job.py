"""Jobs as data: the job state machine, stored errors and job records.

The state machine, in one place (``docs/states.md`` tells the same story)::

    enqueue ─► AVAILABLE ──claim──► RUNNING ──ack ok──► done (deleted; a counter is kept)
       │        ▲  ▲                 │
       │        │  ├── hand back ────┤  graceful shutdown of its node
       │        │  └── take over ────┤  its node stopped heart-beating (a NodeLost error
       │        │                    │  is recorded; too many of them ends in FAILED)
       │        │                    ├──ack error, retries left──► SCHEDULED (retrying)
       │        │                    └──ack error, no retry left─► FAILED (kept, with errors)
       │        ├── due, or released by hand ── SCHEDULED (delayed, held or retrying)
       │        └── retried by hand ─────────── FAILED
       └── delay / at / hold ──► SCHEDULED

``attempt`` counts runs that count towards ``retries``: a hand-back and a takeover
give the attempt back (a takeover records a NodeLost error instead).
"""

from __future__ import annotations

import enum
import math
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
#: The error type recorded when a run exceeded its timeout.
TIMEOUT = "toniq.JobTimeout"


def type_name(exc: BaseException) -> str:
    """``ValueError`` for built-ins, ``package.module.Error`` for the rest."""
    kind = type(exc)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


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
        remote = getattr(exc, "toniq_error", None)
        if isinstance(remote, tuple):  # raised in a child process: keep its own story
            name, message, trace = remote
            return cls(
                type=name,
                message=message,
                traceback=trace,
                attempt=attempt,
                node=node,
                at=time.time(),
            )
        return cls(
            type=type_name(exc),
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


#: ``run_at`` of a held job: it waits until released by hand (``toniq.release``).
HELD = math.inf


@dataclass(slots=True)
class NewJob:
    """A job as handed to :meth:`Backend.enqueue`: everything needed to store it.

    ``run_at`` in the future (or :data:`HELD`) stores it SCHEDULED. ``options`` are the
    per-enqueue options a node needs when it runs the job (a JSON-able dict, e.g. timeout).
    Not frozen: ``enqueue_many`` makes one per job, and a frozen dataclass takes four
    times as long to make (0.77 against 0.17 us, of about 10 us per job in W1-bulk).
    """

    id: str
    worker: str
    payload: bytes
    enqueued_at: float
    run_at: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


# ClaimedJob and Outcome are made once per job run: plain slotted dataclasses, as a frozen
# one's __init__ costs 0.7 us more (object.__setattr__ per field); nothing changes them.
@dataclass(slots=True)
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
    options: dict[str, Any] = field(default_factory=dict)
    #: Its node died under it often enough that it now runs alone (see Backend.claim).
    suspect: bool = False


@dataclass(slots=True)
class Outcome:
    """The end of one run, as acknowledged to the backend: success (no error), a retry
    (an error and ``retry_in`` seconds: the job is SCHEDULED again, timed by the store's
    clock) or a failure (FAILED)."""

    id: str
    token: str
    worker: str
    error: JobError | None = None
    retry_in: float | None = None

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
    options: dict[str, Any] = field(default_factory=dict)
    #: The app this record came from: its keys verify the payload in :meth:`arguments`.
    app: Any = field(default=None, repr=False, compare=False)

    @property
    def held(self) -> bool:
        """True for a job held until released by hand."""
        return self.state is JobState.SCHEDULED and self.run_at == HELD

    @property
    def last_error(self) -> JobError | None:
        return self.errors[-1] if self.errors else None

    def arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Verify and decode the stored arguments as ``(args, kwargs)``, with the keys of
        the app the record came from (else the default app). Raises
        :class:`toniq.PayloadError`, unpickling nothing, for a payload a node would refuse
        (``payload`` keeps the raw bytes)."""
        from toniq.app import get_app

        return (self.app or get_app()).arguments(self)
