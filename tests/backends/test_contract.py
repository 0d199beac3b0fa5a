"""The backend contract: every backend must pass this suite unchanged.

A new backend joins by adding its URL to ``conftest.BACKENDS``. The suite also runs on a
Redis Cluster (``conftest.CONTRACT_BACKENDS``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CONTRACT_BACKENDS, backend_url
from toniq.backends import Backend, from_url
from toniq.errors import EnqueueError, StoreClosedError
from toniq.job import (
    CANNOT_RUN,
    HELD,
    NODE_LOST,
    JobError,
    JobState,
    NewJob,
    NodeInfo,
    Outcome,
)
from toniq.serialization import dumps_unsigned as dumps

W = "contract.W"
V = "contract.V"


@pytest.fixture(params=CONTRACT_BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend(backend_kind: str, tmp_path: Path) -> Iterator[Backend]:
    backend = from_url(backend_url(backend_kind, tmp_path))
    yield backend
    backend.close()


def new(worker: str = W, n: int = 1, run_at: float | None = None) -> list[NewJob]:
    return [
        NewJob(f"{worker}-{time.monotonic_ns()}-{i}", worker, dumps((i,), {}), time.time(), run_at)
        for i in range(n)
    ]


def node(backend: Backend, name: str = "n1", workers: tuple[str, ...] = (W, V)) -> str:
    now = time.time()
    backend.register_node(NodeInfo(name, "host", 1, now, now, workers))
    return name


def test_is_a_backend(backend: Backend) -> None:
    assert isinstance(backend, Backend)


def test_enqueue_then_claim_in_fifo_order(backend: Backend) -> None:
    jobs = new(n=5)
    backend.enqueue(jobs)
    n = node(backend)
    claimed = backend.claim(n, {W: 3})
    assert [c.id for c in claimed] == [j.id for j in jobs[:3]]
    assert all(c.attempt == 1 and c.token for c in claimed)
    rest = backend.claim(n, {W: 10})
    assert [c.id for c in rest] == [j.id for j in jobs[3:]]
    assert backend.claim(n, {W: 10}) == []
    record = backend.get_job(jobs[0].id)
    assert record is not None and record.state is JobState.RUNNING and record.node == n


def test_claim_only_for_the_workers_asked(backend: Backend) -> None:
    backend.enqueue(new(W, 2) + new(V, 2))
    n = node(backend)
    claimed = backend.claim(n, {V: 5})
    assert {c.worker for c in claimed} == {V} and len(claimed) == 2
    assert backend.counts()[W] == {"available": 2}


def test_unregistered_node_claims_nothing(backend: Backend) -> None:
    backend.enqueue(new())
    assert backend.claim("ghost", {W: 1}) == []


def test_concurrent_claims_never_share_a_job(backend: Backend) -> None:
    backend.enqueue(new(n=300))
    names = [node(backend, f"n{i}") for i in range(4)]
    got: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while claimed := backend.claim(name, {W: 7}):
            with lock:
                got.extend(c.id for c in claimed)

    threads = [threading.Thread(target=claimer, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 300 and len(set(got)) == 300


def test_ack_success_deletes_the_job_and_counts_it(backend: Backend) -> None:
    backend.enqueue(new(n=2))
    n = node(backend)
    claimed = backend.claim(n, {W: 2})
    report = backend.ack(n, [Outcome(c.id, c.token, c.worker) for c in claimed])
    assert report.accepted == 2 and report.rejected == ()
    assert all(backend.get_job(c.id) is None for c in claimed)
    assert backend.counts() == {W: {"done": 2}}


def test_ack_error_keeps_the_job_failed_with_its_error(backend: Backend) -> None:
    backend.enqueue(new())
    n = node(backend)
    (c,) = backend.claim(n, {W: 1})
    try:
        raise ValueError("bad input")
    except ValueError as exc:
        error = JobError.from_exception(exc, attempt=c.attempt, node=n)
    backend.ack(n, [Outcome(c.id, c.token, c.worker, error)])
    record = backend.get_job(c.id)
    assert record is not None and record.state is JobState.FAILED
    assert record.finished_at is not None and record.node is None
    (stored,) = record.errors
    assert stored.type == "ValueError" and stored.message == "bad input"
    assert "raise ValueError" in stored.traceback and stored.attempt == 1 and stored.node == n
    assert backend.counts() == {W: {"failed": 1}}


def test_ack_with_a_wrong_token_is_rejected(backend: Backend) -> None:
    backend.enqueue(new())
    n = node(backend)
    (c,) = backend.claim(n, {W: 1})
    report = backend.ack(n, [Outcome(c.id, "not-the-token", c.worker)])
    assert report.accepted == 0 and report.rejected == (c.id,)
    record = backend.get_job(c.id)
    assert record is not None and record.state is JobState.RUNNING


def test_an_ack_counts_only_with_the_claims_own_token(backend: Backend) -> None:
    jobs = new(n=2)
    backend.enqueue(jobs)
    n = node(backend)
    c, d = backend.claim(n, {W: 2})
    for token in (c.token[:-1], c.token + "0", d.token[::-1]):  # a part, more, another
        report = backend.ack(n, [Outcome(c.id, token, W)])
        assert report.accepted == 0 and report.rejected == (c.id,), token
    record = backend.get_job(c.id)
    assert record is not None and record.state is JobState.RUNNING and record.node == n
    assert backend.ack(n, [Outcome(c.id, c.token, W)]).accepted == 1
    error = JobError.reason(CANNOT_RUN, "no", attempt=1, node=n)
    assert backend.ack(n, [Outcome(d.id, d.token, W, error)]).accepted == 1
    record = backend.get_job(d.id)
    assert record is not None and record.state is JobState.FAILED
    assert backend.counts() == {W: {"done": 1, "failed": 1}}


def test_an_ack_counts_only_from_the_node_and_for_the_worker_of_the_claim(
    backend: Backend,
) -> None:
    """Beyond the token: the node that holds the claim and the worker it is for; and a run
    counts once, also when its outcome comes twice in one batch."""
    backend.enqueue(new(n=2))
    n, other = node(backend), node(backend, "n2", (W, V))
    c, d = backend.claim(n, {W: 2})
    assert backend.ack(other, [Outcome(c.id, c.token, W)]).rejected == (c.id,)
    assert backend.ack(n, [Outcome(c.id, c.token, V)]).rejected == (c.id,)
    error = JobError.reason(CANNOT_RUN, "no", attempt=1, node=n)
    assert backend.ack(other, [Outcome(d.id, d.token, W, error)]).rejected == (d.id,)
    assert backend.ack(n, [Outcome(d.id, d.token, V, error)]).rejected == (d.id,)
    assert sorted(backend.held_by(n)) == sorted([(c.id, c.token), (d.id, d.token)])
    report = backend.ack(n, [Outcome(c.id, c.token, W), Outcome(c.id, c.token, W)])
    assert report.accepted == 1 and report.rejected == (c.id,)
    report = backend.ack(n, [Outcome(d.id, d.token, W, error)] * 2)
    assert report.accepted == 1 and report.rejected == (d.id,)
    assert backend.counts() == {W: {"done": 1, "failed": 1}}


def test_a_claim_reads_every_kind_of_record_alike(backend: Backend) -> None:
    """Jobs with and without options, with an odd worker name, and one that ran before:
    claimed, they carry the same fields, and their records read back RUNNING."""
    odd = 'contract."odd" \\ wörker'
    plain = NewJob("plain", W, dumps((1,), {}), 1_712_345_678.123_456_7)
    timed = NewJob("timed", W, dumps((2,), {}), 1_712_345_678.5, None, {"timeout": 2.5})
    oddly = NewJob("oddly", odd, dumps((3,), {}), 1_712_345_679.25)
    backend.enqueue([plain, timed, oddly])
    n = node(backend, workers=(W, odd))
    first, second = backend.claim(n, {W: 2})
    (third,) = backend.claim(n, {odd: 1})
    got = [(c.id, c.worker, c.attempt, c.enqueued_at, c.options) for c in (first, second, third)]
    assert got == [
        ("plain", W, 1, plain.enqueued_at, {}),
        ("timed", W, 1, timed.enqueued_at, {"timeout": 2.5}),
        ("oddly", odd, 1, oddly.enqueued_at, {}),
    ]
    for c in (first, second, third):
        record = backend.get_job(c.id)
        assert record is not None and record.state is JobState.RUNNING and record.node == n
        assert record.attempt == 1 and record.worker == c.worker and record.started_at
    # Retried at once, the plain job is claimed again as its second attempt.
    error = JobError.reason(CANNOT_RUN, "again", attempt=1, node=n)
    backend.ack(n, [Outcome(first.id, first.token, W, error, 0.0)])
    (again,) = backend.claim(n, {W: 1})
    assert (again.id, again.attempt, again.enqueued_at) == ("plain", 2, plain.enqueued_at)
    report = backend.ack(n, [Outcome(c.id, c.token, c.worker) for c in (again, second, third)])
    assert report.accepted == 3 and report.rejected == ()


def test_hand_back_returns_jobs_at_once(backend: Backend) -> None:
    jobs = new(n=2)
    backend.enqueue(jobs)
    n = node(backend)
    claimed = backend.claim(n, {W: 2})
    assert backend.hand_back(n, [(c.id, c.token) for c in claimed]) == 2
    record = backend.get_job(jobs[0].id)
    assert record is not None and record.state is JobState.AVAILABLE and record.attempt == 0
    again = backend.claim(n, {W: 2})
    assert [c.id for c in again] == [j.id for j in jobs]  # still first in line
    assert all(c.attempt == 1 for c in again)
    # The old claims are void: acking them changes nothing.
    assert backend.ack(n, [Outcome(claimed[0].id, claimed[0].token, W)]).accepted == 0


def test_heartbeat(backend: Backend) -> None:
    n = node(backend)
    assert backend.heartbeat(n) is True
    assert backend.heartbeat("ghost") is False
    assert [info.id for info in backend.nodes()] == [n]
    backend.unregister_node(n)
    assert backend.nodes() == []
    assert backend.heartbeat(n) is False


def test_take_over_a_dead_nodes_jobs_exactly_once(backend: Backend) -> None:
    backend.enqueue(new(n=3))
    dead = node(backend, "dead")
    claimed = backend.claim(dead, {W: 3})
    live = node(backend, "live")
    time.sleep(0.3)  # "dead" stops heart-beating; "live" keeps going
    backend.heartbeat(live)
    reports = [backend.take_over(0.2, 3) for _ in range(3)]
    assert reports[0].dead_nodes == ("dead",)
    assert sorted(reports[0].requeued) == sorted(c.id for c in claimed)
    assert all(r.dead_nodes == () and r.requeued == () for r in reports[1:])
    record = backend.get_job(claimed[0].id)
    assert record is not None and record.state is JobState.AVAILABLE and record.node is None
    assert record.errors[-1].type == NODE_LOST and record.errors[-1].node == "dead"
    # The dead node wakes up: its late acks are rejected, it must register again to claim.
    late = backend.ack(dead, [Outcome(c.id, c.token, W) for c in claimed])
    assert late.accepted == 0 and len(late.rejected) == 3
    assert backend.heartbeat(dead) is False
    assert backend.claim(dead, {W: 3}) == []
    again = backend.claim(live, {W: 3})
    assert sorted(c.id for c in again) == sorted(c.id for c in claimed)
    assert all(c.attempt == 1 for c in again)  # the lost run does not count as a retry


def test_concurrent_take_overs_take_each_job_once(backend: Backend) -> None:
    backend.enqueue(new(n=50))
    backend.claim(node(backend, "dead"), {W: 50})
    for i in range(4):
        node(backend, f"live{i}")
    time.sleep(0.3)
    for i in range(4):
        backend.heartbeat(f"live{i}")
    requeued: list[str] = []
    lock = threading.Lock()

    def taker() -> None:
        report = backend.take_over(0.2, 3)
        with lock:
            requeued.extend(report.requeued)

    threads = [threading.Thread(target=taker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(requeued) == 50 and len(set(requeued)) == 50


def test_a_job_that_keeps_killing_nodes_goes_to_failed(backend: Backend) -> None:
    (job,) = new()
    backend.enqueue([job])
    for round in range(3):
        victim = node(backend, f"victim{round}")
        claimed = backend.claim(victim, {W: 1}, alone=True, suspect_after=2)
        assert [c.id for c in claimed] == [job.id]
        assert claimed[0].suspect == (round == 2)  # after two deaths it runs alone
        time.sleep(0.25)
        report = backend.take_over(0.2, 3)
        assert (job.id in report.failed) == (round == 2)
    record = backend.get_job(job.id)
    assert record is not None and record.state is JobState.FAILED
    assert [e.type for e in record.errors] == [NODE_LOST] * 3


def test_suspects_run_alone_and_company_is_not_blamed(backend: Backend) -> None:
    # A poison job and two innocents die together, twice: nobody is failed for it.
    jobs = new(n=3)
    backend.enqueue(jobs)
    for round in range(2):
        victim = node(backend, f"crowd{round}")
        claimed = backend.claim(victim, {W: 10}, alone=round == 0, suspect_after=2)
        assert len(claimed) == 3 and not any(c.suspect for c in claimed)
        time.sleep(0.25)
        report = backend.take_over(0.2, 3)
        assert len(report.requeued) == 3 and report.failed == ()
    # Now all three are suspects: a busy node gets none, an idle node gets one at a time.
    busy = node(backend, "busy")
    assert backend.claim(busy, {W: 10}, alone=False, suspect_after=2) == []
    idle = node(backend, "idle")
    (first,) = backend.claim(idle, {W: 10}, alone=True, suspect_after=2)
    assert first.suspect and first.id == jobs[0].id
    # A third death in company would not fail them either.
    records = [backend.get_job(j.id) for j in jobs]
    assert all(r is not None and len(r.errors) == 2 for r in records)
    time.sleep(0.25)
    backend.heartbeat(busy)
    report = backend.take_over(0.2, 3)
    assert report.failed == (first.id,)  # it died alone: guilty


def test_enqueue_is_all_or_nothing(backend: Backend) -> None:
    jobs = new(n=3)
    backend.enqueue(jobs[:1])
    with pytest.raises(EnqueueError):
        backend.enqueue(jobs[1:] + jobs[:1])  # the last one is a duplicate id
    assert backend.get_job(jobs[1].id) is None and backend.get_job(jobs[2].id) is None
    assert backend.counts() == {W: {"available": 1}}


def test_one_job_whose_id_is_stored_is_refused_and_changes_nothing(backend: Backend) -> None:
    """The case of every enqueue() call (on Redis a path of its own): the stored job keeps
    its record and its payload."""
    (job,) = new()
    backend.enqueue([job])
    again = NewJob(job.id, W, dumps(("other",), {}), time.time() + 5)
    with pytest.raises(EnqueueError, match="duplicate"):
        backend.enqueue([again])
    record = backend.get_job(job.id)
    assert record is not None and record.enqueued_at == job.enqueued_at
    assert backend.counts() == {W: {"available": 1}}
    (claimed,) = backend.claim(node(backend), {W: 10})
    assert claimed.id == job.id and claimed.payload == job.payload


def shared(n: int, run_at: float | None = None, **options: Any) -> list[NewJob]:
    """Jobs as enqueue_many makes them: one worker, one enqueued_at, run_at and options."""
    now, stamp = time.time(), time.monotonic_ns()
    return [
        NewJob(f"shared-{stamp}-{i}", W, dumps((i,), {}), now, run_at, options) for i in range(n)
    ]


def test_a_batch_sharing_its_times_and_options(backend: Backend) -> None:
    """enqueue_many's form (on Redis a script path of its own): stored in order, with the
    shared fields; all or nothing on a duplicate id, in the batch or already stored."""
    jobs = shared(3, timeout=2.5)
    backend.enqueue(jobs)
    for job in jobs:
        record = backend.get_job(job.id)
        assert record is not None and record.state is JobState.AVAILABLE
        assert record.enqueued_at == job.enqueued_at and record.options == {"timeout": 2.5}
    claimed = backend.claim(node(backend), {W: 3})
    assert [c.id for c in claimed] == [j.id for j in jobs]
    assert [c.payload for c in claimed] == [j.payload for j in jobs]
    twice = shared(2)
    for bad in (twice + twice[:1], shared(1) + jobs[:1]):
        with pytest.raises(EnqueueError):
            backend.enqueue(bad)
        assert backend.get_job(bad[0].id) is None
    later, held = shared(2, run_at=time.time() + 3600), shared(2, run_at=HELD)
    backend.enqueue(later)
    backend.enqueue(held)
    scheduled = backend.jobs(JobState.SCHEDULED)
    assert [r.id for r in scheduled] == [j.id for j in later + held]
    assert [r.held for r in scheduled] == [False, False, True, True]


def test_scheduled_jobs_wait_for_their_time(backend: Backend) -> None:
    (later,) = new(run_at=time.time() + 0.3)
    backend.enqueue([later])
    n = node(backend)
    record = backend.get_job(later.id)
    assert record is not None and record.state is JobState.SCHEDULED
    assert backend.claim(n, {W: 1}) == []
    time.sleep(0.35)
    assert [c.id for c in backend.claim(n, {W: 1})] == [later.id]


def test_jobs_no_live_node_can_run_are_failed_with_the_reason(backend: Backend) -> None:
    orphan = new("nobody.Knows")
    known = new(W)
    backend.enqueue(orphan + known)
    node(backend, workers=(W,))
    assert backend.fail_unrunnable(older_than=60.0) == []  # too recent to give up on
    time.sleep(0.05)
    assert backend.fail_unrunnable(older_than=0.01) == [orphan[0].id]
    record = backend.get_job(orphan[0].id)
    assert record is not None and record.state is JobState.FAILED
    assert record.errors[-1].type == CANNOT_RUN and "nobody.Knows" in record.errors[-1].message
    known_record = backend.get_job(known[0].id)
    assert known_record is not None and known_record.state is JobState.AVAILABLE


def test_closed_backend_raises(backend: Backend) -> None:
    backend.close()
    with pytest.raises(EnqueueError):
        backend.enqueue(new())
    with pytest.raises(StoreClosedError):
        backend.claim("n", {W: 1})
    with pytest.raises(StoreClosedError):
        backend.counts()


def _fail(
    backend: Backend, n: str, worker: str = W, count: int = 1, retry_in: float | None = None
) -> list[str]:
    claimed = backend.claim(n, {worker: count})
    error = JobError.reason("ValueError", "nope", attempt=1, node=n)
    backend.ack(n, [Outcome(c.id, c.token, c.worker, error, retry_in) for c in claimed])
    return [c.id for c in claimed]


def test_an_error_with_retry_in_schedules_the_job_again(backend: Backend) -> None:
    backend.enqueue(new())
    n = node(backend)
    (job_id,) = _fail(backend, n, retry_in=0.2)
    record = backend.get_job(job_id)
    assert record is not None and record.state is JobState.SCHEDULED
    assert record.run_at is not None and record.run_at > time.time()
    assert record.attempt == 1 and [e.message for e in record.errors] == ["nope"]
    assert backend.claim(n, {W: 1}) == []
    time.sleep(0.25)
    (again,) = backend.claim(n, {W: 1})
    assert again.id == job_id and again.attempt == 2


def test_list_failed_newest_first_with_paging_and_worker_filter(backend: Backend) -> None:
    n = node(backend)
    ids = []
    for worker in (W, V, W):
        backend.enqueue(new(worker))
        ids += _fail(backend, n, worker)
        time.sleep(0.002)
    failed = backend.jobs(JobState.FAILED)
    assert [r.id for r in failed] == ids[::-1]
    assert [r.id for r in backend.jobs(JobState.FAILED, W)] == [ids[2], ids[0]]
    assert [r.id for r in backend.jobs(JobState.FAILED, limit=1, offset=1)] == [ids[1]]


def test_retry_failed_gives_a_fresh_attempt_count_and_keeps_errors(backend: Backend) -> None:
    n = node(backend)
    backend.enqueue(new(W, 2) + new(V))
    failed = _fail(backend, n, W, 2) + _fail(backend, n, V)
    assert backend.retry_failed([failed[0]]) == 1
    assert backend.retry_failed([failed[0]]) == 0  # not failed any more
    record = backend.get_job(failed[0])
    assert record is not None and record.state is JobState.AVAILABLE and record.attempt == 0
    assert len(record.errors) == 1
    assert backend.retry_failed(worker=V) == 1
    assert backend.retry_failed() == 1
    assert backend.jobs(JobState.FAILED) == []
    assert {c.attempt for c in backend.claim(n, {W: 5, V: 5})} == {1}


def test_delete_failed(backend: Backend) -> None:
    n = node(backend)
    backend.enqueue(new(W, 3) + new(V))
    failed = _fail(backend, n, W, 3) + _fail(backend, n, V)
    assert backend.delete_failed([failed[0], "unknown-id"]) == 1
    assert backend.get_job(failed[0]) is None
    assert backend.delete_failed(worker=W) == 2
    assert backend.delete_failed() == 1
    assert backend.counts() == {}


def test_held_and_delayed_jobs_are_released_by_hand(backend: Backend) -> None:
    held = new(run_at=HELD)
    delayed = new(V, run_at=time.time() + 3600)
    backend.enqueue(held + delayed)
    n = node(backend)
    assert backend.claim(n, {W: 1, V: 1}) == []
    scheduled = backend.jobs(JobState.SCHEDULED)
    assert [r.id for r in scheduled] == [delayed[0].id, held[0].id]  # soonest first
    assert scheduled[1].held and not scheduled[0].held
    assert backend.release_scheduled([held[0].id]) == 1
    assert [c.id for c in backend.claim(n, {W: 1, V: 1})] == [held[0].id]
    assert backend.release_scheduled(worker=V) == 1
    assert [c.id for c in backend.claim(n, {W: 1, V: 1})] == [delayed[0].id]


def test_prune_failed_by_count_and_age(backend: Backend) -> None:
    n = node(backend)
    backend.enqueue(new(n=5))
    ids = []
    for _ in range(5):
        ids += _fail(backend, n)
        time.sleep(0.002)
    assert backend.prune_failed(max_count=3, max_age=3600) == 2
    assert [r.id for r in backend.jobs(JobState.FAILED)] == ids[:1:-1]  # the newest 3
    time.sleep(0.05)
    assert backend.prune_failed(max_count=100, max_age=0.01) == 3
    assert backend.jobs(JobState.FAILED) == []


def test_options_travel_with_the_job(backend: Backend) -> None:
    job = NewJob("with-options", W, dumps((), {}), time.time(), None, {"timeout": 2.5})
    backend.enqueue([job])
    (claimed,) = backend.claim(node(backend), {W: 1})
    assert claimed.options == {"timeout": 2.5}
    record = backend.get_job(job.id)
    assert record is not None and record.options == {"timeout": 2.5}


def test_held_by_lists_a_nodes_running_claims(backend: Backend) -> None:
    backend.enqueue(new(n=3))
    n = node(backend)
    other = node(backend, "other")
    mine = backend.claim(n, {W: 2})
    theirs = backend.claim(other, {W: 1})
    assert sorted(backend.held_by(n)) == sorted((c.id, c.token) for c in mine)
    assert backend.held_by(other) == [(theirs[0].id, theirs[0].token)]
    backend.ack(n, [Outcome(mine[0].id, mine[0].token, W)])
    assert backend.held_by(n) == [(mine[1].id, mine[1].token)]
    assert backend.held_by("ghost") == []


def test_finished_recently_counts_accepted_runs_per_worker(backend: Backend) -> None:
    assert backend.finished_recently() == {}
    backend.enqueue(new(W, 5) + new(V, 1))
    n = node(backend)
    w_jobs = backend.claim(n, {W: 5})
    (v_job,) = backend.claim(n, {V: 1})
    error = JobError.reason("ValueError", "no", attempt=1, node=n)
    report = backend.ack(
        n,
        [
            *(Outcome(c.id, c.token, W) for c in w_jobs[:3]),
            Outcome(w_jobs[3].id, w_jobs[3].token, W, error, retry_in=60),
            Outcome(w_jobs[4].id, "stale-token", W),  # rejected: not counted
            Outcome(v_job.id, v_job.token, V, error),
        ],
    )
    assert report.accepted == 5
    expected = {W: {"done": 3, "errors": 1}, V: {"done": 0, "errors": 1}}
    assert backend.finished_recently() == expected
    assert backend.finished_recently(60) == expected
    backend.ack(n, [Outcome(w_jobs[4].id, w_jobs[4].token, W)])  # same second or a later one
    assert backend.finished_recently()[W] == {"done": 4, "errors": 1}
    for bad in (0, 61, 1.5, True):
        with pytest.raises(ValueError, match="window"):
            backend.finished_recently(bad)  # type: ignore[arg-type]


def test_finished_recently_forgets_runs_older_than_the_window(backend: Backend) -> None:
    backend.enqueue(new(W, 1))
    n = node(backend)
    (job,) = backend.claim(n, {W: 1})
    backend.ack(n, [Outcome(job.id, job.token, W)])
    assert backend.finished_recently(1) == {W: {"done": 1, "errors": 0}}
    # A one-second window ends with the store's current second: wait until it has moved on.
    deadline = time.monotonic() + 5
    while backend.finished_recently(1) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.finished_recently(1) == {}
    assert backend.finished_recently(60) == {W: {"done": 1, "errors": 0}}
