"""Job events: what happened to a job, for hooks, tests and tools (like Toniq's JobEvent).

Subscribe a callback to an app (``toniq.subscribe(callback)``), or define
``on_success`` / ``on_retry`` / ``on_failure`` on a worker. Callbacks run on the node
that ran the job, after the outcome is stored; a callback that raises is logged and
changes nothing else.
"""

from __future__ import annotations

import enum
import functools
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from toniq.job import JobError

if TYPE_CHECKING:
    from toniq.worker import Worker

logger = logging.getLogger("toniq")


class EventKind(enum.StrEnum):
    DONE = "done"
    RETRYING = "retrying"
    FAILED = "failed"


@dataclass(frozen=True)
class JobEvent:
    """One run's end. ``error`` is set for RETRYING and FAILED; ``retry_at`` (Unix time) for
    RETRYING. ``persisted`` is ``False`` for ``persist=False`` jobs."""

    kind: EventKind
    job_id: str
    worker: str
    attempt: int
    node: str | None
    duration: float
    error: JobError | None = None
    retry_at: float | None = None
    persisted: bool = True


Callback = Callable[[JobEvent], object]


class EventBus:
    """Callbacks that receive every :class:`JobEvent` of an app's nodes in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callback] = []
        self._enqueue_callbacks: list[Callable[[str, bool], object]] = []

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call ``callback(event)`` for each event; returns a function that unsubscribes."""
        with self._lock:
            self._callbacks = [*self._callbacks, callback]

        def unsubscribe() -> None:
            with self._lock:
                self._callbacks = [c for c in self._callbacks if c is not callback]

        return unsubscribe

    @contextmanager
    def listen(self) -> Iterator[queue.Queue[JobEvent]]:
        """A queue that receives events while the ``with`` block runs::

        with app.events.listen() as events:
            ...
            event = events.get(timeout=5)
        """
        q: queue.Queue[JobEvent] = queue.Queue()
        unsubscribe = self.subscribe(q.put)
        try:
            yield q
        finally:
            unsubscribe()

    def on_enqueue(self, callback: Callable[[str, bool], object]) -> Callable[[], None]:
        """Call ``callback(worker_name, persisted)`` after each job enqueued in this process
        (stored, or handed to the local runner for ``persist=False``), e.g. for metrics.
        Returns a function that unsubscribes."""
        with self._lock:
            self._enqueue_callbacks = [*self._enqueue_callbacks, callback]

        def unsubscribe() -> None:
            with self._lock:
                self._enqueue_callbacks = [c for c in self._enqueue_callbacks if c is not callback]

        return unsubscribe

    def enqueued(self, worker: str, persisted: bool) -> None:
        for callback in self._enqueue_callbacks:  # a snapshot, as in emit()
            try:
                callback(worker, persisted)
            except Exception:
                logger.exception("enqueue hook %r failed on a job of %s", callback, worker)

    def emit(self, event: JobEvent) -> None:
        for callback in self._callbacks:  # a snapshot: subscribe() replaces the list
            call_hook(callback, event)


_HOOKS = {
    EventKind.DONE: "on_success",
    EventKind.RETRYING: "on_retry",
    EventKind.FAILED: "on_failure",
}


def emit(bus: EventBus, event: JobEvent, worker: type[Worker] | None) -> None:
    """Run the worker's own hook for this event, then the app's subscribers."""
    if worker is not None and _overrides(worker, _HOOKS[event.kind]):
        hook = _HOOKS[event.kind]
        try:
            method = getattr(worker(), hook)
        except Exception:
            logger.exception("could not make %s to call its %s hook", worker.worker_name, hook)
        else:
            call_hook(method, event)
    bus.emit(event)


def has_listeners(bus: EventBus, kind: EventKind, worker: type[Worker] | None) -> bool:
    """Whether :func:`emit` would call anything for an event of ``kind``."""
    return bool(bus._callbacks) or (worker is not None and _overrides(worker, _HOOKS[kind]))


def _overrides(worker: type[Worker], hook: str) -> bool:
    """Whether ``worker`` has a hook of its own (the base class's do nothing): most have
    none, and making an instance to call an empty method cost every job about 1 us. Asked
    each time (not remembered per class), so a hook set on a class later still runs."""
    return getattr(worker, hook, None) is not _base_hook(hook)


@functools.cache
def _base_hook(hook: str) -> object:
    from toniq.worker import Worker  # toniq.worker imports this module

    return getattr(Worker, hook)


def call_hook(callback: Callable[[JobEvent], object], event: JobEvent) -> None:
    """Run one hook; a failing hook is logged and never reaches the node."""
    try:
        callback(event)
    except Exception:
        logger.exception(
            "hook %r failed on %s event of job %s (%s)",
            callback,
            event.kind.value,
            event.job_id,
            event.worker,
        )
