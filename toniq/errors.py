"""Exceptions raised by toniq.

Every exception toniq raises on purpose derives from :class:`ToniqError`, so
``except toniq.ToniqError`` catches them all. Where a built-in category fits
(a bad argument is a ``TypeError``), the exception derives from it too.
"""

from __future__ import annotations


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
    """A job could not be stored. The job does not exist; it is safe to try again."""


class UnknownWorkerError(ToniqError, LookupError):
    """A job names a worker that this process has not registered."""
