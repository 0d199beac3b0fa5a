"""The node: claims jobs, runs each as an asyncio task, acknowledges them in batches.

Beside the event loop, a maintenance thread heart-beats, takes over the jobs of
dead nodes and fails jobs no node can run. It is a thread, not a task, so it keeps
going while a job hogs the event loop or the CPU.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import itertools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from toniq.eager import Resume
from toniq.errors import StoreError, ToniqError
from toniq.events import EventKind, JobEvent, emit, has_listeners
from toniq.job import CANNOT_RUN, AckReport, ClaimedJob, JobError, NodeInfo, Outcome
from toniq.retries import log_failure, retries_for, retry_delay
from toniq.serialization import open_payload
from toniq.signing import Keyring
from toniq.timeouts import run_async, run_in_child
from toniq.worker import Worker, WorkerFunction, get_worker, registry

if TYPE_CHECKING:
    from toniq.app import Toniq
    from toniq.backends import Backend

logger = logging.getLogger("toniq")
T = TypeVar("T")
#: A run waiting for its acknowledgement: the outcome, its worker class, and what its
#: JobEvent needs (made after the ack, and only if someone listens).
_Ran = tuple[Outcome, "type[Worker] | None", EventKind, int, float, "float | None"]
#: How often a node deletes failed jobs beyond the retention settings.
PRUNE_INTERVAL = 60.0


@dataclass
class NodeStats:
    """Counters of one node since it started."""

    done: int = 0
    retried: int = 0
    failed: int = 0
    local_done: int = 0
    local_failed: int = 0
    acks_rejected: int = 0
    taken_over: int = 0


def _task(me: list[asyncio.Task[None]]) -> asyncio.Task[None]:
    """A job's task, as :meth:`Node._spawn` recorded it; when an eager task factory
    (Python 3.12+, in a loop of the user's) ran the job inside ``create_task``, before it
    could, the current task."""
    if me:
        return me[0]
    task = asyncio.current_task()
    assert task is not None
    return task


class _Started(list[ClaimedJob]):
    """Jobs the I/O thread got handed over and has already had started on the event loop
    (see Node._wait_then_claim): the claim loop must not start them again."""


@dataclass(frozen=True)
class _LocalJob:
    worker: type[Worker]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    id: str
    timeout: float | None = None


class Node:
    """Runs jobs. Use it in one of three ways:

    - ``toniq worker MODULE`` on the command line (it calls :meth:`run`);
    - in the background of your own program::

          with toniq.Node() as node:   # or node.start() ... node.stop()
              ...

    - ``await node.serve()`` inside your own event loop.

    ``burst=True`` (``toniq worker --burst``) stops once no job is left; :meth:`drain`
    waits for that moment while the node keeps running. Settings given here override
    the app's (see :class:`toniq.Settings`).
    """

    def __init__(
        self,
        app: Toniq | None = None,
        *,
        workers: Iterable[type[Worker] | WorkerFunction[Any, Any] | str] | None = None,
        local_only: bool = False,
        **settings: Any,
    ) -> None:
        from toniq.app import get_app

        self.app = app or get_app()
        self.settings = replace(self.app.settings, **settings) if settings else self.app.settings
        self.id = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self.local_only = local_only
        self.stats = NodeStats()
        self._worker_filter = None if workers is None else list(workers)
        self._workers: dict[str, type[Worker]] = {}
        self._running: collections.Counter[str] = collections.Counter()
        self._running_sync = 0
        self._isolating = False
        self._threads_lock = threading.Lock()
        self._threads_busy = 0
        # Keyed by task, not job id: after a takeover the same job may run twice here.
        self._tasks: dict[asyncio.Task[None], ClaimedJob | None] = {}
        # Tasks running a run of a claim's jobs one after the other (see _run_batch), with
        # the jobs each has still to finish, last first.
        self._batches: dict[asyncio.Task[None], list[ClaimedJob]] = {}
        # Tasks of jobs that a stop cancelled: any other CancelledError is a job's failure.
        self._stop_cancelled: set[asyncio.Task[None]] = set()
        self._outcomes: list[_Ran] = []
        self._acking = False
        self._acks_in_flight: list[Outcome] = []
        self._reconcile = False
        self._server_id: str | None = None
        self._store_ok_since: float | None = None
        self._closing = False
        self._local: collections.deque[_LocalJob] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._stop_requested = False
        self._force = False
        self._rotation = itertools.count()
        # A claim sent before the pass that takes its jobs, and what it asked for.
        self._ahead: asyncio.Future[list[ClaimedJob]] | None = None
        self._ahead_wants: dict[str, int] = {}
        # drain(): a pass is a round of "start local jobs, claim"; idle_through is the
        # number of the last pass that found nothing to do and nothing running.
        self._cond = threading.Condition()
        self._passes = 0
        self._idle_through = 0
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stopped = threading.Event()
        self._start_error: BaseException | None = None
        self._maint_stop = threading.Event()
        self._keyring: Keyring = Keyring(())
        # An idle node's I/O thread waits on _io_wake (see _claim_when_woken), or, where the
        # store hands jobs over (Redis), blocks on the store for one (_handoff).
        self._io_wake = threading.Event()
        self._io_waiting = False
        self._io_interrupted = False
        self._handoff = False
        # The workers this node is armed for (a hand-over may come for each): set by a claim
        # with "arm" that found nothing, emptied by a claim, the last hand-over of the arming
        # or a disarm. The arming takes up to _arm_full jobs (_arm_slots are left) until
        # _arm_until (monotonic); while it holds, the node waits for them even when busy, and
        # claims again (which re-arms in the same step) once half its slots or nearly all its
        # time are used up (see _still_armed).
        self._armed_for: frozenset[str] = frozenset()
        self._arm_slots = 0
        self._arm_full = 0
        self._arm_until = 0.0
        self._arm_wait = 0.0  # how long one wait for a hand-over lasts (set at start)
        self._arm_extra = 0.0  # the part of the store's margin the node counts as its own
        self._skip_claim = False  # the next pass waits for hand-overs without claiming
        self._drainers = 0  # drain() calls waiting: they need claim passes (see drain)
        self._pushers: list[threading.Thread] = []  # see _unblock_io

    # -- public control ------------------------------------------------------------------

    @property
    def backend(self) -> Backend | None:
        return None if self.local_only else self.app.backend

    @property
    def running(self) -> int:
        """Jobs running on this node now."""
        return len(self._tasks) + sum(map(len, self._batches.values()))

    @property
    def _busy(self) -> bool:
        return bool(self._tasks or self._batches)

    def run(self, *, burst: bool = False, install_signal_handlers: bool = True) -> None:
        """Run in this thread until SIGINT/SIGTERM (or, with ``burst``, no job is left).
        Raises what kept the node from starting (e.g. :class:`toniq.StoreError`)."""
        asyncio.run(self._main(burst, install_signal_handlers))
        if self._start_error is not None:
            raise self._start_error

    async def _main(self, burst: bool, install_signal_handlers: bool) -> None:
        if install_signal_handlers:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_signal, sig)
        await self.serve(burst=burst)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop_requested:
            logger.warning("%s again: handing running jobs back now", sig.name)
            self._force = True
            self._wake_now()
            return
        logger.info(
            "%s: stopping; running jobs may finish within %gs (send it again to stop now)",
            sig.name,
            self.settings.grace_period,
        )
        self._begin_stop()

    def start(self) -> Node:
        """Run the node in a background thread; returns once it is ready."""
        if self._thread is not None:
            raise ToniqError("this node was already started")
        self._thread = threading.Thread(
            target=self._thread_main, name=f"toniq-node-{self.id}", daemon=True
        )
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error
        return self

    def wait_started(self, timeout: float | None = None) -> None:
        """Block until the node is ready to run jobs (or failed to start)."""
        self._started.wait(timeout)
        if self._start_error is not None:
            raise self._start_error

    def _thread_main(self) -> None:
        try:
            asyncio.run(self.serve())
        except BaseException as exc:  # reported to start(), or logged if it came later
            if not self._started.is_set():
                self._start_error = exc
                self._started.set()
            else:
                logger.exception("toniq node %s crashed", self.id)

    def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully (see ``grace_period``) and wait for the node to finish."""
        loop = self._loop
        if loop is not None and not self._stopped.is_set():
            try:
                loop.call_soon_threadsafe(self._begin_stop)
            except RuntimeError:  # the loop already closed
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def drain(self, timeout: float | None = 60.0) -> None:
        """Wait until this node has found no job to start and has none running.

        Raises :class:`TimeoutError` if that does not happen within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._passes + 1
            self._drainers += 1  # every pass claims meanwhile, even while armed
        try:
            self._wake_now()
            with self._cond:
                while self._idle_through < target:
                    if self._stopped.is_set():
                        return
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(f"node {self.id} still had jobs after {timeout}s")
                    self._cond.wait(remaining if remaining is None else min(remaining, 0.5))
        finally:
            with self._cond:
                self._drainers -= 1

    def wake(self) -> None:
        """Look for jobs now rather than at the next poll (thread-safe)."""
        self._wake_now()

    def _enqueued(self) -> None:
        """A job was stored by this process: look for it now. Not if this node waits for a
        job handed over: the store hands it the job, or wakes it (another round trip here
        would only delay the caller)."""
        if not (self._handoff and self._io_waiting):
            self._wake_now()

    def submit_local(
        self,
        worker: type[Worker],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        job_id: str,
        timeout: float | None = None,
    ) -> None:
        """Run a ``persist=False`` job on this node without storing it (thread-safe).
        ``timeout`` (from the enqueue) overrides the worker's."""
        job = _LocalJob(worker, args, kwargs, job_id, timeout or worker.worker_options.timeout)
        loop = self._loop
        if loop is None or self._stopped.is_set():
            raise ToniqError(f"node {self.id} is not running")
        if threading.get_ident() == self._loop_thread:
            self._local.append(job)
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._add_local, job)

    def _add_local(self, job: _LocalJob) -> None:
        self._local.append(job)
        self._wake.set()

    def _wake_now(self) -> None:
        loop = self._loop
        if loop is None or self._stopped.is_set():
            return
        if self._io_waiting:
            self._io_wake.set()  # idle: the I/O thread claims now (see _claim_when_woken)
            self._unblock_io()
            if self._io_waiting:
                return
            # The wait ended just now and _claim_when_woken may have missed this wake-up:
            # wake the loop too (an extra claim pass at worst).
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            try:
                loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop closed in between
                pass

    def _handoff_allowed(self, backend: Backend) -> bool:
        """Whether this node may wait for jobs handed over: a Redis user whose ACL predates
        hand-over cannot BLPOP; the node then waits for wake-ups as before (it never arms,
        so no enqueue hands it a job)."""
        try:
            allowed = bool(backend.handoff_allowed())  # type: ignore[attr-defined]
        except StoreError as exc:  # not an answer about the ACL: assume the documented one
            logger.debug("could not check the commands of hand-over: %s", exc)
            return True
        if not allowed:
            logger.warning(
                "this Redis user may not BLPOP: idle nodes claim on a wake-up message instead "
                "of being handed jobs (see docs/security.md for the commands toniq needs)"
            )
        return allowed

    def _unblock_io(self) -> None:
        """End the I/O thread's wait for a job handed over (a no-op unless it may block on
        the store): a marker pushed to the store ends it. On the event loop's thread the push
        goes to a thread of its own, so a store that does not answer cannot hold the loop."""
        if not self._handoff or self.backend is None:
            return
        if threading.get_ident() == self._loop_thread:
            pusher = threading.Thread(target=self._push_wake, name="toniq-unblock", daemon=True)
            self._pushers = [t for t in self._pushers if t.is_alive()] + [pusher]
            pusher.start()
        else:
            self._push_wake()

    def _push_wake(self) -> None:
        try:
            self.backend.wake_handoff(self.id)  # type: ignore[union-attr]
        except Exception as exc:  # the wait ends at its timeout anyway
            logger.debug("could not wake node %s's I/O thread: %s", self.id, exc)

    def _begin_stop(self) -> None:
        self._stop_requested = True
        self._wake.set()

    # -- the main loop -------------------------------------------------------------------

    async def serve(self, *, burst: bool = False) -> None:
        """Run until stopped (or, with ``burst``, until no job is left)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._ack_wake = asyncio.Event()
        self._workers = self._resolve_workers()
        self._pool = ThreadPoolExecutor(self.settings.threads, thread_name_prefix="toniq-job")
        self._io = ThreadPoolExecutor(1, thread_name_prefix="toniq-io")
        # Acks go on a thread of their own where the I/O thread may block waiting for a
        # hand-over while jobs run (Redis): an ack must not wait for that wait to end.
        self._ack_io = ThreadPoolExecutor(1, thread_name_prefix="toniq-ack")
        backend = self.backend
        maintenance: threading.Thread | None = None
        unwatch: Callable[[], None] | None = None
        try:
            if backend is not None:
                # No key, no node (on Redis): refuse before claiming anything.
                self._keyring = await self._call(self.app.keyring_for, self.settings)
                await self._call(backend.register_node, self._info())
                maintenance = threading.Thread(
                    target=self._maintain, name=f"toniq-maint-{self.id}", daemon=True
                )
                maintenance.start()
                for warning in await self._call(backend.server_warnings):
                    logger.warning("%s", warning)
                self._server_id = await self._call(backend.server_id)
                if getattr(backend, "handoff", False):
                    self._handoff = await self._call(self._handoff_allowed, backend)
                if self._handoff:
                    poll = self.settings.poll_interval
                    self._arm_wait = backend.handoff_wait(poll)  # type: ignore[attr-defined]
                    # Redis keeps an arming a margin beyond the wait: a node handed a job at
                    # the end of a long idle wait may still use it, rather than claim just as
                    # the next job comes. A quarter of the margin: a wait may end late (Redis
                    # ends blocking waits at its next event, up to 100 ms later when idle).
                    lasts = backend.handoff_lasts(poll)  # type: ignore[attr-defined]
                    self._arm_extra = (lasts - self._arm_wait) / 4
                unwatch = backend.watch(self._wake_now)
                logger.info(
                    "toniq node %s started on %s with workers: %s",
                    self.id,
                    backend.url,
                    ", ".join(sorted(self._workers)) or "(none)",
                )
            self.app._attach(self)
        except BaseException as exc:
            if unwatch is not None:
                unwatch()
            self._stopped.set()
            self._pool.shutdown(wait=False)
            self._io.shutdown(wait=False)
            self._ack_io.shutdown(wait=False)
            if not self._started.is_set():
                self._start_error = exc
                self._started.set()
                return
            raise
        self._started.set()
        ack_task = asyncio.create_task(self._ack_loop(), name="toniq-ack")
        try:
            await self._claim_loop(burst)
        finally:
            await self._shutdown(ack_task)
            if unwatch is not None:
                unwatch()
            self._maint_stop.set()
            if maintenance is not None:
                maintenance.join()
            if backend is not None:
                try:
                    await self._call(backend.unregister_node, self.id)
                except Exception:
                    logger.exception("toniq node %s could not unregister", self.id)
            self.app._detach(self)
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._io.shutdown(wait=True)
            self._ack_io.shutdown(wait=True)
            self._stopped.set()
            with self._cond:
                self._cond.notify_all()
            logger.info("toniq node %s stopped", self.id)

    def worker_classes(self) -> dict[str, type[Worker]]:
        """The workers this node runs (or will run once started), by name."""
        return dict(self._workers) if self._workers else self._resolve_workers()

    def _resolve_workers(self) -> dict[str, type[Worker]]:
        if self._worker_filter is None:
            return dict(registry)
        workers: dict[str, type[Worker]] = {}
        for item in self._worker_filter:
            if isinstance(item, str):
                cls = get_worker(item)
            elif isinstance(item, WorkerFunction):
                cls = item.worker
            else:
                cls = item
            workers[cls.worker_name] = cls
        return workers

    def _info(self) -> NodeInfo:
        now = time.time()
        return NodeInfo(
            self.id, socket.gethostname(), os.getpid(), now, now, tuple(sorted(self._workers))
        )

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a backend call on the node's I/O thread, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, functools.partial(fn, *args))

    async def _call_ack(self, backend: Backend, outcomes: list[Outcome]) -> AckReport:
        if not self._handoff:
            return await self._call(backend.ack, self.id, outcomes)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._ack_io, backend.ack, self.id, outcomes)

    async def _claim_loop(self, burst: bool) -> None:
        try:
            await self._claim_passes(burst)
        finally:
            if self._ahead is not None:
                # A claim sent ahead as the loop left: its jobs start, and then go through
                # the shutdown as the others do (the grace period, then handed back).
                ahead, self._ahead = self._ahead, None
                try:
                    self._start_all(await ahead)
                except Exception:
                    self._reconcile = True  # its jobs, if it leased any, are ghosts now

    async def _claim_passes(self, burst: bool) -> None:
        backend = self.backend
        failures = 0
        while not self._stop_requested:
            with self._cond:
                self._passes += 1
                this_pass = self._passes
                # Only a pass that claims may tell drain() that nothing is left.
                skip = self._skip_claim and not self._wake.is_set() and not self._drainers
            self._skip_claim = False
            self._wake.clear()
            self._start_local_jobs()
            claimed: list[ClaimedJob] = []
            full = False  # a claim came back full: more are likely waiting
            ahead = self._ahead  # a claim sent by the last pass (see below)
            if ahead is not None:
                wants = self._ahead_wants  # what it asked for
            else:
                wants = self._wants() if backend is not None else {}
            if self._armed_for and not self._armed_for <= wants.keys():
                # Some worker has no room left (persist=False jobs took it) and this pass
                # may not claim: stop jobs being handed over, give back any that were.
                await self._disarm()
            skip = skip and self._still_armed()
            if ahead is not None or (wants and not skip):
                assert backend is not None
                if ahead is None and self._reconcile:
                    await self._hand_back_ghosts()  # before claiming: they are claimable again
                try:
                    if ahead is not None:
                        self._ahead = None
                        claimed = await ahead
                    else:
                        claimed = await self._call(
                            self._claim,
                            backend,
                            wants,
                            not self._busy and not self._local,
                            self._handoff and not burst and not self._reconcile,
                        )
                    failures = 0
                except Exception as exc:
                    failures += 1
                    # The claim may have happened with its reply lost: look for such
                    # "ghost" claims once the store answers again.
                    self._reconcile = True
                    delay = min(self.settings.poll_interval * 2**failures, 5.0)
                    logger.warning("claiming jobs failed (%s); trying again in %.2fs", exc, delay)
                    await self._sleep_or_wake(delay)
                    continue
                if ahead is not None and not claimed:
                    continue  # sent before this pass began: only a claim of its own may idle
                full = bool(claimed) and self._any_full(claimed, wants)
                if full and not (self._reconcile or self._stop_requested):
                    # Send the next claim now, for the room left once these run, so that the
                    # store works on it while they start.
                    room = self._wants(claimed)
                    if room:
                        self._ahead_wants = room
                        self._ahead = asyncio.get_running_loop().run_in_executor(
                            self._io, self._claim, backend, room, False, False
                        )
                        # Let the I/O thread take the GIL and send it now: else it waits
                        # for Python's switch interval while this thread starts the jobs.
                        time.sleep(0)
                self._start_all(claimed)
            if (
                not skip
                and not claimed
                and not self._busy
                and not self._local
                and not self._outcomes
                and not self._acking
            ):
                with self._cond:
                    self._idle_through = this_pass
                    self._cond.notify_all()
                if burst:
                    break
            if full:
                continue  # more may be waiting: ask again at once
            timeout = self.settings.poll_interval if backend is not None else None
            armed = self._handoff and bool(self._armed_for)
            if wants and not claimed and (self._idle() or armed) and not self._reconcile:
                if armed:  # the arming's wait is the rest of its time
                    left = self._arm_until - time.monotonic()
                    timeout = max(0.001, min(self._arm_wait, left))
                try:
                    woken = await self._claim_when_woken(wants, timeout)
                    failures = 0
                except Exception as exc:
                    failures += 1
                    self._reconcile = True
                    delay = min(self.settings.poll_interval * 2**failures, 5.0)
                    logger.warning("claiming jobs failed (%s); trying again in %.2fs", exc, delay)
                    await self._sleep_or_wake(delay)
                    continue
                if isinstance(woken, _Started) or (woken == [] and self._armed_for):
                    # Handed a job (already started), or claimed nothing and armed again:
                    # wait for the next hand-over, without a claim while the arming holds.
                    self._skip_claim = True
                    continue
                self._start_all(woken or ())
                if not woken or self._any_full(woken, wants):
                    continue  # no wake-up (poll now), or another round at once
            await self._sleep_or_wake(timeout)

    def _claim(
        self, backend: Backend, wants: dict[str, int], alone: bool, arm: bool
    ) -> list[ClaimedJob]:
        """On the I/O thread: claim; with ``arm`` (hand-over), a claim that leases nothing
        also arms the node for as many jobs as the smallest room among its workers."""
        suspect_after = max(1, self.settings.max_node_deaths - 1)
        if not arm:
            self._armed_for = frozenset()  # every claim disarms
            return backend.claim(self.id, wants, alone=alone, suspect_after=suspect_after)
        slots = min(wants.values())
        began = time.monotonic()
        try:
            claimed = backend.claim(
                self.id,
                wants,
                alone=alone,
                suspect_after=suspect_after,
                arm=self.settings.poll_interval,
                slots=slots,  # type: ignore[call-arg]
                others=list(self._workers),
            )
        except BaseException:
            self._armed_for = frozenset()  # the claim may have disarmed it
            raise
        # _armed_for is set only now (the claim disarms and arms again in one step): an ack
        # meanwhile must not wake the loop for a claim that this one already is.
        self._armed_for = frozenset()
        if not claimed:
            self._arm_until = began + self._arm_wait + self._arm_extra
            self._arm_slots = self._arm_full = slots
            self._armed_for = frozenset(wants)
        return claimed

    def _still_armed(self) -> bool:
        """Whether the arming may serve another wait without a claim: less than half of its
        slots and nine tenths of its time used (a claim then arms again in the same step, so
        no job enqueued meanwhile misses the node)."""
        return (
            bool(self._armed_for)
            and self._arm_slots * 2 > self._arm_full
            and time.monotonic() < self._arm_until - self._arm_wait / 10
        )

    def _idle(self) -> bool:
        return not self._busy and not self._local and not self._outcomes and not self._acking

    async def _claim_when_woken(
        self, wants: dict[str, int], timeout: float | None
    ) -> list[ClaimedJob] | None:
        """An idle node waits for a wake-up on its I/O thread, which then claims at once:
        the claim starts one thread hop after the wake-up instead of three (wake-up thread
        -> event loop -> I/O thread). Where the store hands jobs over (Redis), the I/O
        thread blocks on the store instead, also while jobs run if the node is armed, and a
        job enqueued alone comes with the wake-up, already leased: no claim at all. None if
        nothing woke it within ``timeout``, or if the event loop needed it back (a stop, a
        persist=False job, a slot opened for a worker it is not armed for)."""
        backend = self.backend
        assert backend is not None
        self._io_wake.clear()
        self._io_interrupted = False
        self._io_waiting = True
        call = functools.partial(
            self._wait_then_claim,
            backend,
            wants,
            not self._busy and not self._local,
            timeout,
        )
        future = asyncio.get_running_loop().run_in_executor(self._io, call)
        waiter: asyncio.Future[Any] | None = None
        try:
            if not self._wake.is_set():
                waiter = asyncio.ensure_future(self._wake.wait())
                either: set[asyncio.Future[Any]] = {future, waiter}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not future.done():
                self._io_interrupted = True  # the loop has work: let the I/O thread go
                self._io_wake.set()
                self._unblock_io()
            return await future
        finally:
            self._io_waiting = False
            if waiter is not None:
                waiter.cancel()
            if not future.done():
                # Cancelled: let the I/O thread go; a claim it made meanwhile is handed
                # back by the next pass (or taken over once this node is gone).
                self._io_interrupted = True
                self._io_wake.set()
                self._unblock_io()
                self._reconcile = True
            elif self._io_wake.is_set() and not self._io_interrupted:
                # Woken again while the I/O thread claimed (it clears _io_wake first): that
                # job may have come after the claim, so claim again.
                self._wake.set()

    def _wait_then_claim(
        self, backend: Backend, wants: dict[str, int], alone: bool, timeout: float | None
    ) -> list[ClaimedJob] | None:
        """On the I/O thread: see :meth:`_claim_when_woken`. Where the store hands jobs
        over, the wait is on the store: a job handed over (leased to this node by the
        enqueue, which the claim before this wait armed) is returned as claimed."""
        if self._handoff:
            assert timeout is not None
            if self._io_wake.is_set():
                handed: list[ClaimedJob] | None = []  # woken before the wait began
            else:
                handed = backend.wait_handoff(self.id, timeout)  # type: ignore[attr-defined]
            if handed:
                self._arm_slots -= len(handed)
                if self._arm_slots <= 0:
                    self._armed_for = frozenset()  # the enqueue disarmed it
                # Started by the loop's next callback, not after the executor's future, the
                # wait and this coroutine have each taken a turn of the loop (50-100 us).
                loop = self._loop
                assert loop is not None
                loop.call_soon_threadsafe(self._start_handed, handed)
                # A wake-up that came meanwhile stays set: the loop claims again.
                return _Started(handed)
            if self._io_interrupted or self._stop_requested:
                # The loop has other work (a stop, a persist=False job) and may not claim
                # soon: no job may be handed to a node that does not wait for it.
                self._disarm_now()
                return None
            if handed is None:
                return None  # the loop claims at once, which disarms
            self._io_wake.clear()  # a wake-up from now on asks for another claim
        else:
            if not self._io_wake.wait(timeout):
                return None
            self._io_wake.clear()  # a wake-up from now on asks for another claim
        if self._io_interrupted or self._stop_requested:
            return None
        return self._claim(backend, wants, alone, self._handoff)

    def _start_handed(self, jobs: list[ClaimedJob]) -> None:
        """On the loop: start jobs handed over, unless the wait that got them was given up
        meanwhile (a cancelled serve()): those are claims this node does not know of, which
        it hands back (_reconcile is set)."""
        if self._io_waiting:
            self._start_all(jobs)

    async def _disarm(self, *, last: bool = False) -> None:
        """:meth:`_disarm_now` from the loop; a store that fails is only logged (the arming
        runs out by itself, and a claim disarms too)."""
        try:
            await self._call(functools.partial(self._disarm_now, last=last))
        except Exception as exc:
            logger.warning("could not stop jobs being handed to this node: %s", exc)

    def _disarm_now(self, *, last: bool = False) -> None:
        """On the I/O thread: no more jobs handed over to this node until it arms again;
        those handed over and not taken go back to the store (see RedisBackend.disarm).
        ``last``: the node is stopping; wake-up markers still on their way land first, so
        that nothing of this node is left in the store."""
        if last:
            for pusher in self._pushers:
                pusher.join(5.0)
        backend: Any = self.backend
        backend.disarm(self.id, list(self._workers))
        self._armed_for = frozenset()

    async def _hand_back_ghosts(self) -> None:
        """Hand back jobs the store says this node holds but it does not run: claims whose
        reply was lost (a timeout, a dropped connection). Called from the claim loop, so no
        claim of ours is in flight; jobs that finished and wait for their ack are kept."""
        backend = self.backend
        assert backend is not None
        try:
            held = await self._call(backend.held_by, self.id)
            mine = {(c.id, c.token) for c in self._tasks.values() if c is not None}
            mine |= {(c.id, c.token) for jobs in self._batches.values() for c in jobs}
            mine |= {(ran[0].id, ran[0].token) for ran in self._outcomes}
            mine |= {(o.id, o.token) for o in self._acks_in_flight}
            ghosts = [claim for claim in held if tuple(claim) not in mine]
            if ghosts:
                n = await self._call(backend.hand_back, self.id, ghosts)
                logger.warning(
                    "handed back %d job(s) claimed for this node whose claim reply was lost", n
                )
            self._reconcile = False
        except Exception as exc:
            logger.warning("could not check this node's claims yet (%s)", exc)

    async def _sleep_or_wake(self, timeout: float | None) -> None:
        if self._wake.is_set():
            return
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass

    @staticmethod
    def _any_full(claimed: list[ClaimedJob], wants: dict[str, int]) -> bool:
        got = collections.Counter(job.worker for job in claimed)
        return any(got[worker] >= n for worker, n in wants.items())

    def _capacity(self, cls: type[Worker], starting: int = 0, starting_sync: int = 0) -> int:
        """How many more jobs of ``cls`` this node may run, once ``starting`` more of them
        (and ``starting_sync`` of all ``def`` workers) have started."""
        cap = self.settings.claim_batch
        limit = cls.worker_options.max_concurrency
        if limit is not None:
            cap = min(cap, limit - self._running[cls.worker_name] - starting)
        if not cls.is_async:
            # Jobs beyond the free threads would only wait, holding their leases.
            cap = min(cap, self.settings.threads - self._running_sync - starting_sync)
        return cap

    def _wants(self, starting: Sequence[ClaimedJob] = ()) -> dict[str, int]:
        """What to claim: room per worker, once the jobs ``starting`` have started."""
        workers = list(self._workers.values())
        if not workers or self._isolating:
            return {}  # a suspect job runs alone: see Backend.claim
        got = collections.Counter(job.worker for job in starting)
        got_sync = sum(n for w, n in got.items() if (c := self._workers.get(w)) and not c.is_async)
        # Rotate so that no worker always claims first.
        start = next(self._rotation) % len(workers)
        wants: dict[str, int] = {}
        for cls in workers[start:] + workers[:start]:
            cap = self._capacity(cls, got[cls.worker_name], got_sync)
            if cap > 0:
                wants[cls.worker_name] = cap
        return wants

    def _start_local_jobs(self) -> None:
        waiting = len(self._local)
        for _ in range(waiting):
            job = self._local.popleft()
            if self._capacity(job.worker) > 0:
                me: list[asyncio.Task[None]] = []
                self._spawn(job.worker, job.id, self._run_local(job, me), None, me)
            else:
                self._local.append(job)

    def _start_all(self, jobs: Iterable[ClaimedJob]) -> None:
        """Start claimed jobs, in their order. Each run of ``async def`` jobs without a
        time limit goes to one task that runs them one after the other (:meth:`_run_batch`);
        any other job gets a task of its own."""
        batch: list[ClaimedJob] = []
        workers = self._workers
        alone = self.settings.task_per_job
        for job in jobs:
            cls = workers.get(job.worker)
            if (
                alone
                or cls is None
                or not cls.is_async
                or job.suspect
                or (job.options.get("timeout") or cls.worker_options.timeout) is not None
            ):
                if batch:
                    self._start_batch(batch)
                    batch = []
                self._start(job)
                continue
            self._running[cls.worker_name] += 1
            batch.append(job)
        if batch:
            self._start_batch(batch)

    def _start_batch(self, batch: list[ClaimedJob]) -> None:
        """The task for a run of jobs (:meth:`_run_batch`), made once the run is complete:
        an eager task factory (Python 3.12+, in a loop of the user's) runs it at once."""
        me: list[asyncio.Task[None]] = []
        task = asyncio.get_running_loop().create_task(self._run_batch(batch, me), name="toniq-jobs")
        if not me:  # else it ran (and registered itself) already
            me.append(task)
            self._batches[task] = batch
        task.add_done_callback(self._batch_done)

    async def _run_batch(self, jobs: list[ClaimedJob], me: list[asyncio.Task[None]]) -> None:
        """Run ``jobs`` one after the other in this task while they finish without waiting
        (no-op jobs, cache writes...): a task each would cost more than many such jobs. The
        first that waits makes this task its own (see :mod:`toniq.eager`); the jobs after
        it get a task each. Every job runs in a context of its own, as in a task."""
        if not me:  # started eagerly, inside create_task (a user's eager task factory)
            me.append(_task(me))
            self._batches[me[0]] = jobs
        task = me[0]
        jobs.reverse()  # popped from the end as they finish; shutdown hands back the rest
        workers = self._workers
        while jobs:
            job = jobs[-1]
            coro = self._run_claimed(job, workers[job.worker], me)
            context = contextvars.copy_context()
            try:
                waiting = context.run(coro.send, None)
            except StopIteration:
                pass
            except (Exception, asyncio.CancelledError):
                # Not the job's own error (_run_claimed keeps that as its outcome): as with
                # a task of its own, the jobs after it still run.
                logger.exception("node error after job %s (%s) ran", job.id, job.worker)
            else:  # it waits: this task is its own from now on
                jobs.pop()
                del self._batches[task]
                self._tasks[task] = job
                task.set_name(f"toniq-job-{job.id}")
                self._spawn_rest(jobs)
                await Resume(coro, context, waiting)
                return
            jobs.pop()
            if task.cancelling():
                break  # the job cancelled its task: that must not reach the next job
        del self._batches[task]
        self._spawn_rest(jobs)  # left after a job cancelled this task: a task each

    def _spawn_rest(self, jobs: list[ClaimedJob]) -> None:
        """Start the jobs left of a batch (last first), counted already, a task each."""
        workers = self._workers
        while jobs:
            later = jobs.pop()
            cls = workers[later.worker]
            mine: list[asyncio.Task[None]] = []
            self._spawn(
                cls, later.id, self._run_claimed(later, cls, mine), later, mine, counted=True
            )

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        """A batch's task cancelled before it ran (shutdown): its jobs, handed back by
        :meth:`_shutdown`, no longer count as running."""
        for job in self._batches.pop(task, ()):
            self._running[job.worker] -= 1

    def _start(self, job: ClaimedJob) -> None:
        if job.suspect:
            self._isolating = True
            logger.warning(
                "job %s (%s) lost its node %d time(s) before; running it alone",
                job.id,
                job.worker,
                max(1, self.settings.max_node_deaths - 1),
            )
        cls = self._workers.get(job.worker)
        me: list[asyncio.Task[None]] = []
        self._spawn(cls, job.id, self._run_claimed(job, cls, me), job, me)

    def _spawn(
        self,
        cls: type[Worker] | None,
        job_id: str,
        coro: Any,
        claim: ClaimedJob | None,
        me: list[asyncio.Task[None]],
        *,
        counted: bool = False,
    ) -> None:
        """Run ``coro`` as a task of its own; ``me`` gets the task, for the coroutine's
        :meth:`_finished` (asyncio.current_task() is Python code in 3.11, and a node calls
        it once a job). ``counted``: the job is in ``_running`` already."""
        if cls is not None and not counted:
            self._running[cls.worker_name] += 1
            if not cls.is_async:
                self._running_sync += 1
        task = asyncio.get_running_loop().create_task(coro, name=f"toniq-job-{job_id}")
        me.append(task)
        if not task.done():  # an eager task factory (3.12+) may have run it to its end
            self._tasks[task] = claim

    def _finished(self, cls: type[Worker] | None, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not self._tasks:
            self._isolating = False
        if cls is not None:
            self._running[cls.worker_name] -= 1
            if not cls.is_async:
                self._running_sync -= 1
            limited = cls.worker_options.max_concurrency is not None or not cls.is_async
            armed = self._io_waiting and cls.worker_name in self._armed_for
            if (limited and not armed) or self._local:
                # A slot opened: claim for it now rather than at the next poll. Not for a
                # worker the node is armed for: its jobs are handed over, up to the slots
                # armed, and the next claim arms for the room there is then.
                self._wake.set()

    async def _perform(
        self,
        cls: type[Worker],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> None:
        instance = cls()
        if cls.is_async:
            await run_async(lambda: instance.perform(*args, **kwargs), timeout)
            return
        target: Callable[[], Any] = functools.partial(instance.perform, *args, **kwargs)
        if timeout is not None:
            target = functools.partial(run_in_child, target, timeout)
        call = functools.partial(self._in_thread, contextvars.copy_context().run, target)
        await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def _in_thread(self, run: Callable[[Callable[[], Any]], Any], target: Callable[[], Any]) -> Any:
        with self._threads_lock:
            self._threads_busy += 1
        try:
            return run(target)
        finally:
            with self._threads_lock:
                self._threads_busy -= 1

    @property
    def busy_threads(self) -> int:
        """Threads still running a ``def`` job; after :meth:`stop` these are jobs that were
        handed back but that Python cannot interrupt."""
        with self._threads_lock:
            return self._threads_busy

    async def _run_claimed(
        self, job: ClaimedJob, cls: type[Worker] | None, me: list[asyncio.Task[None]]
    ) -> None:
        started = time.monotonic()
        error: JobError | None = None
        retry_in: float | None = None
        try:
            reason: str | None = None
            if cls is None:
                reason = f"unknown worker {job.worker!r} on node {self.id}"
            else:
                try:  # verified before anything is unpickled
                    args, kwargs = open_payload(
                        job.payload,
                        self._keyring,
                        job_id=job.id,
                        worker=job.worker,
                        enqueued_at=job.enqueued_at,
                        max_size=self.settings.max_payload_size,
                    )
                except ValueError as exc:
                    reason = f"cannot read the job's arguments: {exc}"
            if reason is not None or cls is None:
                error = JobError.reason(CANNOT_RUN, reason or "", attempt=job.attempt, node=self.id)
                logger.error("job %s (%s) cannot run: %s", job.id, job.worker, error.message)
            else:
                timeout = job.options.get("timeout") or cls.worker_options.timeout
                if cls.is_async and timeout is None:
                    # The usual case, with no coroutine between the task and the job: each
                    # one costs time, and memory while 100,000 jobs wait at once.
                    await cls().perform(*args, **kwargs)
                else:
                    await self._perform(cls, args, kwargs, timeout)
        except BaseException as exc:
            if (
                isinstance(exc, asyncio.CancelledError)
                and (task := _task(me)) in self._stop_cancelled
            ):
                self._finished(cls, task)
                raise  # a stop: handed back to the store by _shutdown
            # Anything else is the job's failure, a CancelledError too that no stop sent
            # (from a task it awaited that something else cancelled, a watchdog...).
            assert cls is not None
            error = JobError.from_exception(exc, attempt=job.attempt, node=self.id)
            retry_in = retry_delay(cls, self.settings, job.attempt)
            log_failure(
                job.id,
                job.worker,
                job.attempt,
                retries_for(cls, self.settings),
                error,
                retry_in,
                exc,
            )
        self._finished(cls, _task(me))
        if error is None:
            self.stats.done += 1
            kind = EventKind.DONE
        elif retry_in is not None:
            self.stats.retried += 1
            kind = EventKind.RETRYING
        else:
            self.stats.failed += 1
            kind = EventKind.FAILED
        retry_at = None if retry_in is None else time.time() + retry_in
        outcome = Outcome(job.id, job.token, job.worker, error, retry_in)
        duration = time.monotonic() - started
        self._outcomes.append((outcome, cls, kind, job.attempt, duration, retry_at))
        self._ack_wake.set()

    async def _run_local(self, job: _LocalJob, me: list[asyncio.Task[None]]) -> None:
        started = time.monotonic()
        error: JobError | None = None
        try:
            await self._perform(job.worker, job.args, job.kwargs, job.timeout)
            self.stats.local_done += 1
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and _task(me) in self._stop_cancelled:
                logger.warning(
                    "persist=False job %s (%s) was cancelled by shutdown",
                    job.id,
                    job.worker.worker_name,
                )
                raise
            self.stats.local_failed += 1
            error = JobError.from_exception(exc, attempt=1, node=self.id)
            logger.error(
                "job %s (%s, persist=False) failed: %s",
                job.id,
                job.worker.worker_name,
                error,
                exc_info=exc,
            )
        finally:
            self._finished(job.worker, _task(me))
        kind = EventKind.DONE if error is None else EventKind.FAILED
        self._emit(
            JobEvent(
                kind,
                job.id,
                job.worker.worker_name,
                1,
                self.id,
                time.monotonic() - started,
                error,
                persisted=False,
            ),
            job.worker,
        )

    def _emit(self, event: JobEvent, cls: type[Worker] | None) -> None:
        """Hooks run after the outcome is stored; a failing hook is only logged."""
        emit(self.app.events, event, cls)

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            await self._flush_acks()
            if self._closing and not self._outcomes:
                return

    async def _flush_acks(self) -> None:
        backend = self.backend
        failures = 0
        while self._outcomes and backend is not None:
            batch, self._outcomes = self._outcomes, []
            self._acking = True
            outcomes = [ran[0] for ran in batch]
            self._acks_in_flight = outcomes
            try:
                report = await self._call_ack(backend, outcomes)
            except Exception as exc:
                failures += 1
                if self._closing and failures > 5:
                    logger.error(
                        "could not store the outcome of %d job(s) while stopping (%s); they "
                        "will be taken over and run again",
                        len(batch),
                        exc,
                    )
                    continue
                self._outcomes[:0] = batch  # keep them, in order, for the next try
                delay = min(0.05 * 2**failures, 5.0)
                logger.warning(
                    "acknowledging %d job(s) failed (%s); retrying in %.2fs", len(batch), exc, delay
                )
                await asyncio.sleep(delay)
                continue
            finally:
                self._acking = False
                self._acks_in_flight = []
            rejected = set(report.rejected)
            if rejected:
                self.stats.acks_rejected += len(rejected)
                logger.warning(
                    "%d acknowledgement(s) rejected: the jobs were taken over from this node "
                    "(it was presumed dead) and belong to another node now: %s",
                    len(rejected),
                    ", ".join(report.rejected[:10]),
                )
            bus = self.app.events
            # The event is made only if a hook or subscriber takes it: most nodes have none,
            # and making one cost every job about 1 us. Asked once per worker and kind.
            heard: dict[tuple[type[Worker] | None, EventKind], bool] = {}
            for outcome, cls, kind, attempt, duration, retry_at in batch:
                listens = heard.get((cls, kind))
                if listens is None:
                    listens = heard[cls, kind] = has_listeners(bus, kind, cls)
                if listens and outcome.id not in rejected:
                    event = JobEvent(
                        kind,
                        outcome.id,
                        outcome.worker,
                        attempt,
                        self.id,
                        duration,
                        outcome.error,
                        retry_at,
                    )
                    self._emit(event, cls)
        if not self._busy and (not self._armed_for or self._drainers):
            # Maybe idle now: let the claim loop notice (drain, burst). Not while it waits
            # armed for a hand-over (never in burst): waking it would cost a claim per job.
            self._wake.set()

    async def _shutdown(self, ack_task: asyncio.Task[None]) -> None:
        if self._handoff and self.backend is not None:
            # Before the grace period: the loop may have left while armed (a stop that came
            # with a hand-over); nothing more may be handed to a stopping node.
            await self._disarm()
        if self._busy and not self._force:
            logger.info(
                "waiting up to %gs for %d running job(s)", self.settings.grace_period, self.running
            )
            deadline = time.monotonic() + self.settings.grace_period
            while not self._force:
                # Again each time: a batch that starts now gives its later jobs tasks of
                # their own, which the grace period is for too.
                tasks = [t for t in (*self._tasks, *self._batches) if not t.done()]
                remaining = deadline - time.monotonic()
                if not tasks or remaining <= 0:
                    break
                await asyncio.wait(tasks, timeout=min(remaining, 0.1))
        unfinished = [(task, claim) for task, claim in self._tasks.items() if not task.done()]
        unfinished += [
            (task, claim)
            for task, jobs in self._batches.items()
            if not task.done()
            for claim in jobs
        ]
        self._stop_cancelled = {task for task, _ in unfinished}
        for task in self._stop_cancelled:
            task.cancel()
        if unfinished:
            await asyncio.wait(self._stop_cancelled, timeout=1.0)
        # The ack loop may be half-way through a batch: let it finish rather than cancel it
        # (a cancelled executor call that had not started would never run).
        self._closing = True
        self._ack_wake.set()
        await ack_task
        held = [(c.id, c.token) for _, c in unfinished if c is not None]
        backend = self.backend
        if self._handoff and backend is not None:
            # Jobs handed over that this node never took go back (in the same step).
            await self._disarm(last=True)
        if held and backend is not None:
            try:
                released = await self._call(backend.hand_back, self.id, held)
                logger.warning("handed %d unfinished job(s) back to the store", released)
            except Exception:
                logger.exception(
                    "could not hand %d job(s) back; they will be taken over "
                    "when this node's lease expires",
                    len(held),
                )
        if self._handoff and self._reconcile and backend is not None:
            # A wait cut short may have taken a job handed over that never reached the loop.
            await self._hand_back_ghosts()
        if self._local:
            logger.warning(
                "%d persist=False job(s) never started and are dropped", len(self._local)
            )

    # -- the maintenance thread ------------------------------------------------------------

    def _store_ok_for(self, now: float) -> float:
        return 0.0 if self._store_ok_since is None else now - self._store_ok_since

    def _check_server_id(self, backend: Backend) -> None:
        server_id = backend.server_id()
        if server_id is not None and server_id != self._server_id:
            if self._server_id is not None:
                logger.warning(
                    "the store's server restarted (run id %s, was %s): jobs it had not "
                    "persisted are lost; see the persistence table in docs/redis.md",
                    server_id,
                    self._server_id,
                )
            self._server_id = server_id
            self._store_ok_since = time.monotonic()  # others' heartbeats need time too

    def _maintain(self) -> None:
        backend = self.backend
        assert backend is not None
        s = self.settings
        now = time.monotonic()
        next_beat = now + s.heartbeat_interval
        next_takeover = now + s.takeover_interval
        next_unknown = now + min(s.unknown_worker_timeout, 10.0)
        next_prune = now  # prune failed jobs once at start, then every minute
        # Since when this node has reached the store without a failure. After an outage,
        # every node's heartbeat looks stale: a node takes over others only once it has been
        # back for takeover_timeout itself, so live nodes that could not reach the store
        # either have had the time to heart-beat again.
        self._store_ok_since = now
        while True:
            due = min(next_beat, next_takeover, next_unknown, next_prune)
            wait = max(0.0, due - time.monotonic())
            if self._maint_stop.wait(wait):
                return
            now = time.monotonic()
            try:
                if now >= next_beat:
                    next_beat = now + s.heartbeat_interval
                    self._check_server_id(backend)
                    if not backend.heartbeat(self.id):
                        logger.warning(
                            "node %s was presumed dead (no heartbeat for %.1fs) and its jobs "
                            "were taken over; registering again",
                            self.id,
                            s.takeover_timeout,
                        )
                        self.stats.taken_over += 1
                        backend.register_node(self._info())
                if now >= next_takeover and self._store_ok_for(now) < s.takeover_timeout:
                    next_takeover = now + s.takeover_interval
                elif now >= next_takeover:
                    next_takeover = now + s.takeover_interval
                    report = backend.take_over(s.takeover_timeout, s.max_node_deaths)
                    if report.dead_nodes or report.requeued or report.failed:
                        logger.warning(
                            "took over from dead node(s) %s: %d job(s) back to available%s",
                            ", ".join(report.dead_nodes) or "-",
                            len(report.requeued),
                            f", {len(report.failed)} to failed: their node died under them "
                            f"{s.max_node_deaths} times, the last time while they ran alone"
                            if report.failed
                            else "",
                        )
                if now >= next_unknown:
                    next_unknown = now + min(s.unknown_worker_timeout, 10.0)
                    failed = backend.fail_unrunnable(s.unknown_worker_timeout)
                    if failed:
                        logger.error(
                            "%d job(s) failed: no live node registers their worker", len(failed)
                        )
                if now >= next_prune:
                    next_prune = now + PRUNE_INTERVAL
                    pruned = backend.prune_failed(s.failed_max_count, s.failed_max_age)
                    if pruned:
                        logger.info(
                            "deleted %d old failed job(s) (retention: %d jobs, %.0f days)",
                            pruned,
                            s.failed_max_count,
                            s.failed_max_age / 86400,
                        )
                if self._store_ok_since is None:
                    self._store_ok_since = now
            except Exception:
                self._store_ok_since = None
                logger.exception("node %s maintenance step failed; trying again", self.id)
