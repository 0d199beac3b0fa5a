"""The app: settings, the backend they name, and enqueue.

Most programs use the module-level functions (:func:`toniq.enqueue`,
:func:`toniq.configure`), which act on one default app made on first use from
``TONIQ_URL`` (or the default SQLite file). Nothing connects until a job is
enqueued or a node starts.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, overload

from toniq.backends import Backend, from_url
from toniq.errors import ConfigurationError, EnqueueError, MissingSecretError, StoreError
from toniq.events import EventBus, JobEvent
from toniq.job import HELD, JobRecord, JobState, NewJob, NodeInfo
from toniq.serialization import envelope_size, open_payload, pickle_many, seal, sign_many
from toniq.settings import DEFAULT_URL, Settings, redact
from toniq.signing import Keyring, new_secret
from toniq.worker import Worker, check_arguments, positional_fit, resolve

if TYPE_CHECKING:
    from toniq.node import Node

logger = logging.getLogger("toniq")


#: Jobs per store call in :meth:`Toniq.enqueue_many`: each call is atomic and, on Redis, one
#: script that blocks the server while it runs (about 5 ms for 1,000 jobs).
BATCH = 1000


def _run_at(cls: Any, options: dict[str, Any], now: float) -> float | None:
    """When a job enqueued now with these options should run (None: at once)."""
    run_at: float | None = None
    if "delay" in options:
        run_at = now + options["delay"]
    elif "at" in options:
        run_at = options["at"].timestamp()  # a naive datetime is local time
    elif options.get("hold"):
        run_at = HELD
    if run_at is not None and not options.get("persist", cls.worker_options.persist):
        raise ConfigurationError(
            f"{cls.worker_name}: a persist=False job runs at once; delay, at and hold "
            "need a stored job"
        )
    return run_at


def _split(cls: Any, call: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """One item of enqueue_many: a tuple of positional arguments or a dict of keywords."""
    if isinstance(call, tuple):
        return call, {}
    if isinstance(call, dict):
        return (), call
    raise TypeError(
        f"cannot enqueue {cls.worker_name}: enqueue_many takes one tuple (positional "
        f"arguments) or dict (keyword arguments) per job, got {type(call).__name__}; "
        "wrap a single argument: (value,)"
    )


def _checked(cls: Any, calls: Iterable[Any]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """enqueue_many's items as ``(args, kwargs)``, each checked against perform(). A tuple
    whose length fits is checked by its length alone: the usual item, in one loop."""
    fewest, most = positional_fit(cls)
    items: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    for call in calls:
        if type(call) is tuple and fewest <= len(call) <= most:
            items.append((call, {}))
        else:
            args, kwargs = _split(cls, call)
            check_arguments(cls, args, kwargs)
            items.append((args, kwargs))
    return items


def _calls(target: Any, calls: Iterable[Any]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    cls, _ = resolve(target)
    return [_split(cls, call) for call in calls]


@dataclass(frozen=True)
class JobHandle:
    """What enqueue returns: the job's ``id`` and worker name.

    ``persisted`` is ``False`` for ``persist=False`` jobs, which the store never sees.
    """

    id: str
    worker: str
    persisted: bool
    app: Toniq

    def info(self) -> JobRecord | None:
        """The stored job now, or ``None`` once it finished (a done job is deleted)."""
        if not self.persisted:
            return None
        return self.app.get_job(self.id)

    def __repr__(self) -> str:
        return f"<JobHandle {self.worker} {self.id}{'' if self.persisted else ' persist=False'}>"

    @classmethod
    def _stored(cls, ids: Iterable[str], worker: str, app: Toniq) -> list[JobHandle]:
        """Handles of stored jobs, as ``JobHandle(id, worker, True, app)`` makes them, for
        enqueue_many: the fields go straight into each handle's ``__dict__``, where a frozen
        dataclass's ``__init__`` sets them one ``object.__setattr__`` call at a time
        (0.51 -> 0.20 us a job, W1-bulk)."""
        new = object.__new__
        handles = []
        for job_id in ids:
            handle = new(cls)
            fields = handle.__dict__
            fields["id"] = job_id
            fields["worker"] = worker
            fields["persisted"] = True
            fields["app"] = app
            handles.append(handle)
        return handles


class Interceptor(Protocol):
    """Takes enqueued jobs instead of the store: how :mod:`toniq.testing` runs jobs inline
    or collects them. ``job`` is ``None`` for ``persist=False`` jobs; arguments were
    already checked and pickled, so tests catch what production would refuse."""

    def enqueue(
        self,
        app: Toniq,
        worker: type[Worker],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
        job: NewJob | None,
    ) -> JobHandle: ...

    async def enqueue_async(
        self,
        app: Toniq,
        worker: type[Worker],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
        job: NewJob | None,
    ) -> JobHandle: ...


class Toniq:
    """Settings plus the backend they name. Example::

    app = toniq.Toniq(url="sqlite:///jobs.sqlite3")
    app.enqueue(SendEmail, to="a@example.com")
    with toniq.Node(app):
        ...
    """

    def __init__(self, url: str | None = None, **settings: Any) -> None:
        self.settings = Settings.make(url, **settings)
        self._backend: Backend | None = None
        self._lock = threading.Lock()
        self._nodes: list[Node] = []
        self._local_node: Node | None = None
        self._closed = False
        #: Every job event of this app's nodes in this process: ``app.events.subscribe(f)``.
        self.events = EventBus()
        #: When set (by :mod:`toniq.testing`), enqueue hands jobs to it instead of the store.
        self.interceptor: Interceptor | None = None
        self._keyring: Keyring | None = None
        #: Signs intercepted jobs when no secret is configured, so test modes need no store.
        self._test_key: bytes | None = None
        self._test_ring: Keyring | None = None
        self._warned_unsigned = False

    @property
    def url(self) -> str:
        return self.settings.url

    @property
    def backend(self) -> Backend:
        """The backend, opened on first use."""
        backend = self._backend
        if backend is not None:
            return backend
        with self._lock:
            if self._backend is None:
                if self._closed:
                    from toniq.errors import StoreClosedError

                    raise StoreClosedError("this toniq app was closed")
                if self.settings.url == DEFAULT_URL:
                    logger.info(
                        "toniq: storing jobs in %s (the default; set TONIQ_URL or "
                        "toniq.configure(url=...) to change it)",
                        DEFAULT_URL,
                    )
                self._backend = from_url(self.settings.url)
            return self._backend

    # -- signing -------------------------------------------------------------------------

    @property
    def keyring(self) -> Keyring:
        """The keys this app signs payloads with (the first) and accepts (all): the
        ``secret`` setting or ``TONIQ_SECRET``; else the store's own key (SQLite, memory).
        Raises :class:`MissingSecretError` on Redis without a key, unless
        ``insecure_unsigned`` is set. Example::

            app.backend.enqueue([toniq.serialization.make_job(app.keyring, "app.Echo", (1,))])
        """
        ring = self._keyring
        if ring is None:
            ring = self._keyring = self._make_keyring(self.settings)
        return ring

    def keyring_for(self, settings: Settings) -> Keyring:
        """The keyring for ``settings`` (a node's own, which may override the app's)."""
        if (settings.secret, settings.insecure_unsigned) == (
            self.settings.secret,
            self.settings.insecure_unsigned,
        ):
            return self.keyring
        return self._make_keyring(settings)

    def _make_keyring(self, settings: Settings) -> Keyring:
        keys = settings.secrets
        if not keys:
            secret = self.backend.signing_secret()
            keys = () if secret is None else (secret,)
        if not keys and not settings.insecure_unsigned:
            raise MissingSecretError(
                f"no signing key for {redact(self.url)}: every process that enqueues or runs "
                "jobs on Redis needs the same secret key, so that a node never unpickles "
                "bytes it did not get from one of them. Set TONIQ_SECRET (e.g. export "
                "TONIQ_SECRET=$(python -c 'import secrets; print(secrets.token_hex(32))')) "
                "or toniq.configure(secret=...). To run without signing (anyone who can "
                "write to Redis can then run code in your nodes), set "
                "TONIQ_INSECURE_UNSIGNED=1. See docs/security.md"
            )
        if settings.insecure_unsigned and not self._warned_unsigned:
            self._warned_unsigned = True
            logger.warning(
                "toniq: insecure_unsigned is set (TONIQ_INSECURE_UNSIGNED): %s and unsigned "
                "payloads are accepted, so anyone who can write to %s can run code in every "
                "node; see docs/security.md",
                "payloads are signed" if keys else "payloads are written unsigned",
                redact(self.url),
            )
        ring = Keyring(keys, accept_unsigned=settings.insecure_unsigned)
        return ring if self._test_key is None else ring.with_key(self._test_key)

    def _enqueue_keyring(self) -> Keyring:
        if self.interceptor is None or self.settings.secrets:
            return self.keyring
        # A test mode takes the job before any store sees it: sign with a key that never
        # leaves this process rather than open (or need) a store.
        return self._test_keyring()

    def _test_keyring(self) -> Keyring:
        """The test modes' keyring: made once (a Keyring precomputes its HMAC states)."""
        ring = self._test_ring
        if ring is None:
            if self._test_key is None:
                self._test_key = new_secret()
                self._keyring = None  # rebuilt with the test key when next needed
            ring = self._test_ring = Keyring(
                [self._test_key], accept_unsigned=self.settings.insecure_unsigned
            )
        return ring

    def arguments(self, job: JobRecord) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """A stored job's ``(args, kwargs)``, verified like a node does; raises
        :class:`toniq.PayloadError` (unpickling nothing) for what a node would refuse."""
        testing = self.interceptor is not None and self._test_key is not None
        if testing and not self.settings.secrets:
            return self._open(job, self._test_keyring())  # a test mode's job: no store needed
        return self._open(job, self.keyring)

    def _open(self, job: JobRecord, ring: Keyring) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return open_payload(
            job.payload,
            ring,
            job_id=job.id,
            worker=job.worker,
            enqueued_at=job.enqueued_at,
            max_size=self.settings.max_payload_size,
        )

    # -- enqueue -------------------------------------------------------------------------

    def _prepare(
        self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, dict[str, Any], NewJob | None]:
        cls, options = resolve(target)
        check_arguments(cls, args, kwargs)
        now = time.time()
        run_at = _run_at(cls, options, now)
        if not options.get("persist", cls.worker_options.persist):
            return cls, options, None
        job_id = os.urandom(16).hex()  # 128 random bits as uuid4().hex, for a third of its time
        payload = seal(
            self._enqueue_keyring(),
            job_id,
            cls.worker_name,
            now,
            args,
            kwargs,
            max_size=self.settings.max_payload_size,
        )
        job_options = {"timeout": options["timeout"]} if options.get("timeout") else {}
        job = NewJob(job_id, cls.worker_name, payload, now, run_at, job_options)
        return cls, options, job

    def enqueue(self, target: Any, /, *args: Any, **kwargs: Any) -> JobHandle:
        """Enqueue a job of ``target`` (a worker class, a ``@toniq.worker`` function, or
        ``W.with_options(...)``) with these arguments, which ``perform`` receives as they are.

        Raises :class:`NotAWorkerError`, ``TypeError`` (arguments that do not fit
        ``perform``), :class:`SerializationError` or :class:`EnqueueError`; in each case
        nothing was stored.
        """
        cls, options, job = self._prepare(target, args, kwargs)
        if self.interceptor is not None:
            return self.interceptor.enqueue(self, cls, args, kwargs, options, job)
        if job is None:
            return self._run_local(cls, args, kwargs, options.get("timeout"))
        self._store(job)
        return JobHandle(job.id, job.worker, True, self)

    async def enqueue_async(self, target: Any, /, *args: Any, **kwargs: Any) -> JobHandle:
        """The async twin of :meth:`enqueue`: the event loop does not wait on the store. On
        Redis the loop itself watches for the reply; on SQLite the store is written from a
        thread. (The arguments are pickled and signed on the loop.)

        Example::

            handle = await app.enqueue_async(SendEmail, "a@example.com")
        """
        cls, options, job = self._prepare(target, args, kwargs)
        if self.interceptor is not None:
            return await self.interceptor.enqueue_async(self, cls, args, kwargs, options, job)
        if job is None:
            return self._run_local(cls, args, kwargs, options.get("timeout"))
        await self._store_async(job)
        return JobHandle(job.id, job.worker, True, self)

    def enqueue_many(self, target: Any, calls: Iterable[Any], /) -> list[JobHandle]:
        """Enqueue many jobs of one worker in a few store calls: much faster than a loop of
        :meth:`enqueue` (one round trip per 1,000 jobs instead of one per job).

        Each item of ``calls`` holds one job's arguments: a tuple of positional arguments,
        or a dict of keyword arguments (so a job whose one argument is a tuple or a dict
        needs it wrapped: ``(value,)``). Example::

            app.enqueue_many(SendEmail, [("a@example.com",), ("b@example.com",)])
            app.enqueue_many(SendEmail.with_options(delay=60), [{"to": "c@example.com"}])

        Every job is checked and pickled before anything is written, so a bad argument
        raises (``TypeError``, :class:`SerializationError`, :class:`PayloadTooLargeError`)
        with nothing stored. Jobs are stored in order, in batches of 1,000, each batch all or
        nothing (on Redis, the next batch is signed while Redis stores one); if the store fails
        part-way, :class:`EnqueueError` says how many were stored and its ``stored``
        attribute lists their handles. ``persist=False`` jobs are handed to this process's
        node one by one, as :meth:`enqueue` does.
        """
        cls, options = resolve(target)
        items = _checked(cls, calls)
        now = time.time()
        run_at = _run_at(cls, options, now)
        if self.interceptor is not None or not options.get("persist", cls.worker_options.persist):
            return [self.enqueue(target, *args, **kwargs) for args, kwargs in items]
        name = cls.worker_name
        job_options = {"timeout": options["timeout"]} if options.get("timeout") else {}
        blob = os.urandom(16 * len(items)).hex()  # as uuid4().hex, without a UUID per job
        ids = [blob[i : i + 32] for i in range(0, len(blob), 32)]
        keyring, limit = self._enqueue_keyring(), self.settings.max_payload_size
        # Every argument pickled, and every payload's size known, before anything is written.
        bodies = pickle_many(items, name)
        # (Every id here has 32 hex digits, so every envelope around a pickle has one size.)
        envelope = envelope_size(keyring, ids[0], name, now) if ids else 0
        if bodies and max(map(len, bodies)) + envelope > limit:
            sign_many(keyring, ids, name, now, bodies, max_size=limit)  # raises

        def batch(start: int) -> list[NewJob]:
            """Jobs ``start`` to ``start + BATCH``, signed (nothing left that can fail)."""
            chunk = ids[start : start + BATCH]
            payloads = sign_many(keyring, chunk, name, now, bodies[start : start + BATCH])
            return [
                NewJob(job_id, name, payload, now, run_at, job_options)
                for job_id, payload in zip(chunk, payloads, strict=True)
            ]

        return self._store_in_batches(len(ids), batch, name)

    def _store_in_batches(
        self, count: int, batch: Callable[[int], list[NewJob]], worker: str
    ) -> list[JobHandle]:
        """Store ``count`` jobs in order, ``batch(start)`` making jobs ``start`` to ``start +
        BATCH``, and return their handles. On a store that can overlap (Redis), the next
        batch is made while the store writes this one: one call of 20,000 jobs ran about
        1.2x as fast (medians of 5, 4 interleaved pairs). Batch k+1 is sent only once batch
        k is stored, as without the overlap."""
        stored: list[JobHandle] = []
        made: list[list[NewJob]] = []  # the next batch, once make_next() made it

        def make_next() -> None:  # called during this batch's store: `after` is this one's
            try:
                made.append(batch(after))
            except Exception:
                pass  # made again below, once this batch is stored, where it raises

        # Asked of the class: a wrapper that forwards attributes (and may override
        # enqueue) is not bypassed.
        overlapping: Callable[[list[NewJob]], None] | None = None
        if hasattr(type(self.backend), "enqueue_overlapping"):
            overlapping = functools.partial(
                getattr(self.backend, "enqueue_overlapping"),  # noqa: B009 (not in Backend)
                meanwhile=make_next,
            )
        jobs = batch(0) if count else []
        for start in range(0, count, BATCH):
            after = start + BATCH
            try:
                self._store_batch(jobs, overlapping if after < count else None)
            except EnqueueError as exc:
                error = EnqueueError(
                    f"{exc} ({len(stored)} of {count} jobs were stored before this "
                    "batch: the first ones, in order; see .stored)"
                )
                error.stored = stored
                raise error from exc
            stored += JobHandle._stored([job.id for job in jobs], worker, self)
            if after < count:
                jobs = made.pop() if made else batch(after)
        return stored

    async def enqueue_many_async(self, target: Any, calls: Iterable[Any], /) -> list[JobHandle]:
        """The async twin of :meth:`enqueue_many`: the store is written off the event loop."""
        if self.interceptor is not None:
            return [await self.enqueue_async(target, *a, **k) for a, k in _calls(target, calls)]
        return await asyncio.to_thread(self.enqueue_many, target, list(calls))

    def _store(self, job: NewJob) -> None:
        self._store_batch([job])

    async def _store_async(self, job: NewJob) -> None:
        """:meth:`_store` from a coroutine: with the backend's ``enqueue_one_async`` where it
        has one (Redis: no thread per call), else :meth:`_store` in a thread."""
        # Not opened yet: opened in the thread (SQLite opens a file), with errors as before.
        # Asked of the class, as for enqueue_overlapping (see _store_in_batches).
        backend = self._backend
        if backend is None or not hasattr(type(backend), "enqueue_one_async"):
            await asyncio.to_thread(self._store, job)
            return
        try:
            await getattr(backend, "enqueue_one_async")(job)  # noqa: B009 (not in Backend)
        except EnqueueError:
            raise
        except StoreError as exc:
            raise EnqueueError(f"job of {job.worker} was not stored: {exc}") from exc
        self._stored_now([job])

    def _store_batch(
        self, jobs: list[NewJob], store: Callable[[list[NewJob]], None] | None = None
    ) -> None:
        """Store ``jobs`` with ``store`` (the backend's ``enqueue`` by default)."""
        try:
            (store or self.backend.enqueue)(jobs)
        except EnqueueError:
            raise
        except StoreError as exc:
            what = f"job of {jobs[0].worker}" if len(jobs) == 1 else f"{len(jobs)} jobs"
            raise EnqueueError(f"{what} was not stored: {exc}") from exc
        self._stored_now(jobs)

    def _stored_now(self, jobs: list[NewJob]) -> None:
        """What follows a store that succeeded: the enqueue events, and this process's
        nodes look for the jobs."""
        for job in jobs:
            self.events.enqueued(job.worker, True)
        for node in list(self._nodes):
            node._enqueued()  # a node in this process starts it now, not at its next poll

    def _run_local(
        self, cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None
    ) -> JobHandle:
        job_id = os.urandom(16).hex()
        self.local_node().submit_local(cls, args, kwargs, job_id, timeout)
        self.events.enqueued(cls.worker_name, False)
        return JobHandle(job_id, cls.worker_name, False, self)

    def local_node(self) -> Node:
        """The node of this process that runs ``persist=False`` jobs: a running node of this
        app, or else a small one started on first use (it stores nothing)."""
        with self._lock:
            for node in self._nodes:
                if not node.local_only:
                    return node
            first = self._local_node is None
            if self._local_node is None:
                from toniq.node import Node

                self._local_node = Node(self, local_only=True)
            node = self._local_node
        if first:
            node.start()  # outside the lock: the node attaches itself while starting
            atexit.register(node.stop)
        else:
            node.wait_started()
        return node

    # -- inspection ------------------------------------------------------------------------

    def get_job(self, job_id: str) -> JobRecord | None:
        """A stored job by id, or ``None`` (unknown, or finished and deleted)."""
        return self._bind(self.backend.get_job(job_id))

    def counts(self) -> dict[str, dict[str, int]]:
        """Jobs per worker and state, e.g. ``{"app.SendEmail": {"available": 3, "done": 9}}``."""
        return self.backend.counts()

    def nodes(self) -> list[NodeInfo]:
        """The live nodes the store knows."""
        return self.backend.nodes()

    def jobs(
        self,
        state: JobState | str,
        worker: WorkerRef | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[JobRecord]:
        """Stored jobs in one state, e.g. ``app.jobs("scheduled")``: soonest first."""
        records = self.backend.jobs(JobState(state), _worker_name(worker), limit, offset)
        return [self._bind(r) for r in records]

    # -- failed jobs -----------------------------------------------------------------------

    def failed_jobs(
        self, worker: WorkerRef | None = None, limit: int = 50, offset: int = 0
    ) -> list[JobRecord]:
        """Failed jobs, newest first, optionally of one worker; ``limit``/``offset`` page."""
        records = self.backend.jobs(JobState.FAILED, _worker_name(worker), limit, offset)
        return [self._bind(r) for r in records]

    @overload
    def _bind(self, record: JobRecord) -> JobRecord: ...
    @overload
    def _bind(self, record: None) -> None: ...
    def _bind(self, record: JobRecord | None) -> JobRecord | None:
        if record is not None:
            record.app = self  # record.arguments() verifies with this app's keys
        return record

    def retry(self, job: JobRef) -> bool:
        """Run a failed job again, with a fresh attempt count; its error history stays.
        ``False`` if it is not (or no longer) failed."""
        return self.backend.retry_failed([_job_id(job)]) == 1

    def delete(self, job: JobRef) -> bool:
        """Delete a failed job. ``False`` if it is not (or no longer) failed."""
        return self.backend.delete_failed([_job_id(job)]) == 1

    def retry_all(self, worker: WorkerRef | None = None) -> int:
        """Retry every failed job (of ``worker``, if given); returns how many."""
        return self.backend.retry_failed(None, _worker_name(worker))

    def delete_all(self, worker: WorkerRef | None = None) -> int:
        """Delete every failed job (of ``worker``, if given); returns how many."""
        return self.backend.delete_failed(None, _worker_name(worker))

    # -- held and delayed jobs ---------------------------------------------------------------

    def release(self, job: JobRef) -> bool:
        """Make a held or delayed job available now. ``False`` if it is not scheduled."""
        return self.backend.release_scheduled([_job_id(job)]) == 1

    def release_all(self, worker: WorkerRef | None = None) -> int:
        """Release every held or delayed job (of ``worker``); returns how many."""
        return self.backend.release_scheduled(None, _worker_name(worker))

    def subscribe(self, callback: Callable[[JobEvent], object]) -> Callable[[], None]:
        """Call ``callback(event)`` after every job of this app's nodes in this process
        finishes, is retried or fails (hooks for error trackers and metrics). Returns a
        function that unsubscribes."""
        return self.events.subscribe(callback)

    # -- life cycle ------------------------------------------------------------------------

    def _attach(self, node: Node) -> None:
        with self._lock:
            self._nodes.append(node)

    def _detach(self, node: Node) -> None:
        with self._lock:
            if node in self._nodes:
                self._nodes.remove(node)

    def close(self) -> None:
        """Stop the ``persist=False`` runner and close the backend."""
        local, self._local_node = self._local_node, None
        if local is not None:
            local.stop()
        with self._lock:
            self._closed = True
            backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    def __repr__(self) -> str:
        return f"<toniq.Toniq {redact(self.url)}>"


_default: Toniq | None = None
_default_lock = threading.Lock()


def get_app() -> Toniq:
    """The default app, made on first use from ``TONIQ_URL`` or the default URL."""
    global _default
    app = _default
    if app is None:
        with _default_lock:
            if _default is None:
                _default = Toniq()
            app = _default
    return app


def configure(url: str | None = None, **settings: Any) -> Toniq:
    """Set up the default app: ``toniq.configure(url="sqlite:///jobs.sqlite3")``.

    ``url`` falls back to ``TONIQ_URL``, then to ``sqlite:///toniq.sqlite3``. Other
    keywords are :class:`toniq.Settings`. Replaces (and closes) the previous default app.
    """
    global _default
    app = Toniq(url, **settings)
    with _default_lock:
        old, _default = _default, app
    if old is not None:
        old.close()
    return app


def enqueue(target: Any, /, *args: Any, **kwargs: Any) -> JobHandle:
    """Enqueue a job on the default app. Example::

    toniq.enqueue(SendEmail, to="info@example.com", subject="Hello")
    toniq.enqueue(SendEmail.with_options(persist=False), to="me@example.com")
    """
    return get_app().enqueue(target, *args, **kwargs)


async def enqueue_async(target: Any, /, *args: Any, **kwargs: Any) -> JobHandle:
    """The async twin of :func:`enqueue`: ``await toniq.enqueue_async(SendEmail, ...)``."""
    return await get_app().enqueue_async(target, *args, **kwargs)


def enqueue_many(target: Any, calls: Iterable[Any], /) -> list[JobHandle]:
    """Enqueue many jobs of one worker on the default app, 1,000 per store call. Each item
    is one job's positional arguments (a tuple) or keyword arguments (a dict). Example::

        toniq.enqueue_many(SendEmail, [("a@example.com",), ("b@example.com",)])
    """
    return get_app().enqueue_many(target, calls)


async def enqueue_many_async(target: Any, calls: Iterable[Any], /) -> list[JobHandle]:
    """The async twin of :func:`enqueue_many`."""
    return await get_app().enqueue_many_async(target, calls)


WorkerRef = Any  # a worker class, a @toniq.worker function, or a worker name
JobRef = Any  # a job id, a JobHandle or a JobRecord


def _worker_name(worker: WorkerRef | None) -> str | None:
    if worker is None or isinstance(worker, str):
        return worker
    cls, _ = resolve(worker)
    return cls.worker_name


def _job_id(job: JobRef) -> str:
    if isinstance(job, str):
        return job
    job_id = getattr(job, "id", None)
    if not isinstance(job_id, str):
        raise TypeError(f"expected a job id, a JobHandle or a JobRecord, got {job!r}")
    return job_id


def failed_jobs(
    worker: WorkerRef | None = None, limit: int = 50, offset: int = 0
) -> list[JobRecord]:
    """Failed jobs of the default app, newest first: ``toniq.failed_jobs(SendEmail)``."""
    return get_app().failed_jobs(worker, limit, offset)


def retry(job: JobRef) -> bool:
    """Run a failed job again (a job, a record or an id): ``toniq.retry(job)``."""
    return get_app().retry(job)


def delete(job: JobRef) -> bool:
    """Delete a failed job (a job, a record or an id)."""
    return get_app().delete(job)


def retry_all(worker: WorkerRef | None = None) -> int:
    """Retry every failed job, or those of one worker; returns how many."""
    return get_app().retry_all(worker)


def delete_all(worker: WorkerRef | None = None) -> int:
    """Delete every failed job, or those of one worker; returns how many."""
    return get_app().delete_all(worker)


def release(job: JobRef) -> bool:
    """Make a held or delayed job available now."""
    return get_app().release(job)


def release_all(worker: WorkerRef | None = None) -> int:
    """Release every held or delayed job, or those of one worker; returns how many."""
    return get_app().release_all(worker)


def subscribe(callback: Callable[[JobEvent], object]) -> Callable[[], None]:
    """Receive every job event of the default app's nodes in this process."""
    return get_app().subscribe(callback)


def get_job(job_id: str) -> JobRecord | None:
    """A stored job of the default app by id."""
    return get_app().get_job(job_id)


def counts() -> dict[str, dict[str, int]]:
    """Jobs per worker and state on the default app."""
    return get_app().counts()


def nodes() -> list[NodeInfo]:
    """Live nodes of the default app."""
    return get_app().nodes()
