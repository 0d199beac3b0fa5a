"""How a job's arguments are stored: pickle, so they arrive exactly as enqueued, inside an
HMAC-SHA256-signed envelope, so that bytes written into the store by anyone without the key
are never unpickled.

Envelope version 2 (signed), what :func:`seal` writes::

    b"TQ" | 0x02 | key id (4 bytes) | HMAC-SHA256 (32 bytes) | meta length (2 bytes, big
    endian) | meta (JSON: the job's id, worker and enqueue time) | pickle of (args, kwargs)

The HMAC covers every byte but itself, so the signature binds the arguments to one job id,
one worker and one enqueue time: a signed payload copied under another job or worker is
refused. :func:`open_payload` checks the size, the header, the key and the signature (in
constant time), then the meta against the stored job, and only then unpickles.

Version 1 (``b"TQ\\x01"`` + pickle, what toniq wrote before signing) carries no signature:
it is read only with the ``insecure_unsigned`` setting, which is also how a store still
holding version-1 jobs is drained once (see docs/security.md).
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from toniq.errors import PayloadError, PayloadTooLargeError, SerializationError
from toniq.job import NewJob
from toniq.signing import KEY_ID_SIZE, Keyring

MAGIC = b"TQ"
#: Unsigned envelope (read only with ``insecure_unsigned``).
UNSIGNED = 1
#: Signed envelope.
SIGNED = 2
VERSION = SIGNED
_MAC_SIZE = 32
_META_LEN = struct.Struct(">H")
_BYTES = (bytes, bytearray, memoryview)
#: Bytes before the meta of a signed envelope.
_SIGNED_HEADER = len(MAGIC) + 1 + KEY_ID_SIZE + _MAC_SIZE + _META_LEN.size
#: Where a signed envelope's key id, MAC and signed part (meta length, meta, body) begin.
_KID_AT = len(MAGIC) + 1
_MAC_AT = _KID_AT + KEY_ID_SIZE
_SIGNED_AT = _MAC_AT + _MAC_SIZE
_SIGNED_MAGIC = MAGIC + bytes([SIGNED])


def pickle_arguments(args: tuple[Any, ...], kwargs: dict[str, Any], *, worker: str) -> bytes:
    """Pickle ``(args, kwargs)``; on failure name the argument that cannot be pickled."""
    try:
        return pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # pickle raises TypeError, AttributeError, PicklingError...
        culprit = _find_culprit(args, kwargs)
        raise SerializationError(
            f"cannot enqueue {worker}: {culprit} cannot be pickled "
            f"({type(exc).__name__}: {exc}); job arguments must be picklable"
        ) from exc


def _json_text(value: str) -> str:
    """``json.dumps(value)`` for a str, without its cost for the usual ids and names."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return json.dumps(value)


#: The last tail _meta_tail wrote, (worker, enqueued_at, text): jobs enqueued together
#: (enqueue_many) share it, and repr() of the float is half of _meta's time.
_last_tail: tuple[str, float, bytes] = ("", -1.0, b"")


def _meta_tail(worker: str, enqueued_at: float) -> bytes:
    """The end of :func:`_meta`, after the id."""
    global _last_tail
    last = _last_tail  # one read: other threads may replace it (never change it)
    if last[1] == enqueued_at and last[0] == worker:
        return last[2]
    tail = f',"worker":{_json_text(worker)},"enqueued_at":{float(enqueued_at)!r}}}'.encode()
    _last_tail = (worker, enqueued_at, tail)
    return tail


def _meta(job_id: str, worker: str, enqueued_at: float) -> bytes:
    """The signed JSON of {"id", "worker", "enqueued_at"}, written by hand: json.dumps and
    json.loads of a dict cost more than the HMAC, on every job enqueued and every job run."""
    return b'{"id":' + _json_text(job_id).encode() + _meta_tail(worker, enqueued_at)


