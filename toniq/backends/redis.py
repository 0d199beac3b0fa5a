"""The Redis backend (``redis://``, ``rediss://``, ``unix://``; a Redis Cluster with
``?cluster=yes``): many machines, one queue.

Every state change is one Lua script (``toniq/backends/lua/*.lua``; each file's header lists
the keys and arguments it uses). Times come from the Redis server's ``TIME`` inside the
scripts, never from a client, so nodes with skewed clocks agree on who is alive.

Key layout. Every key of a queue starts with ``toniq:{<queue>}:`` (``P:`` below); the
braces are a Redis Cluster hash tag, so all keys of a queue live in one slot, and every key
a script touches is passed in ``KEYS`` (but for the two keys of the node enqueue.lua hands a
job to; no hand-over on a Redis Cluster)::

    P:jobs               hash  id -> record (JSON: worker, state, attempt, node_deaths, seq,
                               enqueued_at, run_at, started_at, finished_at, node, token,
                               options; times as exact decimal text, "inf" when held)
    P:payloads           hash  id -> payload (the signed pickle, bytes)
    P:errors             hash  id -> JSON list of the job's errors (absent when none)
    P:seq                string   the sequence counter: a job's place in the FIFO
    P:workers            set   every worker name ever enqueued
    P:available:<w>      zset  id -> node_deaths * 2^44 + seq: AVAILABLE jobs of worker w
    P:scheduled:<w>      zset  "<seq, 16 digits>:<id>" -> run_at (+inf when held)
    P:claims:<node>      hash  id -> worker: the RUNNING jobs a node holds
    P:claimers           set   nodes whose claim set is not empty
    P:failed             zset  "<seq, 16 digits>:<id>" -> finished_at
    P:nodes              zset  node -> last heartbeat (server time)
    P:nodeinfo           hash  node -> JSON {host, pid, started_at, workers}
    P:count:running      hash  worker -> RUNNING jobs
    P:count:failed       hash  worker -> FAILED jobs
    P:count:done         hash  worker -> jobs done
    P:idle               string   set (30 s at most) by a claim that found nothing; the next
                                  enqueue deletes it and publishes on the channel P:wake, which
                                  every node subscribes to, so idle nodes claim at once
    P:armed              hash  node -> "<token> <until>" and "<node>#slots" -> "<token>
                               <slots>": nodes waiting for jobs handed over by the
                               enqueue itself, and how many more (see lua/claim.lua)
    P:waiting:<w>        zset  armed nodes with room for worker w -> time armed
    P:handoff:<node>     list  jobs handed to that node: JSON head, newline, payload
    P:rate               hash  "<second % 64>:<worker>" -> "<second> <done> <errors>": runs
                               acknowledged per second (a ring; expires after 2 idle minutes)

A job keeps its ``seq`` for life, so a job handed back, taken over, retried or released
returns to its own place in the FIFO (ahead of the jobs enqueued after it), as on SQLite.
Jobs that lost a node sit at a higher level of ``available:<w>`` (``node_deaths * 2^44``), so
a claim skips suspects without reading past them. A finished job leaves nothing behind but
``count:done``.

Two phases. Because every key must be named in ``KEYS``, a transition whose keys depend on
the data (take over: the dead nodes' claim sets and their jobs' queues; fail_unrunnable,
retry_failed, release_scheduled, hand_back: the queues of the jobs' workers) first reads,
without writing, which keys it needs; then ONE script, given those keys, checks everything
again (is the node still silent? is the job still in that state, under that token, of a
worker whose key it was given?) and skips what no longer holds. The read never decides
anything: only the script does, atomically.

URL options (query string): ``queue`` (default ``default``) names the queue; ``timeout``
(seconds, default 2) bounds connecting and every command, so ``enqueue`` fails fast when
Redis is unreachable. Other options go to redis-py (``ssl_cert_reqs``, ``ssl_ca_certs``...).

Redis Cluster: ``redis://host:port/0?cluster=yes`` (or ``rediss://``), the URL redis-py's
``RedisCluster.from_url`` takes plus ``cluster=yes``; optional ``startup_nodes=h1:p1,h2:p2``
(more nodes to discover the cluster from, if the URL's is down). The client is
``redis.cluster.RedisCluster``: it sends each script (EVALSHA) and each read to the master of
the queue's slot, follows MOVED/ASK redirects (the command did not run), and retries nothing
else, like the single-node client. Keyless commands (``TIME`` in take-over's first phase,
``INFO``, ``CONFIG GET``) go to that master too (:meth:`RedisBackend._on_master`). There is
no database but 0, and no Unix socket (redis-py's cluster client has neither). The client is
made on first use, as RedisCluster reads the slot map as it is made: configuring toniq never
needs the cluster up.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import os
import re
import secrets
import select
import socket
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import hiredis
import redis
from hiredis import pack_command
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.commands.core import Script
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from toniq.backends.base import check_window, in_window
from toniq.errors import ConfigurationError, EnqueueError, StoreClosedError, StoreError
from toniq.job import (
    CANNOT_RUN,
    NODE_LOST,
    AckReport,
    ClaimedJob,
    JobError,
    JobRecord,
    JobState,
    NewJob,
    NodeInfo,
    Outcome,
    TakeoverReport,
)
from toniq.settings import redact

logger = logging.getLogger("toniq")

DEFAULT_QUEUE = "default"
#: Seconds to connect and to wait for any reply: enqueue fails fast when Redis is down.
DEFAULT_TIMEOUT = 2.0
#: Due SCHEDULED jobs one claim promotes per worker at most (the rest go on the next claim).
PROMOTE_LIMIT = 1000
#: Jobs one call of fail_unrunnable looks at per worker; prune_failed deletes per call.
SWEEP_LIMIT = 1000
#: Ids per script call for retry_failed, delete_failed and release_scheduled.
CHUNK = 1000
#: Failed jobs read per round trip when listing failed jobs of one worker.
PAGE = 500
#: ``available:<worker>`` scores are ``node_deaths * LEVEL + seq`` (see ``lua/_common.lua``).
LEVEL = 2**44

_SCRIPTS = (
    "enqueue",
    "claim",
    "ack",
    "hand_back",
    "register_node",
    "heartbeat",
    "unregister_node",
    "take_over",
    "fail_unrunnable",
    "retry_failed",
    "delete_failed",
    "release_scheduled",
    "prune_failed",
    "disarm",
)
#: A wake-up marker pushed on ``P:handoff:<node>``: the node's wait ends, it claims.
WAKE_MARK = "~"
#: How long at most one blocking wait for a hand-over lasts, as a share of the socket
#: timeout (a reply must come before the socket gives up).
HANDOFF_WAIT_SHARE = 0.5
#: Seconds a node stays armed after its wait for a hand-over should have ended: a node that
#: died armed gets the jobs enqueued in that time (they wait for its takeover).
HANDOFF_MARGIN = 0.2
#: A hand-over list expires this long after its last push (enqueue.lua uses the same).
HANDOFF_TTL_MS = 600_000
#: The largest command :meth:`RedisBackend.enqueue_one_async` sends from the event loop's
#: thread: an idle connection's socket takes this much at once, so sending never blocks the
#: loop. A larger one (a big payload) is sent from a thread, as before.
LOOP_SEND_MAX = 8 * 1024
#: How many :meth:`RedisBackend.enqueue_one_async` calls of one event loop may wait for
#: Redis at once, each on a connection of its own; the others wait for their turn. It bounds
#: the connections they hold (a thread pool bounds the others).
LOOP_CALLS_MAX = 16


@cache
def script_source(name: str) -> str:
    """A script as loaded into Redis: the shared helpers it names, then ``lua/<name>.lua``.

    Only the helpers of ``_common.lua`` whose names appear in the script (or in a helper it
    takes) go in front of it, in their order there: Redis runs a script's whole text on
    every call, and making every helper's closure each time cost 1.5 us a call."""
    body = _LUA.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    header, helpers = _helpers()
    names = set(re.findall(r"\w+", body))
    wanted: set[str] = set()
    todo = [helper for helper in helpers if helper in names]
    while todo:
        helper = todo.pop()
        if helper not in wanted:
            wanted.add(helper)
            used = set(re.findall(r"\w+", helpers[helper]))
            todo += [other for other in helpers if other in used]
    parts = [header, *(source for helper, source in helpers.items() if helper in wanted)]
    return "".join(parts) + "\n" + body


_LUA = resources.files("toniq.backends").joinpath("lua")


