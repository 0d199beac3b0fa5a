"""Test helpers for code that enqueues jobs: run them inline, or collect them and assert.

Two modes, each a context manager that takes over enqueue on one app (the default app
unless you pass one) and gives it back on exit. Neither opens the store: no SQLite file is
created and no Redis is needed.

- :func:`inline`: every job runs at once, in the caller, when it is enqueued. A job that
  fails raises its own exception to the caller (``raise_errors=False`` collects it instead).
- :func:`manual`: jobs are only collected. Assert on them, then run them with
  :meth:`Harness.drain`.

Example::

    import toniq.testing

    def test_checkout_sends_a_receipt():
        with toniq.testing.manual() as jobs:
            checkout(order)
            jobs.assert_enqueued(SendReceipt, order.id)
            jobs.drain()
        assert outbox == [...]

Jobs still get their arguments as a node would: unpickled from the stored payload (so a
mutation after enqueue does not show, and arguments that cannot be pickled are refused at
enqueue), while ``persist=False`` jobs get the objects themselves. Each run emits the same
:class:`~toniq.JobEvent` to ``app.events`` and calls the worker's ``on_success`` /
``on_retry`` / ``on_failure`` hooks, as a node does. ``docs/testing.md`` lists what differs
from production.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, TypeVar

from toniq.app import Interceptor, JobHandle, Toniq, get_app
from toniq.errors import ConfigurationError, SerializationError, ToniqError
from toniq.events import EventKind, JobEvent, emit
from toniq.job import CANNOT_RUN, HELD, JobError, JobRecord, JobState, NewJob
from toniq.retries import backoff_for, log_failure, retries_for
from toniq.serialization import open_payload
from toniq.signing import Keyring
from toniq.timeouts import run_async
from toniq.worker import Worker, registry, resolve

__all__ = [
    "DEFAULT_LIMIT",
    "NODE",
    "DrainLimitError",
    "EnqueuedJob",
    "Harness",
    "JobResult",
    "inline",
    "manual",
]

logger = logging.getLogger("toniq")
T = TypeVar("T")

#: The ``node`` of events and errors of jobs run by a test mode.
NODE = "toniq.testing"
#: The most job runs of one drain (or one inline enqueue, with the jobs it enqueues).
DEFAULT_LIMIT = 10_000

Mode = Literal["inline", "manual"]
_WAITING = (JobState.AVAILABLE, JobState.SCHEDULED)


class DrainLimitError(ToniqError, RuntimeError):
    """A drain (or an inline enqueue) ran ``limit`` jobs and more kept coming: most likely a
    job that enqueues itself (or a cycle of jobs). The jobs not run yet stay pending."""


class _Unreadable(SerializationError):
    """A stored payload that cannot be unpickled: a node fails such a job as
    ``toniq.CannotRun`` without running it, and so does a test mode."""


# -- what was enqueued, and what happened ---------------------------------------------------


@dataclass(eq=False)
class EnqueuedJob:
    """One job a test mode collected, as enqueued, and where it is now.

    ``args``/``kwargs`` are what ``perform`` will receive: unpickled from the payload (a
    snapshot taken at enqueue) for stored jobs, the objects themselves for ``persist=False``
    ones. ``options`` are the enqueue options given with ``W.with_options(...)``.
    ``state`` is ``available`` or ``scheduled`` until the job runs, ``running`` while it
    runs, then ``done`` or ``failed``.
    """

    id: str
    worker: str
    worker_class: type[Worker]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: dict[str, Any]
    #: The pickled arguments, exactly as a store would keep them (``None``: persist=False).
    payload: bytes | None
    enqueued_at: float
    #: Unix time a delayed job is due; ``math.inf`` for a held one; ``None``: at once.
    run_at: float | None
    state: JobState
    attempt: int = 0
    errors: list[JobError] = field(default_factory=list)
    started_at: float | None = None
    finished_at: float | None = None
    #: The options a store would keep with the job (e.g. ``timeout``).
    job_options: dict[str, Any] = field(default_factory=dict)
    #: The app that enqueued it, and the keys its payload was signed with.
    app: Any = field(default=None, repr=False)
    keyring: Keyring | None = field(default=None, repr=False)

    @property
    def persisted(self) -> bool:
        """``False`` for ``persist=False`` jobs, which a store never sees."""
        return self.payload is not None

    @property
    def held(self) -> bool:
        """True for a job enqueued with ``hold=True`` (due only when drained with
        ``scheduled=True``)."""
        return self.run_at == HELD

    def due(self, now: float | None = None) -> bool:
        """True if a node would run it now: not delayed into the future, not held."""
        if self.run_at is None:
            return True
        return self.run_at <= (time.time() if now is None else now)

    def record(self) -> JobRecord | None:
        """The job as a store would show it (what ``handle.info()`` returns): ``None``
        once done (a done job is deleted) and for ``persist=False`` jobs."""
        if self.payload is None or self.state is JobState.DONE:
            return None
        return JobRecord(
            id=self.id,
            worker=self.worker,
            state=self.state,
            payload=self.payload,
            attempt=self.attempt,
            enqueued_at=self.enqueued_at,
            run_at=self.run_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            node=NODE if self.started_at is not None else None,
            errors=list(self.errors),
            options=dict(self.job_options),
            app=self.app,
        )

    def __str__(self) -> str:
        return f"{_call_text(self.worker, self.args, self.kwargs)} [{self._where()}]"

    def __repr__(self) -> str:
        return f"<EnqueuedJob {self.id} {self}>"

    def _where(self) -> str:
        where = self.state.value
        if self.held:
            where += ", held"
        elif self.run_at is not None and self.state is JobState.SCHEDULED:
            where += f", due in {self.run_at - time.time():.0f}s"
        if not self.persisted:
            where += ", persist=False"
        return where


@dataclass(frozen=True)
class JobResult:
    """What happened to one job a test mode ran: ``outcome`` is ``done`` or ``failed``
    (after any retries), ``attempts`` the runs it took, ``events`` one per run.

    On failure, ``error`` is the stored form (type, message, traceback) and ``exception``
    the exception itself. ``value`` is what ``perform`` returned (a node ignores it).
    """

    job: EnqueuedJob
    outcome: EventKind
    attempts: int
    error: JobError | None
    exception: Exception | None
    value: Any
    events: tuple[JobEvent, ...]

    @property
    def ok(self) -> bool:
        return self.outcome is EventKind.DONE

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def worker(self) -> str:
        return self.job.worker

    @property
    def args(self) -> tuple[Any, ...]:
        return self.job.args

    @property
    def kwargs(self) -> dict[str, Any]:
        return self.job.kwargs

    def __repr__(self) -> str:
        error = f" {self.error}" if self.error is not None else ""
        return (
            f"<JobResult {_call_text(self.worker, self.args, self.kwargs)} "
            f"{self.outcome.value} after {self.attempts} run(s){error}>"
        )


@dataclass(frozen=True, repr=False, eq=False)
class _Handle(JobHandle):
    """A JobHandle whose ``info()`` reads the test mode's copy instead of the store."""

    job: EnqueuedJob | None = field(default=None, compare=False)

    def info(self) -> JobRecord | None:
        return None if self.job is None else self.job.record()


