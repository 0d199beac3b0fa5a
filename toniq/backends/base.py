"""The Backend protocol: the one interface every store implements.

Every method is one atomic state change inside the store (a transaction on
SQLite, one Lua script on Redis): there is no read-then-write across round
trips. Methods are synchronous and thread-safe; the node calls them from a
dedicated I/O thread and its heartbeat thread. Times are taken from the store's
clock (on Redis, the server's ``TIME``), never passed in by a caller, so nodes
with skewed clocks still agree on who is alive.

The contract every backend must pass lives in ``tests/backends/test_contract.py``.

One capability is optional, and only the Redis backend has it: hand-over. A backend whose
``handoff`` attribute is true also takes ``claim(..., arm=seconds, slots=n)`` and has
``handoff_allowed()``, ``handoff_wait(timeout)``, ``wait_handoff(node_id, timeout)``,
``wake_handoff(node_id)`` and ``disarm(node_id, workers)``; a node with room then blocks in
``wait_handoff`` and gets up to ``n`` jobs enqueued alone already leased to it (see
``toniq.backends.redis`` and docs/redis.md). A backend without it is used as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from toniq.job import (
    AckReport,
    ClaimedJob,
    JobRecord,
    JobState,
    NewJob,
    NodeInfo,
    Outcome,
    TakeoverReport,
)

#: Finished runs are counted per worker in one-second buckets of the store's clock, kept in a
#: ring of this many seconds (so the store never holds more than this many buckets per worker):
#: :meth:`Backend.finished_recently` can look back at most :data:`MAX_WINDOW` seconds.
RING_SECONDS = 64  # also written out in lua/ack.lua
MAX_WINDOW = 60


def check_window(window: int) -> int:
    """The look-back of :meth:`Backend.finished_recently`: whole seconds, 1 to 60."""
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= MAX_WINDOW:
        raise ValueError(f"window must be whole seconds from 1 to {MAX_WINDOW}, got {window!r}")
    return window


def in_window(sec: int, now: float, window: int) -> bool:
    """Whether the bucket of second ``sec`` is one of the last ``window`` at ``now`` (the
    current, partly elapsed second included)."""
    current = int(now)
    return current - window < sec <= current


def _nothing() -> None:
    pass


class NoServer:
    """For stores with no server of their own to check (memory, SQLite)."""

    def server_warnings(self) -> list[str]:
        return []

    def server_id(self) -> str | None:
        return None

    def watch(self, callback: Callable[[], object]) -> Callable[[], None]:
        # Nodes in the enqueuing process are woken by the app itself; other processes poll.
        return _nothing


@runtime_checkable
class Backend(Protocol):
    """Where jobs are stored. See the module docstring for the rules all methods follow."""

    #: The URL this backend was made from, with any password hidden.
    url: str

    def enqueue(self, jobs: Sequence[NewJob]) -> None:
        """Store all ``jobs`` as AVAILABLE (or SCHEDULED if ``run_at`` is in the future),
        or none of them: raises :class:`toniq.EnqueueError` and leaves nothing behind."""

    def claim(
        self,
        node_id: str,
        wants: Mapping[str, int],
        *,
        alone: bool = False,
        suspect_after: int = 2,
    ) -> list[ClaimedJob]:
        """Lease up to ``wants[worker]`` AVAILABLE jobs of each worker to ``node_id``, oldest
        first, marking them RUNNING with a fresh token and one more attempt. Returns nothing
        if ``node_id`` is not a registered, live node.

        Jobs whose node died under them ``suspect_after`` times or more are *suspects*: they
        are handed out only to a node that runs nothing (``alone``), one at a time and with
        nothing else (``ClaimedJob.suspect``), so that if that node dies too, the death is
        blamed on that job alone and not on jobs that happened to share its node.
        ``suspect_after`` is at least 1."""

    def ack(self, node_id: str, outcomes: Sequence[Outcome]) -> AckReport:
        """Finish runs: a success deletes the job (a done counter is kept); an error is
        appended to the job, which becomes SCHEDULED ``retry_in`` seconds from the store's now
        if the outcome has a ``retry_in``, else FAILED. An outcome counts only if its
        ``(id, token)`` holds a RUNNING claim of ``node_id`` for ``outcome.worker``, once per
        run (the same outcome twice in one batch: the second is rejected); otherwise it is
        rejected and changes nothing."""

    def hand_back(self, node_id: str, jobs: Sequence[tuple[str, str]]) -> int:
        """Hand ``(id, token)`` claims back as AVAILABLE at once (graceful shutdown). The
        attempt they used is given back. Returns how many were still held."""

    def held_by(self, node_id: str) -> list[tuple[str, str]]:
        """The ``(id, token)`` of every RUNNING job the store says ``node_id`` holds. A node
        compares it with what it runs to find claims whose reply it never received."""

    def register_node(self, info: NodeInfo) -> None:
        """Record a node as alive from now (its heartbeat time is the store's now)."""

    def heartbeat(self, node_id: str) -> bool:
        """Renew a node's lease. ``False`` if the node is unknown: it was taken over (its jobs
        are gone from it) and must register again before it claims."""

    def unregister_node(self, node_id: str) -> None:
        """Forget a node that stopped cleanly (after releasing its jobs)."""

    def take_over(self, timeout: float, max_node_deaths: int) -> TakeoverReport:
        """Take the jobs of nodes whose last heartbeat is older than ``timeout`` seconds (and
        RUNNING jobs of no known node): each gets a ``toniq.NodeLost`` error, one more node
        death and its attempt back, and goes back to AVAILABLE at its old place in line. It
        goes to FAILED instead once it has lost ``max_node_deaths`` nodes, the last of them
        while it was the dead node's only RUNNING job; a job that died in company stays at
        ``max_node_deaths - 1`` deaths (a suspect, see :meth:`claim`). Dead nodes are removed.
        Atomic, so when several nodes call it, each job is taken exactly once."""

    def fail_unrunnable(self, older_than: float) -> list[str]:
        """Move AVAILABLE jobs enqueued more than ``older_than`` seconds ago whose worker no
        registered node runs to FAILED with a ``toniq.CannotRun`` reason. Returns their ids."""

    def jobs(
        self, state: JobState, worker: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[JobRecord]:
        """Stored jobs in ``state`` (optionally of one worker): FAILED newest first,
        SCHEDULED soonest first, AVAILABLE and RUNNING oldest first."""

    def retry_failed(self, ids: Sequence[str] | None = None, worker: str | None = None) -> int:
        """Make FAILED jobs AVAILABLE again with a fresh attempt count, keeping their errors:
        those in ``ids``, or all (of ``worker``, if given). Returns how many."""

    def delete_failed(self, ids: Sequence[str] | None = None, worker: str | None = None) -> int:
        """Delete FAILED jobs: those in ``ids``, or all (of ``worker``). Returns how many."""

    def release_scheduled(self, ids: Sequence[str] | None = None, worker: str | None = None) -> int:
        """Make SCHEDULED jobs (delayed, held or waiting for a retry) AVAILABLE now: those
        in ``ids``, or all (of ``worker``). Returns how many."""

    def prune_failed(self, max_count: int, max_age: float) -> int:
        """Delete FAILED jobs older than ``max_age`` seconds, then the oldest beyond
        ``max_count``. Returns how many."""

    def nodes(self) -> list[NodeInfo]:
        """The registered nodes."""

    def get_job(self, job_id: str) -> JobRecord | None:
        """A stored job, or ``None`` (never stored, or finished and deleted)."""

    def counts(self) -> dict[str, dict[str, int]]:
        """``{worker: {state: n}}`` over stored jobs, plus the ``done`` counter."""

    def finished_recently(self, window: int = 60) -> dict[str, dict[str, int]]:
        """Runs acknowledged in the last ``window`` seconds (1 to 60, by the store's clock, in
        one-second buckets, the current second included), per worker: ``{worker: {"done": n,
        "errors": m}}``, where errors are runs that raised (retried or failed). Workers with
        none are left out. Kept by :meth:`ack` in a bounded ring of buckets, so any process
        can read the throughput of every node at once."""

    def server_warnings(self) -> list[str]:
        """What about the store's own configuration can lose jobs (a Redis that evicts keys
        or persists nothing); a node logs each at WARNING when it starts. Empty if nothing."""

    def server_id(self) -> str | None:
        """An id that changes when the store's server restarts (Redis's run id), or None."""

    def watch(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback`` (from any thread) whenever jobs may have become claimable
        because another process enqueued them, so an idle node claims at once rather than at
        its next poll. A hint only: it may be late, spurious or missing (nodes still poll).
        Returns a function that stops watching."""

    def signing_secret(self) -> bytes | None:
        """The key that signs payloads when none is configured: SQLite keeps a random one
        in the database (made on first use), memory one per backend; Redis has none (a key
        kept in Redis would be readable by whoever can write jobs there). docs/security.md."""

    def close(self) -> None:
        """Release connections. Later calls raise :class:`toniq.StoreClosedError`."""