@cache
def _helpers() -> tuple[str, dict[str, str]]:
    """``_common.lua`` cut at each top-level ``local`` definition: its header (comments),
    and name -> that definition with the comment lines right above it."""
    lines = _LUA.joinpath("_common.lua").read_text(encoding="utf-8").splitlines(keepends=True)
    starts: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        match = re.match(r"local (?:function )?(\w+)", line)
        if match:
            first = i
            while first > 0 and lines[first - 1].startswith("--"):
                first -= 1
            starts.append((first, match.group(1)))
    helpers = {
        name: "".join(lines[first : starts[k + 1][0] if k + 1 < len(starts) else None])
        for k, (first, name) in enumerate(starts)
    }
    return "".join(lines[: starts[0][0]]), helpers


def parse_url(url: str) -> tuple[str, str, float]:
    """Split toniq's own options off a Redis URL: ``(url for redis-py, queue, timeout)``."""
    base, _, query = url.partition("?")
    rest: list[tuple[str, str]] = []
    queue, timeout = DEFAULT_QUEUE, DEFAULT_TIMEOUT
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "queue":
            queue = value
        elif key == "timeout":
            try:
                timeout = float(value)
            except ValueError:
                timeout = math.nan
            if not timeout > 0 or math.isinf(timeout):
                raise ConfigurationError(
                    f"bad timeout {value!r} in {redact(url)}: seconds, a number > 0"
                )
        else:
            rest.append((key, value))
    if not queue or any(c in queue for c in "{}") or not queue.isprintable():
        raise ConfigurationError(
            f"bad queue name {queue!r} in {redact(url)}: printable, without braces"
        )
    return base + (f"?{urlencode(rest)}" if rest else ""), queue, timeout


_YES = {"yes", "true", "1", "on"}
_NO = {"no", "false", "0", "off", ""}


def parse_cluster(target: str, shown: str) -> tuple[str, list[tuple[str, int]] | None]:
    """Take the Redis Cluster options off a redis-py URL (``target``, from :func:`parse_url`):
    ``(url for redis-py, extra startup nodes as (host, port))``, the nodes ``None`` unless
    ``cluster=yes``. ``shown`` is the URL without its password, for messages."""
    base, _, query = target.partition("?")
    rest: list[tuple[str, str]] = []
    cluster, seeds = None, ""
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "cluster":
            if value.lower() not in _YES | _NO:
                raise ConfigurationError(f"bad cluster {value!r} in {shown}: yes or no")
            cluster = value.lower() in _YES
        elif key == "startup_nodes":
            seeds = value
        else:
            rest.append((key, value))
    if cluster is None and not seeds:
        return target, None  # a single Redis: the URL as it came
    url = base + (f"?{urlencode(rest)}" if rest else "")
    if not cluster:
        if seeds:
            raise ConfigurationError(f"startup_nodes without cluster=yes in {shown}")
        return url, None
    if not url.startswith(("redis://", "rediss://")):
        raise ConfigurationError(
            f"Redis Cluster needs a redis:// or rediss:// URL (no Unix socket): {shown}"
        )
    try:  # what RedisCluster.from_url will parse, so a bad option fails here
        redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ConfigurationError(f"bad Redis URL {shown}: {exc}") from exc
    parts = urlsplit(url)
    db = dict(parse_qsl(parts.query)).get("db") or parts.path.strip("/") or "0"
    if db != "0":  # redis-py: the query's db, else the path's
        raise ConfigurationError(
            f"Redis Cluster has only database 0, not {db!r}: {shown} (use queue=... to keep "
            "apps apart)"
        )
    nodes: list[tuple[str, int]] = []
    for seed in filter(None, seeds.split(",")):
        host, _, port = seed.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(f"bad startup node {seed!r} in {shown}: host:port")
        nodes.append((host.strip("[]"), int(port)))
    return url, nodes


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _driver_kwargs() -> dict[str, Any]:
    """The library version each connection reports (CLIENT SETINFO), given: left out,
    redis-py reads it from the installed package's metadata on the first connection of a
    process, which took 4 ms of every node's start and of a process's first enqueue."""
    try:
        from redis.driver_info import DriverInfo  # redis-py 8
    except ImportError:
        return {"lib_version": redis.__version__}
    return {"driver_info": DriverInfo(lib_version=redis.__version__)}


_DRIVER = _driver_kwargs()


_HAS_POLL = hasattr(select, "poll")
#: What a RESP3 push message reads as (hiredis 3.2 and newer), or None.
_PUSH: type | None = getattr(hiredis, "PushNotification", None)


def _hiredis_parts(conn: Any) -> tuple[Any, Any, bytearray] | None:
    """A connected connection's socket, hiredis reader and read buffer, which
    :func:`_stale` and :func:`_exchange` use directly; None if its parser has no hiredis
    reader (they use redis-py's methods then)."""
    sock = getattr(conn, "_sock", None)
    reader = getattr(conn._parser, "_reader", None)
    buffer = getattr(conn._parser, "_buffer", None)
    if sock is None or not isinstance(buffer, bytearray) or not hasattr(reader, "has_data"):
        return None
    return sock, reader, buffer


def _stale(conn: Any) -> bool:
    """Whether an idle connection has something to read: the server closed it (a restart,
    a timeout) or it is out of step. The checks of redis-py's
    :meth:`~redis.Connection.can_read` (hiredis), without its wrapping (see
    :func:`_exchange`)."""
    if getattr(conn, "_sock", None) is None:
        return False  # connects on first use
    parts = _hiredis_parts(conn)
    try:
        if parts is None or not _HAS_POLL:
            return bool(conn.can_read())
        sock, reader, _ = parts
        if reader.has_data() or (hasattr(sock, "pending") and sock.pending()):
            return True  # a reply was waiting (TLS: decrypted bytes above the socket)
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))  # data, or the server's end of the connection
    except (redis.ConnectionError, redis.TimeoutError, OSError, ValueError):
        return True


def _exchange(conn: Any, packed: bytes, meanwhile: Callable[[], None] | None = None) -> Any:
    """Send ``packed`` on ``conn`` and read its one reply, raising what
    :meth:`redis.Connection.read_response` raises (a connection it cannot use any more is
    the caller's to disconnect).

    With hiredis (a dependency), the socket and the parser's reader are used directly: the
    same reader redis-py feeds, so the two never get out of step, without the bookkeeping
    redis-py wraps around each send and read. With :func:`_stale`, an enqueue runs 6 % fewer
    instructions (121.6k -> 114.1k under callgrind) and takes 4-7 % less CPU; 8 threads
    enqueueing at once went from 11.6k to 14.5k jobs/s on 2 cores (median of 10 interleaved
    pairs), while one thread's rate moved less than the noise. A parser without a hiredis
    reader takes redis-py's path."""
    if getattr(conn, "_sock", None) is None:
        conn.connect()  # what send_packed_command() would do first
    parts = _hiredis_parts(conn)
    if parts is None:
        conn.send_packed_command([packed], check_health=False)
        if meanwhile is not None:
            meanwhile()
        return conn.read_response()
    sock, reader, buffer = parts
    if reader.has_data():
        raise redis.ConnectionError("connection out of step: a reply was waiting")
    pending = reader.gets()  # from an empty reader: its "not enough data" value
    try:
        sock.sendall(packed)
    except OSError as exc:
        raise _io_error(exc) from exc
    if meanwhile is not None:
        meanwhile()
    reply = pending
    while reply is pending or (_PUSH is not None and isinstance(reply, _PUSH)):
        if reply is pending:
            try:
                count = sock.recv_into(buffer)
            except OSError as exc:
                raise _io_error(exc) from exc
            if not count:
                raise redis.ConnectionError("Connection closed by server.")
            reader.feed(buffer, 0, count)
        else:  # RESP3: a push message before the reply
            handle = getattr(conn._parser, "handle_push_response", None)
            if handle is not None:
                # As read_response() does. A handler that disconnects (redis-py's
                # maintenance notices) makes the next recv fail: a ConnectionError.
                handle(reply)
        reply = reader.gets()
    # The reader makes error replies (NOSCRIPT, TONIQ_DUPLICATE...) into exceptions and
    # returns them, as redis-py's parser would: raised here, as read_response() does.
    if isinstance(reply, (redis.ResponseError, redis.ConnectionError)):
        raise reply
    if isinstance(reply, list) and reply and isinstance(reply[0], redis.ConnectionError):
        raise reply[0]  # as redis-py's parser does
    return reply