@dataclass(eq=False)
class _Session:
    """One run of jobs until quiet: an inline enqueue, or a drain. Jobs enqueued by its
    jobs (in their context) join its queue when ``accept`` says so."""

    harness: Harness
    accept: Callable[[EnqueuedJob], bool]
    queue: collections.deque[EnqueuedJob]
    rescan: bool
    limit: int
    runs: int = 0
    open: bool = True
    results: list[JobResult] = field(default_factory=list)


_session: contextvars.ContextVar[_Session | None] = contextvars.ContextVar(
    "toniq_testing_session", default=None
)


# -- the harness ------------------------------------------------------------------------------


class Harness:
    """What :func:`inline` and :func:`manual` return: it takes over enqueue on ``app``
    while its ``with`` block runs, keeps every enqueued job, and runs them (at once in
    inline mode, on :meth:`drain` in both modes).

    Example::

        with toniq.testing.manual() as jobs:
            SendReceipt.enqueue(42)
            jobs.assert_enqueued(SendReceipt, 42)
            [result] = jobs.drain()
            assert result.ok
    """

    def __init__(
        self,
        app: Toniq | None = None,
        mode: Mode = "manual",
        *,
        retries: bool | int = False,
        raise_errors: bool = True,
        scheduled: bool = False,
        limit: int = DEFAULT_LIMIT,
    ) -> None:
        if mode not in ("inline", "manual"):
            raise ConfigurationError(f"mode must be 'inline' or 'manual', got {mode!r}")
        if not isinstance(retries, bool) and (not isinstance(retries, int) or retries < 0):
            raise ConfigurationError(
                f"retries must be False, True (as configured) or an int >= 0, got {retries!r}"
            )
        _check_limit(limit)
        self.app = app if app is not None else get_app()
        self.mode: Mode = mode
        #: ``False``: one run per job; ``True``: retries as configured; ``n``: n retries.
        self.retries = retries
        self.raise_errors = raise_errors
        #: Inline mode only: run delayed and held jobs at once too.
        self.scheduled = scheduled
        self.limit = limit
        self._lock = threading.RLock()
        self._jobs: list[EnqueuedJob] = []
        self._results: list[JobResult] = []
        self._installed = False
        self._previous: Interceptor | None = None

    def __repr__(self) -> str:
        return f"<toniq.testing.Harness {self.mode} {len(self._jobs)} job(s) on {self.app!r}>"

    # -- install ------------------------------------------------------------------------

    def __enter__(self) -> Harness:
        if self._installed:
            raise ToniqError("this toniq.testing harness is already in use")
        self._previous = self.app.interceptor
        self.app.interceptor = self
        self._installed = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.app.interceptor = self._previous
        self._previous = None
        self._installed = False

    # -- what was enqueued ----------------------------------------------------------------

    @property
    def jobs(self) -> list[EnqueuedJob]:
        """Every job enqueued so far, in order."""
        with self._lock:
            return list(self._jobs)

    @property
    def results(self) -> list[JobResult]:
        """Every job run so far (inline and drained), in the order they finished."""
        with self._lock:
            return list(self._results)

    @property
    def failures(self) -> list[JobResult]:
        """The jobs that failed for good (useful with ``raise_errors=False``)."""
        return [r for r in self.results if not r.ok]

    def enqueued(self, worker: Any = None) -> list[EnqueuedJob]:
        """Jobs enqueued so far, of ``worker`` if given (a worker class, a ``@toniq.worker``
        function or a worker name), whether they ran or not. Example::

            assert [j.args for j in jobs.enqueued(SendReceipt)] == [(42,)]
        """
        name = None if worker is None else _name_of(worker)
        return [j for j in self.jobs if name is None or j.worker == name]

    def pending(self, worker: Any = None) -> list[EnqueuedJob]:
        """Jobs that have not run yet (due, delayed or held), of ``worker`` if given."""
        return [j for j in self.enqueued(worker) if j.state in _WAITING]

    def clear(self) -> None:
        """Forget every collected job and result (pending jobs are dropped unrun)."""
        with self._lock:
            self._jobs.clear()
            self._results.clear()

    def assert_enqueued(self, worker: Any, /, *args: Any, **kwargs: Any) -> EnqueuedJob:
        """Assert that a job of ``worker`` with these arguments was enqueued, and return
        the first such job. Arguments match as ``perform`` would receive them (positional or
        keyword, defaults filled in), compared with ``==``, so ``unittest.mock.ANY`` matches
        anything. With no arguments, any job of ``worker`` matches. Example::

            job = jobs.assert_enqueued(ChargeCard, order.id, amount=ANY)
            assert job.options == {"delay": 60.0}
        """
        name = _name_of(worker)
        candidates = self.enqueued(name)
        matching = _matching(name, candidates, args, kwargs)
        if matching:
            return matching[0]
        wanted = "a job of " + name if not args and not kwargs else _call_text(name, args, kwargs)
        raise AssertionError(f"{wanted} was not enqueued.\n{self._listing(candidates, name)}")

    def assert_not_enqueued(self, worker: Any, /, *args: Any, **kwargs: Any) -> None:
        """Assert that no job of ``worker`` with these arguments (any arguments, if none
        are given) was enqueued. Example::

            jobs.assert_not_enqueued(SendReceipt)
        """
        name = _name_of(worker)
        matching = _matching(name, self.enqueued(name), args, kwargs)
        if matching:
            wanted = (
                "a job of " + name if not args and not kwargs else _call_text(name, args, kwargs)
            )
            found = "\n".join(_lines("", matching)[1:])
            raise AssertionError(f"{wanted} was enqueued {len(matching)} time(s):\n{found}")

    def _listing(self, candidates: list[EnqueuedJob], name: str) -> str:
        everything = self.jobs
        if not everything:
            return "Nothing was enqueued."
        lines = _lines(f"Jobs of {name} that were enqueued", candidates)
        if not candidates:
            lines = [f"No job of {name} was enqueued."]
        lines += _lines(
            "Other jobs that were enqueued", [j for j in everything if j.worker != name]
        )
        return "\n".join(lines)

    # -- running --------------------------------------------------------------------------

    def drain(
        self,
        *,
        scheduled: bool = False,
        worker: Any = None,
        raise_errors: bool | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[JobResult]:
        """Run every pending job that is due, and the jobs they enqueue, until none is
        left; return what happened, in order. Example::

            results = jobs.drain()
            assert [(r.worker, r.outcome) for r in results] == [("shop.ChargeCard", "done")]

        ``scheduled=True`` runs delayed and held jobs too (at once, in due order);
        ``worker`` runs only that worker's jobs. Retries follow the harness's ``retries``.
        If a job failed for good and ``raise_errors`` (default: the harness's) is true, the
        first failure's exception is raised once the drain is done (the results stay in
        :attr:`results`). ``async def`` jobs run under ``asyncio.run`` (or in a helper thread
        if an event loop already runs here): from async code, ``await`` :meth:`drain_async`.
        Raises :class:`DrainLimitError` after ``limit`` runs.
        """
        return self._run(self._drain_session(scheduled, worker, limit), raise_errors)

    async def drain_async(
        self,
        *,
        scheduled: bool = False,
        worker: Any = None,
        raise_errors: bool | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[JobResult]:
        """The async twin of :meth:`drain`: ``async def`` jobs are awaited on the caller's
        event loop, ``def`` jobs run in a thread (``asyncio.to_thread``). Example::

            results = await jobs.drain_async()
        """
        return await self._run_async(self._drain_session(scheduled, worker, limit), raise_errors)

    def _drain_session(self, scheduled: bool, worker: Any, limit: int) -> _Session:
        _check_limit(limit)
        name = None if worker is None else _name_of(worker)

        def accept(job: EnqueuedJob) -> bool:
            return (name is None or job.worker == name) and (scheduled or job.due())

        waiting = sorted((j for j in self.pending() if accept(j)), key=_due_order)
        return _Session(self, accept, collections.deque(waiting), rescan=True, limit=limit)

    # -- the interceptor: called by Toniq.enqueue / enqueue_async ----------------------------

    def enqueue(
        self,
        app: Toniq,
        worker: type[Worker],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
        job: NewJob | None,
    ) -> JobHandle:
        """Take one enqueued job (called by ``Toniq.enqueue``, not by tests)."""
        entry, session = self._take(app, worker, args, kwargs, options, job)
        if session is not None:
            self._run(session, None)
        return self._handle(app, entry)

    async def enqueue_async(
        self,
        app: Toniq,
        worker: type[Worker],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
        job: NewJob | None,
    ) -> JobHandle:
        """Take one enqueued job (called by ``Toniq.enqueue_async``, not by tests)."""
        entry, session = self._take(app, worker, args, kwargs, options, job)
        if session is not None:
            await self._run_async(session, None)
        return self._handle(app, entry)

    def _take(
        self,
        app: Toniq,
        worker: type[Worker],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
        job: NewJob | None,
    ) -> tuple[EnqueuedJob, _Session | None]:
        """Collect the job; return a new session to run it in, if it runs now."""
        entry = _collect(app, worker, args, kwargs, options, job)
        with self._lock:
            self._jobs.append(entry)
        inline_now = self.mode == "inline" and (self.scheduled or entry.due())
        current = _session.get()
        if current is not None and current.harness is self and current.open:
            # Enqueued by a job this harness is running: it runs after that job, in the
            # same session (a node would run it later too, not inside the enqueuing job).
            if inline_now or current.accept(entry):
                current.queue.append(entry)
            return entry, None
        if not inline_now:
            return entry, None

        def accept(job: EnqueuedJob) -> bool:
            return self.scheduled or job.due()

        return entry, _Session(
            self, accept, collections.deque([entry]), rescan=False, limit=self.limit
        )

    @staticmethod
    def _handle(app: Toniq, entry: EnqueuedJob) -> JobHandle:
        return _Handle(
            id=entry.id, worker=entry.worker, persisted=entry.persisted, app=app, job=entry
        )

    # -- sessions ---------------------------------------------------------------------------

    def _run(self, session: _Session, raise_errors: bool | None) -> list[JobResult]:
        with self._running(session):
            while (job := self._next(session)) is not None:
                self._record(session, self._execute(job))
        self._finish(session.results, raise_errors)
        return session.results

    async def _run_async(self, session: _Session, raise_errors: bool | None) -> list[JobResult]:
        with self._running(session):
            while (job := self._next(session)) is not None:
                self._record(session, await self._execute_async(job))
        self._finish(session.results, raise_errors)
        return session.results

    @contextmanager
    def _running(self, session: _Session) -> Iterator[_Session]:
        token = _session.set(session)
        try:
            yield session
        finally:
            session.open = False
            _session.reset(token)

    def _next(self, session: _Session) -> EnqueuedJob | None:
        """The next job of the session, marked running; ``None`` once it is quiet."""
        with self._lock:
            while True:
                while session.queue:
                    job = session.queue.popleft()
                    if job.state not in _WAITING:
                        continue  # already run (queued twice, or run by another session)
                    if session.runs >= session.limit:
                        session.queue.appendleft(job)
                        raise DrainLimitError(_limit_message(session))
                    session.runs += 1
                    job.state = JobState.RUNNING
                    return job
                if not session.rescan:
                    return None
                # Jobs enqueued outside the session's context (another thread) or now due.
                more = sorted((j for j in self.pending() if session.accept(j)), key=_due_order)
                if not more:
                    return None
                session.queue.extend(more)

    def _record(self, session: _Session, result: JobResult) -> None:
        session.results.append(result)
        with self._lock:
            self._results.append(result)

    def _finish(self, results: list[JobResult], raise_errors: bool | None) -> None:
        if not (self.raise_errors if raise_errors is None else raise_errors):
            return
        failed = [r for r in results if not r.ok and r.exception is not None]
        if not failed:
            return
        first = failed[0]
        assert first.exception is not None
        note = (
            f"(toniq.testing: job {first.id} of {first.worker} failed for good after "
            f"{first.attempts} run(s), in {self.mode} mode"
        )
        if len(failed) > 1:
            note += f"; {len(failed) - 1} more job(s) failed too, see .failures"
        first.exception.add_note(note + ")")
        raise first.exception

    # -- one job, with its retries ---------------------------------------------------------------

    def _execute(self, job: EnqueuedJob) -> JobResult:
        events: list[JobEvent] = []
        while True:
            started = self._begin(job)
            value: Any = None
            failure: Exception | None = None
            try:
                value = self._call(job)
            except Exception as exc:
                failure = exc
            event = self._settle(job, failure, started)
            events.append(event)
            if event.kind is not EventKind.RETRYING:
                return self._result(job, events, failure, value)

    async def _execute_async(self, job: EnqueuedJob) -> JobResult:
        events: list[JobEvent] = []
        while True:
            started = self._begin(job)
            value: Any = None
            failure: Exception | None = None
            try:
                value = await self._call_async(job)
            except Exception as exc:
                failure = exc
            event = self._settle(job, failure, started)
            events.append(event)
            if event.kind is not EventKind.RETRYING:
                return self._result(job, events, failure, value)

    @staticmethod
    def _begin(job: EnqueuedJob) -> float:
        job.attempt += 1
        job.started_at = time.time()
        job.state = JobState.RUNNING
        return time.monotonic()

    @staticmethod
    def _result(
        job: EnqueuedJob, events: list[JobEvent], failure: Exception | None, value: Any
    ) -> JobResult:
        last = events[-1]
        return JobResult(
            job=job,
            outcome=last.kind,
            attempts=len(events),
            error=last.error,
            exception=failure,
            value=value if failure is None else None,
            events=tuple(events),
        )

    def _call(self, job: EnqueuedJob) -> Any:
        """One run from sync code: ``def perform`` here, in this thread (without its
        timeout); ``async def perform`` under ``asyncio.run``, with its timeout."""
        args, kwargs = _arguments(job)
        instance = job.worker_class()
        if job.worker_class.is_async:
            return _run_coroutine(lambda: _perform_async(instance, args, kwargs, _timeout(job)))
        # A copy of the context, as a node's thread pool runs it: a job's context
        # variables do not leak into the test.
        return contextvars.copy_context().run(instance.perform, *args, **kwargs)

    async def _call_async(self, job: EnqueuedJob) -> Any:
        """One run from async code: ``async def perform`` as a task on this loop (its own
        context, as on a node), ``def perform`` in a thread."""
        args, kwargs = _arguments(job)
        instance = job.worker_class()
        if job.worker_class.is_async:
            return await asyncio.create_task(_perform_async(instance, args, kwargs, _timeout(job)))
        return await asyncio.to_thread(instance.perform, *args, **kwargs)

    def _settle(self, job: EnqueuedJob, failure: Exception | None, started: float) -> JobEvent:
        """Record one run's end like a node: state, error, log lines, event and hooks."""
        cls = job.worker_class
        error: JobError | None = None
        retry_in: float | None = None
        if failure is None:
            kind = EventKind.DONE
        else:
            if isinstance(failure, _Unreadable):
                error = JobError.reason(CANNOT_RUN, str(failure), attempt=job.attempt, node=NODE)
                logger.error("job %s (%s) cannot run: %s", job.id, job.worker, error.message)
            else:
                error = JobError.from_exception(failure, attempt=job.attempt, node=NODE)
                retries = self._retries_of(job)
                if job.attempt <= retries:
                    retry_in = max(0.0, float(backoff_for(cls, self.app.settings)(job.attempt)))
                if job.persisted:
                    log_failure(job.id, job.worker, job.attempt, retries, error, retry_in, failure)
                else:
                    logger.error(
                        "job %s (%s, persist=False) failed: %s",
                        job.id,
                        job.worker,
                        error,
                        exc_info=failure,
                    )
            job.errors.append(error)
            kind = EventKind.FAILED if retry_in is None else EventKind.RETRYING
        if kind is not EventKind.RETRYING:
            job.state = JobState.DONE if kind is EventKind.DONE else JobState.FAILED
            job.finished_at = time.time()
        event = JobEvent(
            kind,
            job.id,
            job.worker,
            job.attempt,
            NODE,
            time.monotonic() - started,
            error,
            None if retry_in is None else time.time() + retry_in,
            persisted=job.persisted,
        )
        self._emit(event, cls)
        return event

    def _retries_of(self, job: EnqueuedJob) -> int:
        """Retries this job gets here: none for persist=False jobs (as on a node)."""
        if not job.persisted or self.retries is False:
            return 0
        if self.retries is True:
            return retries_for(job.worker_class, self.app.settings)
        return self.retries

    def _emit(self, event: JobEvent, cls: type[Worker]) -> None:
        """The worker's hook, then the app's subscribers, as a node does."""
        emit(self.app.events, event, cls)


# -- the two modes ----------------------------------------------------------------------------


def inline(
    app: Toniq | None = None,
    *,
    retries: bool | int = False,
    raise_errors: bool = True,
    scheduled: bool = False,
    limit: int = DEFAULT_LIMIT,
) -> Harness:
    """Run every enqueued job at once, in the caller, while the ``with`` block runs.

    Example::

        with toniq.testing.inline() as jobs:
            SendReceipt.enqueue(42)           # has run when enqueue returns
        assert outbox == ["receipt 42"]

    - ``def perform`` runs in the caller's thread; ``async def perform`` runs under
      ``asyncio.run`` from sync code, or is awaited on the caller's loop from
      ``enqueue_async``.
    - ``retries``: ``False`` (default) runs each job once; ``True`` retries as configured
      (the worker's ``retries``, else the app's), at once, without waiting for the
      backoff; an int gives every job that many retries. ``persist=False`` jobs are never
      retried, as in production.
    - ``raise_errors`` (default ``True``): a job that fails for good raises its exception
      from ``enqueue``; with ``False`` it is only recorded (:attr:`Harness.failures`).
    - Delayed and held jobs are kept, not run (see :meth:`Harness.drain` with
      ``scheduled=True``), unless ``scheduled=True``.
    - Jobs enqueued by a running job run right after it, in the same ``enqueue`` call.
    """
    return Harness(
        app, "inline", retries=retries, raise_errors=raise_errors, scheduled=scheduled, limit=limit
    )


def manual(
    app: Toniq | None = None,
    *,
    retries: bool | int = False,
    raise_errors: bool = True,
) -> Harness:
    """Collect enqueued jobs without running them, while the ``with`` block runs.

    Example::

        with toniq.testing.manual() as jobs:
            checkout(order)
            jobs.assert_enqueued(ChargeCard, order.id, amount=Decimal("9.99"))
            jobs.assert_not_enqueued(SendReceipt)
            jobs.drain()                       # runs them, and what they enqueue

    ``persist=False`` jobs are collected too. ``retries`` and ``raise_errors`` apply to
    :meth:`Harness.drain`, as in :func:`inline`.
    """
    return Harness(app, "manual", retries=retries, raise_errors=raise_errors)


# -- helpers ----------------------------------------------------------------------------------


def _collect(
    app: Toniq,
    worker: type[Worker],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    options: dict[str, Any],
    job: NewJob | None,
) -> EnqueuedJob:
    now = time.time()
    if job is None:
        return EnqueuedJob(
            id=uuid.uuid4().hex,
            worker=worker.worker_name,
            worker_class=worker,
            args=args,
            kwargs=kwargs,
            options=dict(options),
            payload=None,
            enqueued_at=now,
            run_at=None,
            state=JobState.AVAILABLE,
            app=app,
        )
    keyring = app._enqueue_keyring()  # what signed job.payload
    try:
        seen_args, seen_kwargs = _open(job.payload, keyring, job)  # a snapshot, as stored
    except ValueError:
        seen_args, seen_kwargs = args, kwargs  # fails when run, as on a node
    scheduled = job.run_at is not None and job.run_at > now
    return EnqueuedJob(
        id=job.id,
        worker=job.worker,
        worker_class=worker,
        args=seen_args,
        kwargs=seen_kwargs,
        options=dict(options),
        payload=job.payload,
        enqueued_at=job.enqueued_at,
        run_at=job.run_at,
        state=JobState.SCHEDULED if scheduled else JobState.AVAILABLE,
        job_options=dict(job.options),
        app=app,
        keyring=keyring,
    )


def _open(
    payload: bytes, keyring: Keyring, job: NewJob | EnqueuedJob
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Verify and unpickle as a node does."""
    return open_payload(
        payload, keyring, job_id=job.id, worker=job.worker, enqueued_at=job.enqueued_at
    )


def _arguments(job: EnqueuedJob) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A fresh copy of the arguments for each run, as a node decodes each claim."""
    if job.payload is None:
        return job.args, job.kwargs
    try:
        assert job.keyring is not None
        return _open(job.payload, job.keyring, job)
    except ValueError as exc:
        raise _Unreadable(f"cannot read the job's arguments: {exc}") from exc


def _timeout(job: EnqueuedJob) -> float | None:
    timeout = job.options.get("timeout") or job.worker_class.worker_options.timeout
    return None if timeout is None else float(timeout)


async def _perform_async(
    instance: Worker, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None
) -> Any:
    returned: list[Any] = []

    async def call() -> None:
        returned.append(await instance.perform(*args, **kwargs))

    await run_async(call, timeout)
    return returned[0] if returned else None


def _run_coroutine(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to its end from sync code: ``asyncio.run`` here, or in a helper
    thread if an event loop already runs in this thread (sync code in an async test)."""

    async def main() -> T:
        return await factory()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    if not running:  # (outside the except block, so a job's error has no chained RuntimeError)
        return asyncio.run(main())
    box: dict[str, Any] = {}
    context = contextvars.copy_context()

    def target() -> None:
        try:
            box["value"] = context.run(asyncio.run, main())
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="toniq-testing-async")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def _name_of(worker: Any) -> str:
    if isinstance(worker, str):
        return worker
    cls, _ = resolve(worker)
    return cls.worker_name


def _matching(
    name: str, jobs: list[EnqueuedJob], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[EnqueuedJob]:
    if not args and not kwargs:
        return jobs
    cls = registry.get(name)
    wanted = _bound(cls, args, kwargs, strict=True)
    return [j for j in jobs if wanted == _bound(cls, j.args, j.kwargs, strict=False)]


def _bound(
    cls: type[Worker] | None, args: tuple[Any, ...], kwargs: dict[str, Any], *, strict: bool
) -> Any:
    """Arguments as perform receives them, so ``f(1)`` matches ``f(x=1)`` and defaults
    count; the raw ``(args, kwargs)`` if the signature is unknown."""
    signature: inspect.Signature | None = None if cls is None else cls._toniq_signature
    if cls is None or signature is None:
        return (args, kwargs)
    is_function = getattr(cls, "_toniq_is_function", False)
    try:
        bound = (
            signature.bind(*args, **kwargs)
            if is_function
            else signature.bind(None, *args, **kwargs)
        )
    except TypeError as exc:
        if strict:
            raise TypeError(f"these arguments do not fit {cls.worker_name}: {exc}") from None
        return (args, kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _call_text(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    text = f"{name}({', '.join(parts)})"
    return text if len(text) <= 300 else text[:297] + "..."


def _lines(title: str, jobs: list[EnqueuedJob], most: int = 20) -> list[str]:
    """``title (n):`` then one line per job, at most ``most``; nothing if no job."""
    if not jobs:
        return []
    lines = [f"{title} ({len(jobs)}):", *(f"  {job}" for job in jobs[:most])]
    if len(jobs) > most:
        lines.append(f"  ... and {len(jobs) - most} more")
    return lines


def _due_order(job: EnqueuedJob) -> float:
    return job.enqueued_at if job.run_at is None else job.run_at


def _limit_message(session: _Session) -> str:
    counts = collections.Counter(r.worker for r in session.results)
    top = ", ".join(f"{name} ×{n}" for name, n in counts.most_common(3))
    return (
        f"ran {session.runs} jobs and more keep coming ({top}): does a job enqueue itself? "
        f"Pass a higher limit if this is expected"
    )


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(f"limit must be an int >= 1, got {limit!r}")
