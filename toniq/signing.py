"""Signing keys: which key signs a payload, and which keys a node accepts.

A :class:`Keyring` holds one or more secret keys. The first signs; every key verifies, so
keys can be rotated without losing stored jobs (``TONIQ_SECRET="new,old"``). Each key has
a 4-byte id (the first bytes of its SHA-256), written into every envelope so a node picks
the right key at once. See docs/security.md for the threat model.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from typing import Any, cast

from toniq.errors import ConfigurationError

#: Shortest secret accepted: shorter keys can be guessed. ``secrets.token_hex(32)`` makes
#: a good one.
MIN_SECRET_LENGTH = 16
#: Bytes of a key id in an envelope.
KEY_ID_SIZE = 4

SecretInput = str | bytes | Sequence[str | bytes] | None


def key_id(key: bytes) -> bytes:
    """The id written into envelopes signed with ``key``: not secret, only a hint."""
    return hashlib.sha256(key).digest()[:KEY_ID_SIZE]


def parse_secrets(value: SecretInput, *, source: str = "secret") -> tuple[bytes, ...]:
    """Keys from a setting: a string (comma-separated for several, as in ``TONIQ_SECRET``),
    bytes (one raw key), or a list of them. The first key signs; all verify.

    >>> len(parse_secrets("new-key-0123456789,old-key-0123456789"))
    2
    """
    if value is None:
        return ()
    items: list[str | bytes]
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
        items = [part for part in items if part]
    elif isinstance(value, bytes | bytearray):
        items = [bytes(value)]
    elif isinstance(value, Sequence):
        items = list(cast(Sequence[str | bytes], value))
    else:
        raise ConfigurationError(
            f"{source} must be a string, bytes or a list of them, got {type(value).__name__}"
        )
    keys: list[bytes] = []
    for item in items:
        if isinstance(item, str):
            key = item.encode("utf-8")
        elif isinstance(item, bytes | bytearray):
            key = bytes(item)
        else:
            raise ConfigurationError(
                f"each key in {source} must be a string or bytes, got {type(item).__name__}"
            )
        if len(key) < MIN_SECRET_LENGTH:
            raise ConfigurationError(
                f"a key in {source} is {len(key)} bytes long; use at least "
                f"{MIN_SECRET_LENGTH} (python -c 'import secrets; print(secrets.token_hex(32))')"
            )
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def new_secret() -> bytes:
    """A fresh random key (32 bytes)."""
    return os.urandom(32)


class _HmacSha256:
    """HMAC-SHA256 (RFC 2104) under one key, with the key's inner and outer SHA-256 states
    computed once: 0.7 us a message here, where ``hmac.digest`` and ``hmac.new`` spend 1.7
    to 2.9 us setting up the key again for every job (OpenSSL 3). Checked against the
    standard library in tests/test_serialization.py."""

    BLOCK = 64  # SHA-256's block size

    def __init__(self, key: bytes) -> None:
        if len(key) > self.BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(self.BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def states(self, prefix: bytes) -> tuple[Any, Any]:
        """The inner state after ``prefix``, and the outer state: for a loop that signs many
        messages starting with ``prefix`` inline, saving a call and a copy of the prefix
        per message (see serialization.seal_many). Copy both for each message."""
        inner = self._inner.copy()
        inner.update(prefix)
        return inner, self._outer.copy()


class Keyring:
    """The keys one process signs and verifies with.

    ``keys[0]`` signs, every key verifies. With ``accept_unsigned`` (the loudly named
    ``insecure_unsigned`` setting), unsigned version-1 payloads are read too, and with no
    key at all payloads are written unsigned. Example::

        ring = Keyring([b"0123456789abcdef-new", b"0123456789abcdef-old"])
        mac = ring.sign(b"message")
        assert ring.verify(ring.signing_id, b"message", mac)
    """

    def __init__(self, keys: Sequence[bytes], *, accept_unsigned: bool = False) -> None:
        self.keys = tuple(keys)
        self.accept_unsigned = accept_unsigned
        self._by_id: dict[bytes, list[bytes]] = {}
        for key in self.keys:
            self._by_id.setdefault(key_id(key), []).append(key)
        self._signing_id = key_id(self.keys[0]) if self.keys else b""
        self._macs = {key: _HmacSha256(key) for key in self.keys}

    @property
    def signs(self) -> bool:
        """True if payloads written with this keyring are signed."""
        return bool(self.keys)

    @property
    def signing_id(self) -> bytes:
        """The id of the key that signs (the first)."""
        if not self.keys:
            raise IndexError("this keyring has no key")
        return self._signing_id

    def sign(self, message: bytes) -> bytes:
        """The HMAC-SHA256 of ``message`` with the first key."""
        return self._macs[self.keys[0]].digest(message)

    def signer(self) -> _HmacSha256:
        """What :meth:`sign` uses, to sign many messages in a row without looking it up."""
        return self._macs[self.keys[0]]

    def knows(self, kid: bytes) -> bool:
        return kid in self._by_id

    def verify(self, kid: bytes, message: bytes, mac: bytes) -> bool:
        """True if ``mac`` is the HMAC of ``message`` under a key with id ``kid``, compared
        in constant time."""
        for key in self._by_id.get(kid, ()):
            if hmac.compare_digest(self._macs[key].digest(message), mac):
                return True
        return False

    def with_key(self, key: bytes) -> Keyring:
        """This keyring plus ``key`` as one more verifying key."""
        if key in self.keys:
            return self
        return Keyring([*self.keys, key], accept_unsigned=self.accept_unsigned)

    def __repr__(self) -> str:  # never the keys themselves
        ids = ", ".join(key_id(k).hex() for k in self.keys) or "none"
        unsigned = ", accepts unsigned" if self.accept_unsigned else ""
        return f"<toniq.signing.Keyring key ids {ids}{unsigned}>"


def ephemeral() -> Keyring:
    """A keyring with one fresh random key that never leaves this process."""
    return Keyring([new_secret()])
