"""Settings: where jobs are stored and the node's timers.

Durations are seconds (``float``) or :class:`datetime.timedelta`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any

from toniq.errors import ConfigurationError
from toniq.signing import SecretInput, parse_secrets

#: Used when neither ``toniq.configure(url=...)`` nor ``TONIQ_URL`` says otherwise:
#: a SQLite file in the working directory.
DEFAULT_URL = "sqlite:///toniq.sqlite3"
#: Default ``max_payload_size``: 1 MiB of pickled arguments per job.
DEFAULT_MAX_PAYLOAD_SIZE = 1024 * 1024
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class Settings:
    """Every knob, with its default. Give them to :func:`toniq.configure` or a :class:`Node`.

    The takeover window: a node that stops heart-beating is presumed dead
    ``takeover_timeout`` seconds after its last heartbeat, and a live node moves its
    jobs back within ``takeover_interval`` after that: 10–12 s with the defaults.
    """

    url: str = DEFAULT_URL
    #: How often a node renews its lease.
    heartbeat_interval: float = 2.0
    #: Silence after which a node is presumed dead and its jobs are taken over.
    takeover_timeout: float = 10.0
    #: How often a node looks for dead nodes.
    takeover_interval: float = 2.0
    #: How long an idle node waits before it looks for jobs again (jobs enqueued in the
    #: node's own process wake it at once).
    poll_interval: float = 0.05
    #: The most jobs of one worker claimed in one round trip.
    claim_batch: int = 256
    #: Threads that run ``def perform`` jobs (``async def`` jobs need none).
    threads: int = 64
    #: Give every ``async def`` job an asyncio task of its own from its start. By default
    #: the jobs of a claim start one after the other in one task, and a job keeps that task
    #: as its own from its first ``await`` on: only jobs that never await share it.
    task_per_job: bool = False
    #: On SIGTERM/SIGINT, how long running jobs may take to finish before they are
    #: handed back to the store.
    grace_period: float = 10.0
    #: A job whose node died while running it this many times goes to failed.
    max_node_deaths: int = 3
    #: A stored job whose worker no live node registers fails after this long.
    unknown_worker_timeout: float = 60.0
    #: Retries after a failed run, for workers that do not set their own (0 for none).
    retries: int = 5
    #: Seconds before retry n, from n, for workers that do not set their own
    #: (``None``: :func:`toniq.retries.default_backoff`, n**4 / 4 s plus up to 10 % jitter).
    backoff: Callable[[int], float] | None = None
    #: Failed jobs kept at most (the oldest are deleted first) ...
    failed_max_count: int = 10_000
    #: ... and for at most this long (30 days).
    failed_max_age: float = 30 * 24 * 3600.0
    #: Key(s) that sign job payloads (falls back to ``TONIQ_SECRET``): a string, bytes, or
    #: a list; a comma-separated string holds several. The first signs, all verify (key
    #: rotation). Needed on Redis; SQLite and memory make their own when none is given.
    #: See docs/security.md.
    secret: SecretInput = field(default=None, repr=False)
    #: Write unsigned payloads when no key is given, and read unsigned (version 1) ones:
    #: anyone who can write to the store can then run code in every node. Falls back to
    #: ``TONIQ_INSECURE_UNSIGNED=1``. Logged at WARNING.
    insecure_unsigned: bool = False
    #: The largest payload (pickled arguments, in bytes) enqueue writes and a node reads.
    max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "float":
                if isinstance(value, timedelta):
                    value = value.total_seconds()
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ConfigurationError(
                        f"{f.name} must be a duration in seconds (>= 0), got {value!r}"
                    )
                object.__setattr__(self, f.name, float(value))
            elif f.type == "int":
                least = 0 if f.name == "retries" else 1
                if isinstance(value, bool) or not isinstance(value, int) or value < least:
                    raise ConfigurationError(f"{f.name} must be an int >= {least}, got {value!r}")
        for flag in ("insecure_unsigned", "task_per_job"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigurationError(
                    f"{flag} must be True or False, got {getattr(self, flag)!r}"
                )
        parse_secrets(self.secret)  # a bad or short key fails here, not at the first job
        if self.backoff is not None and not callable(self.backoff):
            raise ConfigurationError("backoff must be a function of the attempt number")
        if not isinstance(self.url, str) or not self.url:
            raise ConfigurationError(f"url must be a non-empty string, got {self.url!r}")
        if self.takeover_timeout <= self.heartbeat_interval:
            raise ConfigurationError(
                f"takeover_timeout ({self.takeover_timeout}s) must be longer than "
                f"heartbeat_interval ({self.heartbeat_interval}s), or live nodes lose their jobs"
            )

    @classmethod
    def make(cls, url: str | None = None, **options: Any) -> Settings:
        """Settings from keywords; the URL falls back to ``TONIQ_URL``, then the default."""
        from toniq.worker import check_known

        check_known("unknown setting", options, [f.name for f in fields(cls)])
        if options.get("secret") is None and os.environ.get("TONIQ_SECRET"):
            options["secret"] = os.environ["TONIQ_SECRET"]
        if "insecure_unsigned" not in options:
            options["insecure_unsigned"] = _env_flag("TONIQ_INSECURE_UNSIGNED")
        return cls(url=url or os.environ.get("TONIQ_URL") or DEFAULT_URL, **options)

    @property
    def secrets(self) -> tuple[bytes, ...]:
        """The configured keys, the signing key first (empty if none)."""
        return parse_secrets(self.secret)


def _env_flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be 1 or 0 (true/false, yes/no), got {value!r}")


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``, for logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user, colon, _ = credentials.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"