def _io_error(exc: OSError) -> redis.RedisError:
    """redis-py's exception for a failed send or read, as its own methods raise them."""
    if isinstance(exc, TimeoutError) and exc.errno is None:  # the socket's timeout
        return redis.TimeoutError("Timeout talking to the server")
    # Anything else, a dead peer's ETIMEDOUT included: the connection is gone.
    return redis.ConnectionError(f"Error talking to the server: {exc}")


class _NoLoopIO(Exception):
    """The running event loop cannot watch a socket (``add_reader``): nothing was sent."""


async def _exchange_on_loop(
    loop: asyncio.AbstractEventLoop,
    conn: Any,
    parts: tuple[Any, Any, bytearray],
    packed: bytes,
    timeout: float,
) -> Any:
    """:func:`_exchange` for a caller on ``loop``: the same send and the same reads with the
    connection's hiredis reader, but the wait for the reply is the loop's (it watches the
    socket), not a blocked thread. ``conn`` must be connected, on a plain socket, and
    ``packed`` small (:data:`LOOP_SEND_MAX`). Raises :class:`_NoLoopIO` before sending if
    the loop cannot watch sockets, ``redis.TimeoutError`` after ``timeout`` seconds."""
    sock, reader, buffer = parts
    if reader.has_data():
        raise redis.ConnectionError("connection out of step: a reply was waiting")
    pending = reader.gets()  # from an empty reader: its "not enough data" value
    # The loop calls wake() when the socket has something to read: it ends the wait of the
    # moment (waiting[0]).
    waiting = [loop.create_future()]

    def wake() -> None:
        if not waiting[0].done():
            waiting[0].set_result(None)

    fd = sock.fileno()
    try:
        loop.add_reader(fd, wake)
    except NotImplementedError as exc:  # e.g. the Proactor loop on Windows
        raise _NoLoopIO() from exc
    blocking = sock.gettimeout()
    try:
        try:
            sock.sendall(packed)
        except OSError as exc:
            raise _io_error(exc) from exc
        # A read must never wait: on a socket with a timeout Python would wait for data
        # itself (up to that timeout), and a loop may wake us before there is any.
        sock.settimeout(0)
        reply = pending
        async with asyncio.timeout(timeout):
            while reply is pending or (_PUSH is not None and isinstance(reply, _PUSH)):
                if reply is pending:
                    await waiting[0]
                    waiting[0] = loop.create_future()
                    try:
                        count = sock.recv_into(buffer)
                    except BlockingIOError:
                        continue  # woken with nothing to read yet
                    except OSError as exc:
                        raise _io_error(exc) from exc
                    if not count:
                        raise redis.ConnectionError("Connection closed by server.")
                    reader.feed(buffer, 0, count)
                else:  # RESP3: a push message before the reply (see _exchange)
                    handle = getattr(conn._parser, "handle_push_response", None)
                    if handle is not None:
                        handle(reply)
                        if conn._sock is not sock:  # the handler closed the connection
                            raise redis.ConnectionError("connection closed by a push handler")
                reply = reader.gets()
    except TimeoutError as exc:  # asyncio.timeout's
        raise redis.TimeoutError("Timeout reading from the server") from exc
    finally:
        loop.remove_reader(fd)
        if conn._sock is sock:
            sock.settimeout(blocking)  # as redis-py set it, for its own reads
    if isinstance(reply, (redis.ResponseError, redis.ConnectionError)):
        raise reply
    if isinstance(reply, list) and reply and isinstance(reply[0], redis.ConnectionError):
        raise reply[0]
    return reply


def _claimed_jobs(flat: list[Any]) -> list[ClaimedJob]:
    """claim.lua's reply, 9 values per job, as jobs in FIFO (seq) order. On every job's
    path: the worker names and tokens, shared by many jobs, are decoded once each."""
    jobs: list[ClaimedJob] = []
    seqs: list[int] = []
    texts: dict[Any, str] = {}
    for job_id, worker, payload, attempt, enqueued_at, options, seq, suspect, tok in zip(
        *[iter(flat)] * 9, strict=True
    ):
        name = texts.get(worker)
        if name is None:
            name = texts[worker] = _text(worker)
        token = texts.get(tok)
        if token is None:
            token = texts[tok] = _text(tok)
        seqs.append(int(seq))
        jobs.append(
            ClaimedJob(
                _text(job_id),
                name,
                bytes(payload),
                int(attempt),
                token,
                float(enqueued_at),
                json.loads(options) if options else {},
                bool(suspect),
            )
        )
    # Each worker's jobs come in order; jobs handed over and several workers' may not.
    if seqs != sorted(seqs):
        order = sorted(range(len(jobs)), key=seqs.__getitem__)
        jobs = [jobs[i] for i in order]
    return jobs


def _num(value: float) -> str:
    """A time or duration as the scripts read it: exact (``repr``), ``inf`` when held."""
    return repr(float(value))


#: hiredis's pack_command, typed for a command of any length (its stub says one item).
_pack: Callable[[tuple[Any, ...]], bytes] = pack_command


def _duplicate(exc: redis.RedisError) -> EnqueueError | None:
    """The error for enqueue.lua's reply to a duplicate job id; None for any other error."""
    text = str(exc)
    if isinstance(exc, redis.ResponseError) and text.startswith("TONIQ_DUPLICATE"):
        return EnqueueError(f"duplicate job id: {text.removeprefix('TONIQ_DUPLICATE ')}")
    return None


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _member_id(member: Any) -> str:
    """The job id in a member of ``scheduled:<w>`` or ``failed`` (``<16 digits>:<id>``)."""
    return _text(member)[17:]