def seal(
    keyring: Keyring,
    job_id: str,
    worker: str,
    enqueued_at: float,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    max_size: int | None = None,
) -> bytes:
    """The payload of one job: signed with ``keyring``'s first key, or unsigned (version 1)
    if the keyring has no key (only possible with ``insecure_unsigned``). Raises
    :class:`SerializationError`, or :class:`PayloadTooLargeError` beyond ``max_size`` bytes.

    Example::

        payload = seal(app.keyring, job.id, "app.SendEmail", time.time(), ("a@b.c",), {})
    """
    body = pickle_arguments(args, kwargs, worker=worker)
    if not keyring.signs:
        payload = MAGIC + bytes([UNSIGNED]) + body
    else:
        meta = _meta(job_id, worker, enqueued_at)
        if len(meta) > 0xFFFF:
            _too_long(worker)
        signed_part = _META_LEN.pack(len(meta)) + meta + body
        head = _SIGNED_MAGIC + keyring.signing_id
        payload = head + keyring.sign(head + signed_part) + signed_part
    if max_size is not None and len(payload) > max_size:
        _too_large(worker, len(payload), max_size)
    return payload


def _too_long(worker: str) -> NoReturn:
    raise SerializationError(f"cannot enqueue {worker}: job id or worker name too long")


def _too_large(worker: str, size: int, max_size: int) -> NoReturn:
    raise PayloadTooLargeError(
        f"cannot enqueue {worker}: its arguments take {size} bytes pickled, more "
        f"than max_payload_size ({max_size} bytes); nothing was stored. Store large data "
        "elsewhere and pass a reference, or raise max_payload_size on every process"
    )


def pickle_many(
    calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]], worker: str
) -> list[bytes]:
    """The pickles of many jobs' ``(args, kwargs)``, as :func:`pickle_arguments` makes each:
    what :func:`sign_many` signs. Raises :class:`SerializationError` at the first job whose
    arguments cannot be pickled, naming the argument."""
    dumps, protocol = pickle.dumps, pickle.HIGHEST_PROTOCOL
    bodies: list[bytes] = []
    append = bodies.append
    for args, kwargs in calls:
        try:
            body = dumps((args, kwargs), protocol)
        except Exception:
            body = pickle_arguments(args, kwargs, worker=worker)  # raises, naming the argument
        append(body)
    return bodies


def envelope_size(keyring: Keyring, job_id: str, worker: str, enqueued_at: float) -> int:
    """How many bytes a payload of this job has besides its pickle: a payload is too large
    for ``max_size`` if this plus the pickle's length is larger."""
    if not keyring.signs:
        return len(MAGIC) + 1
    return _SIGNED_HEADER + len(_meta(job_id, worker, enqueued_at))


def sign_many(
    keyring: Keyring,
    ids: Sequence[str],
    worker: str,
    enqueued_at: float,
    bodies: Sequence[bytes],
    *,
    max_size: int | None = None,
) -> list[bytes]:
    """The payloads of jobs of one worker enqueued at one time, around their pickles from
    :func:`pickle_many`: byte for byte what :func:`seal` writes for each, with the parts they
    share (header, meta around the id, the key's HMAC state after the header) made once.
    Raises as :func:`seal` does, at the first job that fails."""
    if not keyring.signs:
        unsigned = MAGIC + bytes([UNSIGNED])
        payloads = [unsigned + body for _, body in zip(ids, bodies, strict=True)]
        for payload in payloads:
            if max_size is not None and len(payload) > max_size:
                _too_large(worker, len(payload), max_size)
        return payloads
    # 1.95 -> 1.5 us a job with pickling (W1-bulk).
    head = _SIGNED_MAGIC + keyring.signing_id
    inner, outer = keyring.signer().states(head)
    joined = "".join(ids)
    plain = joined.isascii() and joined.isprintable() and '"' not in joined and "\\" not in joined
    tail = b'"' + _meta_tail(worker, enqueued_at)
    pack = _META_LEN.pack
    size, prefix = -1, b""
    payloads = []
    append = payloads.append
    for job_id, body in zip(ids, bodies, strict=True):
        if not plain:
            meta = _meta(job_id, worker, enqueued_at)
            if len(meta) > 0xFFFF:
                _too_long(worker)
            signed = pack(len(meta)) + meta + body
        else:
            if len(job_id) != size:
                size = len(job_id)
                length = len(tail) + size + 7  # {"id":" + id + tail
                if length > 0xFFFF:
                    _too_long(worker)
                prefix = pack(length) + b'{"id":"'
            signed = b"%b%b%b%b" % (prefix, job_id.encode(), tail, body)
        mac = inner.copy()
        mac.update(signed)
        last = outer.copy()
        last.update(mac.digest())
        payload = head + last.digest() + signed
        if max_size is not None and len(payload) > max_size:
            _too_large(worker, len(payload), max_size)
        append(payload)
    return payloads


