"""Stores for jobs, all behind one :class:`Backend` protocol.

``memory://`` (this process only), ``sqlite:///path`` (the embedded default) and
``redis://`` / ``rediss://`` / ``unix://`` (Redis, many machines; needs the ``redis``
extra). :func:`from_url` picks one by URL scheme.
"""

from __future__ import annotations

from toniq.backends.base import Backend
from toniq.errors import ConfigurationError
from toniq.settings import redact

__all__ = ["Backend", "from_url"]


def from_url(url: str) -> Backend:
    """Make the backend a URL names: ``memory://``, ``sqlite:///path``, or Redis:
    ``redis://[user:password@]host:port/db``, ``rediss://`` (TLS), ``unix:///path?db=0``
    (query options ``queue=name`` and ``timeout=seconds``; ``cluster=yes`` for a Redis
    Cluster, see docs/redis.md)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "memory":
        from toniq.backends.memory import MemoryBackend

        return MemoryBackend(url)
    if scheme == "sqlite":
        from toniq.backends.sqlite import SQLiteBackend

        return SQLiteBackend(url)
    if scheme in {"redis", "rediss", "unix"}:
        try:
            from toniq.backends.redis import RedisBackend
        except ModuleNotFoundError as exc:
            if exc.name != "redis" and not str(exc.name).startswith("redis."):
                raise
            raise ConfigurationError(
                f"the Redis backend needs redis-py: pip install 'toniq[redis]' ({exc})"
            ) from exc
        return RedisBackend(url)
    raise ConfigurationError(
        f"unknown backend URL {redact(url)!r}: expected memory://, sqlite:///path/to/file, "
        "redis://host:port/db, rediss://... or unix:///path/to/socket"
    )
