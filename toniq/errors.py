"""Exceptions raised by toniq.

Every exception toniq raises on purpose derives from :class:`ToniqError`, so
``except toniq.ToniqError`` catches them all. Where a built-in category fits
(a bad argument is a ``TypeError``), the exception derives from it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toniq.app import JobHandle


class ToniqError(Exception):
    """Base class of every toniq error."""


class ConfigurationError(ToniqError, ValueError):
    """A setting, URL or worker option is invalid."""


class NotAWorkerError(ToniqError, TypeError):
    """Something that is not a toniq worker was given where a worker is needed."""


class SerializationError(ToniqError, TypeError):
    """A job's arguments cannot be pickled; nothing was stored."""


class StoreError(ToniqError):
    """The backend could not carry out an operation; nothing half-written is left."""


class StoreClosedError(StoreError):
    """The backend was closed by :meth:`Backend.close` and cannot be used any more."""


class EnqueueError(StoreError):
    """A job could not be stored. Nothing half-written is left behind. When the store did
    not answer in time (a timeout, a connection dropped mid-call) the message says the job
    *may* have been stored: retrying then risks running it twice, so make it idempotent.

    From :func:`toniq.enqueue_many`, ``stored`` holds the handles of the jobs that were
    stored before the failing batch (empty otherwise)."""

    stored: list[JobHandle]

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.stored = []


class UnknownWorkerError(ToniqError, LookupError):
    """A job names a worker that this process has not registered."""


class JobTimeout(ToniqError, TimeoutError):
    """A run took longer than its ``timeout`` and was stopped (recorded as
    ``toniq.JobTimeout`` in the job's errors)."""

    toniq_error: tuple[str, str, str] | None = None


class JobProcessError(ToniqError):
    """A ``def`` job with a timeout runs in a child process; this carries the child's
    error (its type, message and traceback) back to the node."""

    def __init__(self, type: str, message: str, traceback: str) -> None:
        super().__init__(message)
        self.toniq_error = (type, message, traceback)


class MissingSecretError(ConfigurationError):
    """No signing key is configured where one is needed (the Redis backend): set
    ``TONIQ_SECRET`` or ``toniq.configure(secret=...)``. See docs/security.md."""


class PayloadTooLargeError(SerializationError, EnqueueError):
    """A job's pickled arguments are larger than ``max_payload_size``; nothing was stored."""


class PayloadError(ToniqError, ValueError):
    """A stored payload cannot be trusted or read: not a toniq envelope, an unknown key, a
    bad or missing signature, signed for another job, larger than allowed, or not
    unpicklable. A node fails such a job as ``toniq.CannotRun`` without unpickling it."""