def seal_many(
    keyring: Keyring,
    ids: Sequence[str],
    worker: str,
    enqueued_at: float,
    calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
    *,
    max_size: int | None = None,
) -> list[bytes]:
    """The payloads of jobs of one worker enqueued at one time, ``calls[i]`` being the
    ``(args, kwargs)`` of job ``ids[i]``: byte for byte what :func:`seal` writes for each
    (:func:`pickle_many`, then :func:`sign_many`). Raises as :func:`seal` does."""
    bodies = pickle_many(calls, worker)
    return sign_many(keyring, ids, worker, enqueued_at, bodies, max_size=max_size)


def open_payload(
    payload: bytes,
    keyring: Keyring,
    *,
    job_id: str,
    worker: str,
    enqueued_at: float | None = None,
    max_size: int | None = None,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Verify a stored payload for the job it is stored under, then unpickle it as
    ``(args, kwargs)``. Raises :class:`toniq.PayloadError` (a ``ValueError``), having
    unpickled nothing, if it is too large, not a toniq envelope, unsigned (unless the
    keyring accepts unsigned payloads), signed with an unknown key, badly signed, or signed
    for another job id, worker or enqueue time.
    """
    # The usual case first, on one path: a signed payload of the right size whose MAC and
    # meta are right. Anything else (which may well be fine) takes the general path below,
    # which says what is wrong.
    if (
        type(payload) is bytes
        and enqueued_at is not None
        and payload[:_KID_AT] == _SIGNED_MAGIC
        and (max_size is None or len(payload) <= max_size)
        and keyring.verify(
            payload[_KID_AT:_MAC_AT],
            payload[:_MAC_AT] + payload[_SIGNED_AT:],
            payload[_MAC_AT:_SIGNED_AT],
        )
    ):
        end = _SIGNED_HEADER + int.from_bytes(payload[_SIGNED_AT:_SIGNED_HEADER], "big")
        if payload[_SIGNED_HEADER:end] == _meta(job_id, worker, enqueued_at):
            return _unpickle(payload[end:])
    if not isinstance(payload, _BYTES):
        raise PayloadError(f"payload is {type(payload).__name__}, not bytes")
    data = bytes(payload)
    if max_size is not None and len(data) > max_size:
        raise PayloadError(
            f"payload is {len(data)} bytes, more than max_payload_size ({max_size}); not read"
        )
    if data[:2] != MAGIC:
        raise PayloadError("payload is not a toniq envelope (bad magic)")
    version = data[2] if len(data) > 2 else None
    if version == UNSIGNED:
        if not keyring.accept_unsigned:
            raise PayloadError(
                "payload is unsigned (envelope version 1) and unsigned payloads are refused "
                "(set insecure_unsigned to read them; see docs/security.md)"
            )
        return _unpickle(data[3:])
    if version != SIGNED:
        shown = data[2:3]
        raise PayloadError(f"payload has unsupported envelope version {shown!r}")
    if len(data) < _SIGNED_HEADER:
        raise PayloadError(f"signed payload is truncated ({len(data)} bytes)")
    kid = data[_KID_AT:_MAC_AT]
    mac = data[_MAC_AT:_SIGNED_AT]
    signed_part = data[_SIGNED_AT:]
    if not keyring.knows(kid):
        raise PayloadError(
            f"payload is signed with key id {kid.hex()}, which is not one of this process's "
            "keys (TONIQ_SECRET / secret); not read"
        )
    if not keyring.verify(kid, data[:_MAC_AT] + signed_part, mac):
        raise PayloadError("payload signature is bad (forged, corrupted or truncated); not read")
    # Signed by a key holder from here on; the meta still must name this very job.
    (meta_len,) = _META_LEN.unpack_from(signed_part)
    meta_end = _META_LEN.size + meta_len
    raw_meta = signed_part[_META_LEN.size : meta_end]
    if enqueued_at is not None and raw_meta == _meta(job_id, worker, enqueued_at):
        return _unpickle(signed_part[meta_end:])  # the usual case, without parsing JSON
    try:
        meta = json.loads(raw_meta.decode("utf-8"))
        signed_id, signed_worker = str(meta["id"]), str(meta["worker"])
        signed_at = float(meta["enqueued_at"])
    except (ValueError, KeyError, TypeError) as exc:
        raise PayloadError(f"signed payload has unreadable meta ({exc})") from exc
    if signed_id != job_id or signed_worker != worker:
        raise PayloadError(
            f"payload was signed for job {signed_id} of {signed_worker}, not job {job_id} "
            f"of {worker}: a copied payload; not read"
        )
    if enqueued_at is not None and signed_at != enqueued_at:
        raise PayloadError(
            f"payload was signed for enqueue time {signed_at!r}, but the job says "
            f"{enqueued_at!r}: a copied payload; not read"
        )
    return _unpickle(signed_part[meta_end:])


def make_job(
    keyring: Keyring,
    worker: str,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    job_id: str | None = None,
    enqueued_at: float | None = None,
    run_at: float | None = None,
    options: dict[str, Any] | None = None,
) -> NewJob:
    """A :class:`NewJob` with a payload signed for it, for writing jobs to a backend
    directly (bulk loads, tests)::

        app.backend.enqueue([make_job(app.keyring, "app.SendEmail", ("a@b.c",))])
    """
    job_id = job_id or os.urandom(16).hex()
    enqueued_at = time.time() if enqueued_at is None else enqueued_at
    payload = seal(keyring, job_id, worker, enqueued_at, args, kwargs or {})
    return NewJob(job_id, worker, payload, enqueued_at, run_at, dict(options or {}))


def dumps_unsigned(args: tuple[Any, ...], kwargs: dict[str, Any], *, worker: str = "job") -> bytes:
    """A version-1 (unsigned) payload, as toniq wrote before signing: read only with
    ``insecure_unsigned``. For tests and payload-agnostic backend tests."""
    return MAGIC + bytes([UNSIGNED]) + pickle_arguments(args, kwargs, worker=worker)


def _unpickle(body: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    try:
        value = pickle.loads(body)
    except Exception as exc:
        raise PayloadError(f"payload cannot be unpickled: {type(exc).__name__}: {exc}") from exc
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not isinstance(value[0], tuple)
        or not isinstance(value[1], dict)
    ):
        raise PayloadError("payload does not hold (args, kwargs)")
    return value[0], value[1]


def _find_culprit(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    for index, value in enumerate(args):
        if not _picklable(value):
            return f"positional argument {index} ({type(value).__name__})"
    for key, value in kwargs.items():
        if not _picklable(value):
            return f"argument {key!r} ({type(value).__name__})"
    return "an argument"


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return False
    return True