class RedisBackend:
    """Jobs in Redis. See :class:`toniq.backends.Backend` for the contract, and this
    module's docstring for the key layout."""

    _client: redis.Redis | RedisCluster
    _scripts: dict[str, Script]

    def __init__(self, url: str) -> None:
        self.url = redact(url)
        target, self.queue, self.timeout = parse_url(url)
        self.prefix = f"toniq:{{{self.queue}}}:"
        target, seeds = parse_cluster(target, self.url)
        self._closed = False
        self._lock = threading.Lock()
        self._keys_of: dict[str, list[str]] = {}
        #: One job's EVALSHA of enqueue.lua, per worker: the packed parts before and after
        #: the job's own arguments (:meth:`_enqueue_one`).
        self._one_of: dict[str, tuple[bytes, bytes]] = {}
        #: Redis Cluster: what to connect with on first use (:meth:`_connect`); None on a
        #: single Redis, and once connected.
        self._pending: tuple[str, list[tuple[str, int]]] | None = None
        self._pool: redis.ConnectionPool | None = None
        if seeds is not None:
            self._pending = (target, seeds)
            return
        try:
            self._pool = redis.ConnectionPool.from_url(
                target,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                # No blind retries: a script whose reply was lost may have run, and running
                # it twice is not the same as running it once. Callers retry (nodes forever,
                # with backoff); enqueue fails fast.
                retry=Retry(NoBackoff(), 0),
                **_DRIVER,
            )
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"bad Redis URL {self.url}: {exc}") from exc
        self._client = redis.Redis(connection_pool=self._pool)
        self._scripts = {
            name: self._client.register_script(script_source(name)) for name in _SCRIPTS
        }
        #: Idle connections for scripts (:meth:`_eval`), made in this process (``_pid``).
        self._lanes: collections.deque[Any] = collections.deque()
        self._pid = os.getpid()
        #: Per event loop, the turns of its calls of :meth:`_roundtrip_async`.
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]
        self._slots = weakref.WeakKeyDictionary()

    @property
    def cluster(self) -> bool:
        """Whether this backend talks to a Redis Cluster (``?cluster=yes``)."""
        return self._pool is None

    def _connect(self) -> None:
        """Redis Cluster: make the client on first use (from :meth:`_guard`). RedisCluster
        reads the slot map from a node as it is made: made in ``__init__``, it would make
        configuring toniq fail while the cluster is down (a single Redis connects lazily)."""
        with self._lock:
            if self._pending is None:
                return
            if self._closed:
                raise redis.ConnectionError("closed")
            url, seeds = self._pending
            client = RedisCluster.from_url(
                url,
                startup_nodes=[
                    ClusterNode(host, port)  # type: ignore[no-untyped-call]
                    for host, port in seeds
                ],
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                # As on a single Redis: no blind retries (see above). RedisCluster still
                # follows MOVED and ASK redirects: those commands did not run.
                retry=Retry(NoBackoff(), 0),
            )
            self._scripts = {name: client.register_script(script_source(name)) for name in _SCRIPTS}
            self._client = client
            self._pending = None

    def _on_master(self) -> dict[str, Any]:
        """Options that send a keyless command (TIME, INFO, CONFIG GET) to the server that
        holds this queue: on a Redis Cluster the master of its slot, whose clock the scripts
        read (redis-py would pick a default node); nothing on a single Redis."""
        if isinstance(self._client, RedisCluster):
            node = self._client.get_node_from_key(self.key("jobs"))  # type: ignore[no-untyped-call]
            return {"target_nodes": node}
        return {}

    # -- keys ----------------------------------------------------------------------------

    def key(self, name: str) -> str:
        """The full name of one of this queue's keys (``jobs``, ``available:<worker>``...)."""
        return self.prefix + name

    def _available(self, worker: str) -> str:
        return self.key(f"available:{worker}")

    def _scheduled(self, worker: str) -> str:
        return self.key(f"scheduled:{worker}")

    def _waiting(self, worker: str) -> str:
        return self.key(f"waiting:{worker}")

    def _handoff(self, node_id: str) -> str:
        return self.key(f"handoff:{node_id}")

    def _claims(self, node_id: str) -> str:
        return self.key(f"claims:{node_id}")

    # -- plumbing ------------------------------------------------------------------------

    @contextmanager
    def _guard(self, what: str, error: type[StoreError] = StoreError) -> Iterator[None]:
        """Turn redis-py's errors into toniq's; refuse to work once closed."""
        if self._closed:
            raise self._closed_error(error)
        try:
            if self._pending is not None:
                self._connect()
            yield
        except (redis.RedisError, RedisClusterException) as exc:
            raise self._translated(what, error, exc) from exc

    def _closed_error(self, error: type[StoreError]) -> StoreError:
        if error is EnqueueError:
            return EnqueueError(f"{self.url} backend is closed; the job was not stored")
        return StoreClosedError(f"{self.url} backend is closed")

    def _translated(
        self, what: str, error: type[StoreError], exc: redis.RedisError | RedisClusterException
    ) -> StoreError:
        """toniq's error for what redis-py raised while doing ``what`` (see :meth:`_guard`)."""
        if isinstance(exc, redis.TimeoutError):
            if error is EnqueueError:
                return EnqueueError(
                    f"{what}: no reply from {self.url} within {self.timeout:g}s; the job may "
                    "or may not have been stored"
                )
            return error(f"{what}: no reply from {self.url} within {self.timeout:g}s")
        # RedisClusterException: no node reachable, no slot map...
        if isinstance(exc, (redis.ConnectionError, RedisClusterException)) and self._closed:
            return StoreClosedError(f"{self.url} backend is closed")
        if isinstance(exc, redis.ConnectionError):
            return error(f"{what}: cannot reach {self.url}: {exc}")
        return error(f"{what}: {self.url}: {exc}")

    def _run(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[Any],
        meanwhile: Callable[[], None] | None = None,
    ) -> Any:
        """Run a script; ``meanwhile``: see :meth:`_roundtrip`."""
        if self._pool is None:  # Redis Cluster: redis-py routes the script to its slot
            reply = self._scripts[name](keys=list(keys), args=list(args))
            if meanwhile is not None:
                meanwhile()
            return reply
        return self._eval(self._scripts[name], keys, args, meanwhile)

    def _eval(
        self,
        script: Script,
        keys: Sequence[str],
        args: Sequence[Any],
        meanwhile: Callable[[], None] | None = None,
    ) -> Any:
        """EVALSHA on a single Redis, on a connection of our own: one send and one read.

        Every enqueue, claim and ack is one script call, so redis-py's per-command
        machinery (pool lock and bookkeeping, retry wrapper, metrics hooks) cost about a
        third of an enqueue's time (35 us of 110). Its :class:`~redis.Connection` still
        does the work that matters: connecting (TLS, AUTH, SELECT), packing, and reading
        the reply with hiredis. Idle connections wait in a deque, so concurrent callers
        each get one; after a fork the child starts with none (the parent's sockets are
        not shared)."""
        # hiredis packs the command in C (redis-py's encoder loop took 5 us for an enqueue);
        # packed before a connection is taken, so a bad argument cannot leak one.
        packed = pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))
        return self._roundtrip(packed, script, meanwhile)

    def _roundtrip(
        self,
        packed: bytes,
        script: Script | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> Any:
        """Send one packed command on an idle connection of our own and read its reply
        (see :meth:`_eval`); ``script``: load it and send again if the server lost it;
        ``meanwhile``: called once between the send and the read, while the server works
        (it must not raise)."""
        conn = self._idle_lane()
        if conn is None:
            assert self._pool is not None
            conn = self._pool.connection_class(**self._pool.connection_kwargs)
        try:
            try:
                reply = _exchange(conn, packed, meanwhile)
            except redis.exceptions.NoScriptError:
                if script is None:
                    raise
                # The server lost its scripts (a restart, SCRIPT FLUSH): the script did not
                # run, so loading it and calling again runs it once.
                load: tuple[Any, ...] = ("SCRIPT", "LOAD", script.script)
                _exchange(conn, pack_command(load))
                reply = _exchange(conn, packed)
        except redis.ResponseError:
            self._put_back(conn)  # an error reply: the connection is in step
            raise
        except BaseException:
            conn.disconnect()  # a reply may still be on its way: never reuse this socket
            raise
        self._put_back(conn)
        return reply

    async def _roundtrip_async(self, packed: bytes, script: Script) -> Any:
        """:meth:`_roundtrip` for a caller on an event loop, waiting for the reply on the
        loop (:func:`_exchange_on_loop`). At most :data:`LOOP_CALLS_MAX` calls of one loop
        wait for Redis at once, each on an idle connection of its own; the others wait for
        their turn on the loop. The connection must be connected on a plain socket (TCP or
        Unix: a TLS socket holds decrypted bytes the loop cannot see) and the command at
        most :data:`LOOP_SEND_MAX` bytes; otherwise, with no idle connection, or if the loop
        cannot watch sockets, :meth:`_roundtrip` runs in a thread (which may connect)."""
        if len(packed) > LOOP_SEND_MAX:
            return await asyncio.to_thread(self._roundtrip, packed, script)
        loop = asyncio.get_running_loop()
        async with self._loop_slots(loop):
            conn = self._idle_lane()
            parts = None if conn is None else _hiredis_parts(conn)  # None: stale, no hiredis
            if parts is None or type(parts[0]) is not socket.socket:  # a subclass: TLS
                if conn is not None:
                    self._put_back(conn)
                return await asyncio.to_thread(self._roundtrip, packed, script)
            try:
                reply = await _exchange_on_loop(loop, conn, parts, packed, self.timeout)
            except (_NoLoopIO, redis.exceptions.NoScriptError):
                # Nothing was sent, or the server lost its scripts (the script did not
                # run): the thread's path sends it (loading the script first), once.
                self._put_back(conn)
                return await asyncio.to_thread(self._roundtrip, packed, script)
            except redis.ResponseError:
                self._put_back(conn)  # an error reply: the connection is in step
                raise
            except BaseException:
                conn.disconnect()  # cancelled or failed: a reply may still be on its way
                raise
            self._put_back(conn)
            return reply

    def _loop_slots(self, loop: asyncio.AbstractEventLoop) -> asyncio.Semaphore:
        """The turns of ``loop``'s calls of :meth:`_roundtrip_async`."""
        slots = self._slots.get(loop)
        if slots is None:
            with self._lock:
                slots = self._slots.setdefault(loop, asyncio.Semaphore(LOOP_CALLS_MAX))
        return slots

    def _idle_lane(self) -> Any:
        """An idle connection of this process for one command, or None. As redis-py's pool
        does: one with something to read was closed by the server (a restart, a timeout) or
        is out of step, and is disconnected (it connects again when used), which is safe:
        nothing was sent on it yet."""
        if self._pid != os.getpid():
            self._lanes.clear()  # the parent's sockets are not this process's to use
            self._pid = os.getpid()
        try:
            conn = self._lanes.pop()
        except IndexError:
            return None
        if _stale(conn):
            conn.disconnect()
        return conn

    def _put_back(self, conn: Any) -> None:
        """Return a connection to the idle ones; close it if the backend closed meanwhile."""
        self._lanes.append(conn)
        if self._closed:  # close() may have emptied the lanes just before the append
            self._close_lanes()

    def _close_lanes(self) -> None:
        # pop() until empty rather than `while lanes`: another thread may take the last one
        # between the test and the pop.
        while True:
            try:
                conn = self._lanes.pop()
            except IndexError:
                return
            conn.disconnect()

    def _pipe(self) -> Pipeline | ClusterPipeline:
        """Several reads in one round trip (no MULTI: reads need no transaction)."""
        return self._client.pipeline(transaction=False)

    # -- the contract: state changes -----------------------------------------------------

    #: enqueue.lua's keys after the queues of its workers.
    _ENQUEUE_TAIL = ("idle", "nodes", "claimers", "count:running", "armed")

    def _enqueue_keys(self, worker: str) -> list[str]:
        """The keys of enqueue.lua for jobs of one worker."""
        keys = self._keys_of.get(worker)
        if keys is None:
            keys = [self.key(k) for k in ("jobs", "payloads", "seq", "workers")]
            keys += [self._available(worker), self._scheduled(worker)]
            keys += [self.key(k) for k in self._ENQUEUE_TAIL]
            keys.append(self._waiting(worker))
            self._keys_of[worker] = keys
        return keys

    def enqueue(self, jobs: Sequence[NewJob]) -> None:
        if len(jobs) == 1 and self._pool is not None:
            self._enqueue_one(jobs[0])
        else:
            self._enqueue_batch(jobs)

    def enqueue_overlapping(self, jobs: Sequence[NewJob], meanwhile: Callable[[], None]) -> None:
        """:meth:`enqueue`, calling ``meanwhile`` once while Redis stores the jobs: after
        they were sent, before the reply is read (on a Redis Cluster, after the reply). Not
        called if they could not be sent. ``meanwhile`` must not raise.

        How :meth:`toniq.Toniq.enqueue_many` signs its next batch of 1,000 while Redis stores
        this one: client and server work one beside the other instead of in turn."""
        self._enqueue_batch(jobs, meanwhile)

    def _enqueue_batch(
        self, jobs: Sequence[NewJob], meanwhile: Callable[[], None] | None = None
    ) -> None:
        with self._guard("enqueue", EnqueueError):
            if not jobs:
                return
            workers = list(dict.fromkeys(job.worker for job in jobs))
            index = {worker: i for i, worker in enumerate(workers, 1)}
            if len(workers) == 1:
                keys = self._enqueue_keys(workers[0])  # the usual case, made once per worker
            else:
                keys = [self.key(k) for k in ("jobs", "payloads", "seq", "workers")]
                for worker in workers:
                    keys += [self._available(worker), self._scheduled(worker)]
                keys += [self.key(k) for k in self._ENQUEUE_TAIL]
                keys += [self._waiting(worker) for worker in workers]
            first = jobs[0]
            shared = (first.enqueued_at, first.run_at, first.options)
            args: list[Any]
            if (
                len(jobs) > 1
                and len(workers) == 1
                and all((j.enqueued_at, j.run_at, j.options) == shared for j in jobs)
            ):
                # A batch from enqueue_many: its jobs share their times and options, sent
                # once (see enqueue.lua).
                args = ["=", first.worker, *self._times(first)]
                for job in jobs:
                    args += [job.id, job.payload]
                args += ["", self.key("wake")]
                self._enqueue_script(keys, args, meanwhile)
                return
            args = [len(workers), *workers]
            # Jobs in a row often share their times and options: format each once.
            last: tuple[float, float | None, dict[str, Any]] | None = None
            times: tuple[str, str, str] = ("", "", "")
            for job in jobs:
                if last is None or (job.enqueued_at, job.run_at, job.options) != last:
                    last = (job.enqueued_at, job.run_at, job.options)
                    times = self._times(job)
                args += [job.id, index[job.worker], job.payload, *times]
            # No prefix: only one job is ever handed over, and on a single Redis every single
            # job goes through _enqueue_one (there is no hand-over on a Redis Cluster).
            args += ["", self.key("wake")]
            self._enqueue_script(keys, args, meanwhile)

    def _enqueue_one(self, job: NewJob) -> None:
        """One job on a single Redis, the case of every :meth:`toniq.Toniq.enqueue` call: the
        general form of enqueue.lua for one job (so it may be handed over), sent with the
        parts that do not change from one job of a worker to the next packed once, and no
        context manager. With enqueue.lua's one EXISTS while no node waits, an enqueue took
        9-11 % less time (W1 on 2 cores: 125 -> 114 us); bench/w1_limit.py shows where the
        rest goes."""
        # _guard()'s checks and error translation, inline: no context manager per job.
        if self._closed:
            raise self._closed_error(EnqueueError)
        try:
            self._roundtrip(self._one_packed(job), self._scripts["enqueue"])
        except redis.RedisError as exc:
            raise (_duplicate(exc) or self._translated("enqueue", EnqueueError, exc)) from exc

    async def enqueue_one_async(self, job: NewJob) -> None:
        """:meth:`enqueue` of one job for a caller on an event loop
        (:meth:`toniq.Toniq.enqueue_async`): on a single Redis the command is sent and its
        reply read on the loop's own thread, on an idle connection, so an ``await`` costs
        no thread hop (``enqueue_async`` one at a time: 7,800 -> 10,400 jobs/s on 2 cores;
        100 in flight: 11,200 -> 17,900).
        Without an idle plain-socket connection (the first call, TLS, every connection
        busy), for a large payload, and on a Redis Cluster, the store is written from a
        thread, as :meth:`enqueue` would."""
        if self._pool is None:  # Redis Cluster: redis-py's client, which blocks
            await asyncio.to_thread(self.enqueue, [job])
            return
        if self._closed:
            raise self._closed_error(EnqueueError)
        try:
            await self._roundtrip_async(self._one_packed(job), self._scripts["enqueue"])
        except redis.RedisError as exc:
            raise (_duplicate(exc) or self._translated("enqueue", EnqueueError, exc)) from exc

    def _one_packed(self, job: NewJob) -> bytes:
        """The packed EVALSHA of :meth:`_enqueue_one` for ``job``."""
        parts = self._one_of.get(job.worker)
        if parts is None:
            parts = self._one_parts(job.worker)
        middle = _pack((job.id, 1, job.payload, *self._times(job)))
        # pack_command() starts with the count of its items, b"*6\r\n": the head has the
        # count of the whole command.
        return parts[0] + middle[4:] + parts[1]

    def _one_parts(self, worker: str) -> tuple[bytes, bytes]:
        """The packed head (count, EVALSHA, sha, keys, ``1``, the worker) and tail (the
        prefix, the wake-up channel) of :meth:`_enqueue_one`'s command for ``worker``."""
        keys = self._enqueue_keys(worker)
        head = _pack(("EVALSHA", self._scripts["enqueue"].sha, len(keys), *keys, 1, worker))
        tail = _pack((self.prefix, self.key("wake")))
        # EVALSHA, sha, number of keys, keys, 1, worker; the job's 6 arguments; the tail's 2.
        count = 3 + len(keys) + 2 + 6 + 2
        # Drop each part's own count (b"*<n>\r\n"); the head gets the whole command's.
        parts = (
            b"*%d\r\n" % count + head[head.index(b"\n") + 1 :],
            tail[tail.index(b"\n") + 1 :],
        )
        self._one_of[worker] = parts
        return parts

    @staticmethod
    def _times(job: NewJob) -> tuple[str, str, str]:
        """enqueued_at, run_at and options as enqueue.lua takes them."""
        return (
            _num(job.enqueued_at),
            "" if job.run_at is None else _num(job.run_at),
            json.dumps(job.options) if job.options else "",
        )

    def _enqueue_script(
        self, keys: list[str], args: list[Any], meanwhile: Callable[[], None] | None = None
    ) -> None:
        try:
            self._run("enqueue", keys, args, meanwhile)
        except redis.ResponseError as exc:
            duplicate = _duplicate(exc)
            if duplicate is not None:
                raise duplicate from exc
            raise  # _guard() says what went wrong

    def claim(
        self,
        node_id: str,
        wants: Mapping[str, int],
        *,
        alone: bool = False,
        suspect_after: int = 2,
        arm: float | None = None,
        slots: int = 1,
        others: Sequence[str] = (),
    ) -> list[ClaimedJob]:
        """See :meth:`toniq.backends.Backend.claim`. ``arm`` (seconds; only where
        :attr:`handoff` is true): if nothing is leased, arm the node for that long, so the
        next ``slots`` jobs of these workers enqueued alone are leased to it by the enqueue
        itself and pushed to :meth:`wait_handoff` (see ``lua/claim.lua``). Every claim
        disarms first, and returns the jobs handed over since the last one that the node did
        not take with :meth:`wait_handoff`. ``others``: the node's other workers, whose
        ``P:waiting`` it leaves (no room for them now)."""
        with self._guard("claim"):
            wanted = [(worker, n) for worker, n in wants.items() if n > 0]
            if not wanted:
                return []
            token = secrets.token_hex(8)
            keys = [
                self.key("nodes"),
                self.key("jobs"),
                self.key("payloads"),
                self.key("claimers"),
                self.key("count:running"),
                self._claims(node_id),
            ]
            args: list[Any] = [
                node_id,
                token,
                len(wanted),
                PROMOTE_LIMIT,
                suspect_after,
                1 if alone else 0,
            ]
            for worker, n in wanted:
                keys += [self._available(worker), self._scheduled(worker)]
                args += [worker, n]
            keys += [self.key("armed"), self._handoff(node_id)]
            keys += [self._waiting(worker) for worker, _ in wanted]
            # The node's other workers (no room now): it leaves their P:waiting.
            keys += [self._waiting(worker) for worker in others if worker not in wants]
            keys.append(self.key("idle"))
            if arm is None or not self.handoff:
                args.append("")
            else:
                args.append(f"{_num(self.handoff_lasts(arm))} {max(1, slots)}")
            flat = self._run("claim", keys, args)
        return _claimed_jobs(flat)

    def ack(self, node_id: str, outcomes: Sequence[Outcome]) -> AckReport:
        with self._guard("ack"):
            if not outcomes:
                return AckReport()
            workers = list(dict.fromkeys(o.worker for o in outcomes))
            index = {worker: i for i, worker in enumerate(workers, 1)}
            keys = [
                self.key("jobs"),
                self.key("payloads"),
                self.key("errors"),
                self.key("failed"),
                self.key("claimers"),
                self.key("count:running"),
                self.key("count:failed"),
                self.key("count:done"),
                self._claims(node_id),
                *(self._scheduled(worker) for worker in workers),
                self.key("rate"),
            ]
            args: list[Any] = [node_id, len(workers), *workers]
            for o in outcomes:
                if o.error is None:  # the usual case, on every job's path
                    args += (o.id, o.token, index[o.worker], "", "")
                    continue
                retry_in = "" if o.retry_in is None else _num(o.retry_in)
                error = json.dumps(o.error.to_dict())
                args += (o.id, o.token, index[o.worker], retry_in, error)
            accepted, rejected = self._run("ack", keys, args)
        return AckReport(int(accepted), tuple(_text(r) for r in rejected))

    def hand_back(self, node_id: str, jobs: Sequence[tuple[str, str]]) -> int:
        with self._guard("hand back"):
            if not jobs:
                return 0
            claims = self._claims(node_id)
            # Phase 1: which worker each claim is of (the script checks again).
            held = self._client.hmget(claims, [job_id for job_id, _ in jobs])
            pairs = [(job, _text(w)) for job, w in zip(jobs, held, strict=True) if w is not None]
            if not pairs:
                return 0
            workers = list(dict.fromkeys(worker for _, worker in pairs))
            keys = [
                self.key("jobs"),
                self.key("claimers"),
                self.key("count:running"),
                claims,
                *(self._available(worker) for worker in workers),
            ]
            args: list[Any] = [node_id, len(workers), *workers]
            for (job_id, token), _ in pairs:
                args += [job_id, token]
            return int(self._run("hand_back", keys, args))

    # -- hand-over: an idle node gets a job from the enqueue itself (single Redis only) ----

    @property
    def handoff(self) -> bool:
        """Whether an idle node can wait for jobs handed over (:meth:`wait_handoff`):
        on a single Redis, not on a Redis Cluster (where every key a script touches must be
        named in advance)."""
        return self._pool is not None

    def handoff_wait(self, timeout: float) -> float:
        """How long one :meth:`wait_handoff` asked for ``timeout`` blocks: its reply must
        come before the socket times out."""
        return min(timeout, self.timeout * HANDOFF_WAIT_SHARE)

    def handoff_lasts(self, timeout: float) -> float:
        """How long a claim with ``arm=timeout`` arms the node for: as long as one
        :meth:`wait_handoff` waits, and a little more (the reply is on its way)."""
        return self.handoff_wait(timeout) + HANDOFF_MARGIN

    def wait_handoff(self, node_id: str, timeout: float) -> list[ClaimedJob] | None:
        """Block (at most ``timeout`` seconds) until a job is handed to this node, armed by
        its last :meth:`claim`: ``[job]``, leased to the node as a claim would; ``[]`` for a
        wake-up (:meth:`wake_handoff`: claim now); None if nothing came."""
        with self._guard("wait for a job"):
            wait = max(0.001, self.handoff_wait(timeout))
            command: tuple[Any, ...] = ("BLPOP", self._handoff(node_id), _num(wait))
            reply = self._roundtrip(pack_command(command))
        if reply is None:
            return None
        message = bytes(reply[1])
        head, newline, payload = message.partition(b"\n")
        if not newline:
            return []  # a wake-up marker
        job_id, worker, token, enqueued_at, options, _seq = json.loads(head)
        return [
            ClaimedJob(
                job_id,
                worker,
                payload,
                1,
                token,
                float(enqueued_at),
                json.loads(options) if options else {},
                False,
            )
        ]

    def handoff_allowed(self) -> bool:
        """Whether this Redis user may wait for jobs handed over: False if its ACL refuses
        ``RPUSH``, ``PEXPIRE`` or ``BLPOP`` (a rule written before hand-over); raises
        :class:`StoreError` if Redis does not answer."""
        with self._guard("check the commands of hand-over"):
            # On a list that is not empty BLPOP answers at once: on an empty one even a 1 ms
            # timeout lasts until the server's next cron tick (100 ms at hz 10), which every
            # node start would wait for. The key is this probe's own, gone once popped.
            probe = self.key(f"handoff:probe:{secrets.token_hex(4)}")
            pipe = self._push_mark(probe)
            pipe.blpop([probe], 0.001)
            try:
                pipe.execute()
            except redis.exceptions.NoPermissionError:
                return False
        return True

    def wake_handoff(self, node_id: str) -> None:
        """End a node's :meth:`wait_handoff` now (it returns ``[]``); a marker pushed when
        the node is not waiting is dropped by its next claim, or expires."""
        with self._guard("wake a node"):
            self._push_mark(self._handoff(node_id)).execute()

    def _push_mark(self, key: str) -> Pipeline | ClusterPipeline:
        """A pipeline that pushes a wake-up marker on the list ``key`` and renews its expiry
        (as enqueue.lua's pushes do): nothing is left if no one pops it."""
        pipe = self._pipe()
        pipe.rpush(key, WAKE_MARK)
        pipe.pexpire(key, HANDOFF_TTL_MS)
        return pipe

    def disarm(self, node_id: str, workers: Sequence[str]) -> int:
        """Stop handing jobs to this node (of these, its workers); the jobs handed over
        that it has not taken go back to AVAILABLE (see ``lua/disarm.lua``). Returns how
        many did."""
        with self._guard("disarm"):
            keys = [
                self.key("armed"),
                self._handoff(node_id),
                self.key("jobs"),
                self.key("claimers"),
                self.key("count:running"),
                self._claims(node_id),
            ]
            for worker in workers:
                keys += [self._available(worker), self._waiting(worker)]
            return int(self._run("disarm", keys, [node_id, *workers]))

    def held_by(self, node_id: str) -> list[tuple[str, str]]:
        with self._guard("read claims"):
            ids = [_text(i) for i in self._client.hkeys(self._claims(node_id))]
            if not ids:
                return []
            raws = self._client.hmget(self.key("jobs"), ids)
            held: list[tuple[str, str]] = []
            for job_id, raw in zip(ids, raws, strict=True):
                data = json.loads(raw) if raw is not None else {}
                if data.get("state") == "running" and data.get("node") == node_id:
                    held.append((job_id, str(data.get("token"))))
            return held

    def register_node(self, info: NodeInfo) -> None:
        with self._guard("register node"):
            data = {
                "host": info.host,
                "pid": info.pid,
                "started_at": info.started_at,
                "workers": list(info.workers),
            }
            self._run(
                "register_node",
                [self.key("nodes"), self.key("nodeinfo")],
                [info.id, json.dumps(data)],
            )

    def heartbeat(self, node_id: str) -> bool:
        with self._guard("heartbeat"):
            return bool(self._run("heartbeat", [self.key("nodes")], [node_id]))

    def unregister_node(self, node_id: str) -> None:
        with self._guard("unregister node"):
            self._run("unregister_node", [self.key("nodes"), self.key("nodeinfo")], [node_id])

    def take_over(self, timeout: float, max_node_deaths: int) -> TakeoverReport:
        with self._guard("take over"):
            candidates, workers = self._take_over_candidates(timeout)
            if not candidates:
                return TakeoverReport()
            return self._take_over(timeout, max_node_deaths, candidates, workers)

    def _take_over_candidates(self, timeout: float) -> tuple[list[str], list[str]]:
        """Phase 1 of take_over, read-only: registered nodes that look dead by the server's
        clock, nodes with claims but no registration, and the workers of their claims."""
        pipe = self._pipe()
        if isinstance(pipe, Pipeline):
            pipe.time()
        pipe.zrange(self.key("nodes"), 0, -1, withscores=True)
        pipe.smembers(self.key("claimers"))
        *clock, nodes, claimers = pipe.execute()
        # A cluster pipeline refuses keyless commands: there TIME goes alone, to the master
        # of the queue's slot (whose clock the scripts read).
        sec, usec = clock[0] if clock else self._client.time(**self._on_master())
        now = int(sec) + int(usec) / 1e6
        registered = {_text(node) for node, _ in nodes}
        candidates = [_text(node) for node, beat in nodes if float(beat) < now - timeout]
        candidates += sorted(_text(node) for node in claimers if _text(node) not in registered)
        if not candidates:
            return [], []
        pipe = self._pipe()
        for node in candidates:
            pipe.hvals(self._claims(node))
        held = pipe.execute()
        workers = sorted({_text(worker) for values in held for worker in values})
        return candidates, workers

    def _take_over(
        self, timeout: float, max_node_deaths: int, candidates: list[str], workers: list[str]
    ) -> TakeoverReport:
        """Phase 2 of take_over: one script that checks every candidate and job again."""
        keys = [
            self.key("nodes"),
            self.key("nodeinfo"),
            self.key("jobs"),
            self.key("errors"),
            self.key("failed"),
            self.key("claimers"),
            self.key("count:running"),
            self.key("count:failed"),
            *(self._claims(node) for node in candidates),
            *(self._available(worker) for worker in workers),
        ]
        args: list[Any] = [
            _num(timeout),
            max_node_deaths,
            len(candidates),
            len(workers),
            NODE_LOST,
            *candidates,
            *workers,
        ]
        dead, requeued, failed = self._run("take_over", keys, args)
        return TakeoverReport(
            tuple(_text(n) for n in dead),
            tuple(_text(i) for i in requeued),
            tuple(_text(i) for i in failed),
        )

    def fail_unrunnable(self, older_than: float) -> list[str]:
        with self._guard("fail unrunnable jobs"):
            # Phase 1: workers with AVAILABLE jobs that no registered node runs.
            pipe = self._pipe()
            pipe.hvals(self.key("nodeinfo"))
            pipe.smembers(self.key("workers"))
            infos, all_workers = pipe.execute()
            known = {w for raw in infos for w in json.loads(raw).get("workers", [])}
            unknown = sorted(_text(w) for w in all_workers if _text(w) not in known)
            if not unknown:
                return []
            pipe = self._pipe()
            for w in unknown:
                pipe.zcard(self._available(w))
            sizes = pipe.execute()
            waiting = [w for w, size in zip(unknown, sizes, strict=True) if size]
            if not waiting:
                return []
            keys = [
                self.key("nodeinfo"),
                self.key("jobs"),
                self.key("errors"),
                self.key("failed"),
                self.key("count:failed"),
                *(self._available(w) for w in waiting),
            ]
            args: list[Any] = [_num(older_than), len(waiting), SWEEP_LIMIT, CANNOT_RUN]
            for worker in waiting:
                args += [worker, f"unknown worker {worker!r}: no live node registers it"]
            return [_text(i) for i in self._run("fail_unrunnable", keys, args)]

    def retry_failed(self, ids: Sequence[str] | None = None, worker: str | None = None) -> int:
        with self._guard("retry failed jobs"):
            total = 0
            for chunk in self._chunks(self._failed_ids(ids)):
                workers = self._workers_of(chunk, worker)
                if not workers:
                    continue
                keys = [
                    self.key("jobs"),
                    self.key("failed"),
                    self.key("count:failed"),
                    *(self._available(w) for w in workers),
                ]
                args = [worker or "", len(workers), *workers, *chunk]
                total += int(self._run("retry_failed", keys, args))
            return total

    def delete_failed(self, ids: Sequence[str] | None = None, worker: str | None = None) -> int:
        with self._guard("delete failed jobs"):
            keys = [
                self.key("jobs"),
                self.key("payloads"),
                self.key("errors"),
                self.key("failed"),
                self.key("count:failed"),
            ]
            return sum(
                int(self._run("delete_failed", keys, [worker or "", *chunk]))
                for chunk in self._chunks(self._failed_ids(ids))
            )

    def release_scheduled(self, ids: Sequence[str] | None = None, worker: str | None = None) -> int:
        with self._guard("release scheduled jobs"):
            if ids is None:
                workers = [worker] if worker is not None else self._workers()
                pipe = self._pipe()
                for w in workers:
                    pipe.zrange(self._scheduled(w), 0, -1)
                found = pipe.execute()
                ids = [_member_id(m) for members in found for m in members]
            total = 0
            for chunk in self._chunks(ids):
                names = self._workers_of(chunk, worker)
                if not names:
                    continue
                keys = [self.key("jobs")]
                for w in names:
                    keys += [self._available(w), self._scheduled(w)]
                args = [worker or "", len(names), *names, *chunk]
                total += int(self._run("release_scheduled", keys, args))
            return total

    def prune_failed(self, max_count: int, max_age: float) -> int:
        with self._guard("prune failed jobs"):
            keys = [
                self.key("jobs"),
                self.key("payloads"),
                self.key("errors"),
                self.key("failed"),
                self.key("count:failed"),
            ]
            total = 0
            while True:
                n = int(self._run("prune_failed", keys, [max_count, _num(max_age), SWEEP_LIMIT]))
                total += n
                if n < SWEEP_LIMIT:
                    return total

    def _failed_ids(self, ids: Sequence[str] | None) -> list[str]:
        if ids is not None:
            return list(dict.fromkeys(ids))
        return [_member_id(m) for m in self._client.zrange(self.key("failed"), 0, -1)]

    def _workers_of(self, ids: Sequence[str], only: str | None) -> list[str]:
        """The workers of the stored jobs among ``ids`` (only ``only``, if given)."""
        raws = self._client.hmget(self.key("jobs"), ids)
        names = {json.loads(raw)["worker"] for raw in raws if raw is not None}
        return sorted(names if only is None else names & {only})

    @staticmethod
    def _chunks(ids: Sequence[str]) -> Iterator[list[str]]:
        for start in range(0, len(ids), CHUNK):
            yield list(ids[start : start + CHUNK])

    # -- the contract: reads -------------------------------------------------------------

    def _workers(self) -> list[str]:
        return sorted(_text(w) for w in self._client.smembers(self.key("workers")))

    def jobs(
        self, state: JobState, worker: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[JobRecord]:
        state = JobState(state)
        with self._guard("list jobs"):
            if limit <= 0 or state is JobState.DONE:
                return []
            if state is JobState.FAILED:
                ids = self._failed_page(worker, limit, offset)
            elif state is JobState.RUNNING:
                ids = self._running_page(worker, limit, offset)
            else:
                ids = self._queued_page(state, worker, limit, offset)
            return [r for r in self._records(ids) if r is not None and r.state is state]

    def _queued_page(
        self, state: JobState, worker: str | None, limit: int, offset: int
    ) -> list[str]:
        """AVAILABLE (by seq) or SCHEDULED (by run_at, then seq) jobs, merged over workers."""
        workers = [worker] if worker is not None else self._workers()
        pipe = self._pipe()
        if state is JobState.SCHEDULED:
            for w in workers:
                pipe.zrange(self._scheduled(w), 0, offset + limit - 1, withscores=True)
            found = pipe.execute()
            entries = sorted((score, m) for pairs in found for m, score in pairs)
            return [_member_id(m) for _, m in entries[offset : offset + limit]]
        # available:<w> scores are node_deaths * LEVEL + seq: the oldest jobs that never lost
        # a node, and every job that did (few), merged by seq.
        for w in workers:
            pipe.zrangebyscore(
                self._available(w), 0, f"({LEVEL}", start=0, num=offset + limit, withscores=True
            )
            pipe.zrangebyscore(self._available(w), LEVEL, "+inf", withscores=True)
        found = pipe.execute()
        queued = sorted((int(score) % LEVEL, _text(m)) for pairs in found for m, score in pairs)
        return [job_id for _, job_id in queued[offset : offset + limit]]

    def _running_page(self, worker: str | None, limit: int, offset: int) -> list[str]:
        claimers = sorted(_text(n) for n in self._client.smembers(self.key("claimers")))
        pipe = self._pipe()
        for n in claimers:
            pipe.hgetall(self._claims(n))
        held = pipe.execute()
        ids = [
            _text(job_id)
            for claims in held
            for job_id, w in claims.items()
            if worker is None or _text(w) == worker
        ]
        raws = self._client.hmget(self.key("jobs"), ids) if ids else []
        seqs = sorted(
            (json.loads(raw)["seq"], job_id)
            for job_id, raw in zip(ids, raws, strict=True)
            if raw is not None
        )
        return [job_id for _, job_id in seqs[offset : offset + limit]]

    def _failed_page(self, worker: str | None, limit: int, offset: int) -> list[str]:
        """FAILED jobs newest first (ties: latest enqueued first)."""
        key = self.key("failed")
        if worker is None:
            return [_member_id(m) for m in self._client.zrevrange(key, offset, offset + limit - 1)]
        ids: list[str] = []
        skip, start = offset, 0
        while len(ids) < limit:
            members = self._client.zrevrange(key, start, start + PAGE - 1)
            if not members:
                break
            start += PAGE
            page = [_member_id(m) for m in members]
            raws = self._client.hmget(self.key("jobs"), page)
            for job_id, raw in zip(page, raws, strict=True):
                if raw is None or json.loads(raw)["worker"] != worker:
                    continue
                if skip:
                    skip -= 1
                elif len(ids) < limit:
                    ids.append(job_id)
        return ids

    def _records(self, ids: Sequence[str]) -> list[JobRecord | None]:
        if not ids:
            return []
        pipe = self._pipe()
        pipe.hmget(self.key("jobs"), ids)
        pipe.hmget(self.key("payloads"), ids)
        pipe.hmget(self.key("errors"), ids)
        raws, payloads, errors = pipe.execute()
        return [
            _record(job_id, raw, payload, error)
            for job_id, raw, payload, error in zip(ids, raws, payloads, errors, strict=True)
        ]

    def nodes(self) -> list[NodeInfo]:
        with self._guard("list nodes"):
            pipe = self._pipe()
            pipe.zrange(self.key("nodes"), 0, -1, withscores=True)
            pipe.hgetall(self.key("nodeinfo"))
            beats, infos = pipe.execute()
        nodes: list[NodeInfo] = []
        for node, beat in beats:
            raw = infos.get(node)
            if raw is None:
                continue
            info = json.loads(raw)
            nodes.append(
                NodeInfo(
                    _text(node),
                    info["host"],
                    int(info["pid"]),
                    float(info["started_at"]),
                    float(beat),
                    tuple(info.get("workers", ())),
                )
            )
        nodes.sort(key=lambda n: (n.started_at, n.id))
        return nodes

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._guard("get job"):
            (record,) = self._records([job_id])
            return record

    def counts(self) -> dict[str, dict[str, int]]:
        with self._guard("count jobs"):
            workers = self._workers()
            pipe = self._pipe()
            for w in workers:
                pipe.zcard(self._available(w))
            for w in workers:
                pipe.zcard(self._scheduled(w))
            for name in ("count:running", "count:failed", "count:done"):
                pipe.hgetall(self.key(name))
            sizes = pipe.execute()
        counts: dict[str, dict[str, int]] = {}

        def add(worker: str, state: str, n: int) -> None:
            if n > 0:
                counts.setdefault(worker, {})[state] = n

        n = len(workers)
        for i, worker in enumerate(workers):
            add(worker, JobState.AVAILABLE.value, int(sizes[i]))
            add(worker, JobState.SCHEDULED.value, int(sizes[n + i]))
        for state, values in zip(("running", "failed", "done"), sizes[2 * n :], strict=True):
            for worker, value in values.items():
                add(_text(worker), state, int(value))
        return {w: counts[w] for w in sorted(counts)}

    def finished_recently(self, window: int = 60) -> dict[str, dict[str, int]]:
        check_window(window)
        with self._guard("read throughput"):
            pipe = self._pipe()
            if isinstance(pipe, Pipeline):
                pipe.time()
            pipe.hgetall(self.key("rate"))
            *clock, ring = pipe.execute()
            # The buckets are seconds of the server's clock: compare with its now (a
            # cluster pipeline refuses keyless commands, so TIME goes alone there).
            sec, usec = clock[0] if clock else self._client.time(**self._on_master())
        now = int(sec) + int(usec) / 1e6
        found: dict[str, dict[str, int]] = {}
        for field, value in ring.items():
            worker = _text(field).partition(":")[2]
            second, done, errors = (int(x) for x in _text(value).split())
            if in_window(second, now, window):
                per = found.setdefault(worker, {"done": 0, "errors": 0})
                per["done"] += done
                per["errors"] += errors
        return found

    def server_warnings(self) -> list[str]:
        with self._guard("check the server"):
            try:
                config = self._client.config_get("*", **self._on_master())
            except redis.ResponseError as exc:  # CONFIG is often disabled on managed Redis
                return [
                    f"could not read the Redis configuration ({exc}); make sure "
                    "maxmemory-policy is noeviction and persistence (AOF) is on"
                ]
        get = {_text(k or ""): _text(v or "") for k, v in config.items()}.get
        warnings: list[str] = []
        policy = get("maxmemory-policy") or "noeviction"
        if policy != "noeviction":
            warnings.append(
                f"Redis maxmemory-policy is {policy}: under memory pressure Redis may evict "
                "job keys and jobs are lost; set maxmemory-policy noeviction"
            )
        if get("appendonly") != "yes":
            if not get("save"):
                warnings.append(
                    "Redis persists nothing (appendonly no, no save points): a Redis restart "
                    "loses every job; set appendonly yes (see docs/redis.md)"
                )
            else:
                warnings.append(
                    "Redis persists only RDB snapshots: a Redis restart loses the jobs "
                    "enqueued since the last snapshot; appendonly yes is safer (docs/redis.md)"
                )
        return warnings

    def server_id(self) -> str | None:
        with self._guard("read the server's run id"):
            info = self._client.info("server", **self._on_master())
        run_id = info.get("run_id") if isinstance(info, dict) else None
        return None if run_id is None else str(run_id)

    def watch(self, callback: Callable[[], object]) -> Callable[[], None]:
        # A thread of its own on a connection of its own: SUBSCRIBE holds a connection, and
        # the node's I/O thread must stay free for claims and acks. It reconnects by itself;
        # while it cannot, nodes still find work at their poll interval.
        stop = threading.Event()
        thread = threading.Thread(
            target=self._watch, args=(callback, stop), name="toniq-wake", daemon=True
        )
        thread.start()
        return stop.set

    def _watch(self, callback: Callable[[], object], stop: threading.Event) -> None:
        channel = self.key("wake")
        failures = 0
        while not stop.is_set() and not self._closed:
            pubsub: Any = None
            try:
                if self._pending is not None:
                    self._connect()
                pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
                pubsub.subscribe(channel)
                while not stop.is_set() and not self._closed:
                    message = pubsub.get_message(timeout=0.5)
                    failures = 0
                    if message is not None and message.get("type") == "message":
                        callback()
            except Exception as exc:
                failures += 1
                logger.debug("wake-up channel %s: %s", channel, exc)
                stop.wait(min(0.05 * 2**failures, 2.0))
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()

    def signing_secret(self) -> None:
        return None  # a key kept in Redis is readable by whoever can write jobs there

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._pool is not None:
                self._pool.disconnect()
                self._close_lanes()
            elif self._pending is None:
                self._client.close()


def _record(
    job_id: str, raw: bytes | None, payload: bytes | None, errors: bytes | None
) -> JobRecord | None:
    if raw is None:
        return None
    data = json.loads(raw)
    return JobRecord(
        id=job_id,
        worker=data["worker"],
        state=JobState(data["state"]),
        payload=bytes(payload or b""),
        attempt=int(data["attempt"]),
        enqueued_at=float(data["enqueued_at"]),
        run_at=_opt_float(data.get("run_at")),
        started_at=_opt_float(data.get("started_at")),
        finished_at=_opt_float(data.get("finished_at")),
        node=data.get("node"),
        errors=[JobError.from_dict(e) for e in json.loads(errors)] if errors else [],
        options=json.loads(data["options"]) if data.get("options") else {},
    )
