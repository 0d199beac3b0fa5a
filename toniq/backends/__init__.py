"""Stores for jobs, all behind one :class:`Backend` protocol.

``memory://`` (this process only), ``sqlite:///path`` (the embedded default) and,
later, ``redis://``. :func:`from_url` picks one by URL scheme.
"""

from __future__ import annotations

from toniq.backends.base import Backend
from toniq.errors import ConfigurationError

__all__ = ["Backend", "from_url"]


def from_url(url: str) -> Backend:
    """Make the backend a URL names: ``memory://`` or ``sqlite:///path``."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "memory":
        from toniq.backends.memory import MemoryBackend

        return MemoryBackend(url)
    if scheme == "sqlite":
        from toniq.backends.sqlite import SQLiteBackend

        return SQLiteBackend(url)
    if scheme in {"redis", "rediss", "unix"}:
        raise ConfigurationError(
            f"the Redis backend is not available yet in this version of toniq ({url!r}); "
            "use sqlite:///path or memory://"
        )
    raise ConfigurationError(
        f"unknown backend URL {url!r}: expected memory:// or sqlite:///path/to/file"
    )
