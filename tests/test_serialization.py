"""Payloads: arguments round-trip as themselves inside a signed envelope; anything
unsigned, forged, copied, truncated or too large is refused before it is unpickled."""

from __future__ import annotations

import datetime
import decimal
import pickle

import pytest

from tests.workers import Point
from toniq.errors import EnqueueError, PayloadError, PayloadTooLargeError, SerializationError
from toniq.serialization import dumps_unsigned, open_payload, seal, seal_many
from toniq.signing import Keyring, key_id, parse_secrets

NEW = b"new-key-0123456789abcdef"
OLD = b"old-key-0123456789abcdef"
RING = Keyring([NEW])
AT = 1_700_000_000.125


def sealed(ring: Keyring = RING, args: tuple[object, ...] = (1,), job: str = "j1") -> bytes:
    return seal(ring, job, "app.W", AT, args, {"k": b"v"})


def opened(payload: bytes, ring: Keyring = RING, **expect: object) -> object:
    where: dict[str, object] = {"job_id": "j1", "worker": "app.W", "enqueued_at": AT}
    where.update(expect)
    return open_payload(payload, ring, **where)  # type: ignore[arg-type]


def test_round_trip_keeps_types() -> None:
    args = (decimal.Decimal("1.10"), datetime.date(2026, 1, 2), Point(1, 2), (1, 2), {1, 2})
    assert opened(sealed(args=args)) == (args, {"k": b"v"})


def test_envelope_layout_is_version_2_with_the_key_id() -> None:
    payload = sealed()
    assert payload[:3] == b"TQ\x02" and payload[3:7] == key_id(NEW)


def test_unpicklable_argument_is_named() -> None:
    with pytest.raises(SerializationError, match=r"argument 'f' \(function\)"):
        seal(RING, "j", "w.W", AT, (), {"f": lambda: None})


def test_too_large_payload_is_refused_at_seal_and_at_open() -> None:
    with pytest.raises(PayloadTooLargeError, match="max_payload_size") as info:
        seal(RING, "j", "w.W", AT, ("x" * 2000,), {}, max_size=1000)
    assert isinstance(info.value, SerializationError) and isinstance(info.value, EnqueueError)
    with pytest.raises(PayloadError, match="more than max_payload_size"):
        open_payload(sealed(args=("x" * 2000,)), RING, job_id="j1", worker="app.W", max_size=1000)


def test_seal_many_writes_what_seal_writes_for_each_job() -> None:
    ids = ["0123456789abcdef" * 2, 'job "quoted" é', "j3"]
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = [((1,), {}), ((), {"k": b"v"})]
    calls.append(((Point(1, 2), "x" * 100), {"z": None}))
    for ring in (RING, Keyring([], accept_unsigned=True)):
        many = seal_many(ring, ids, "app.W", AT, calls, max_size=10_000)
        assert many == [
            seal(ring, i, "app.W", AT, a, k) for i, (a, k) in zip(ids, calls, strict=True)
        ]
    # Ids that need no escaping (every enqueue_many): the meta's text around them is made
    # once per id length.
    plain = ["a" * 32, "b" * 32, "c5", "d" * 32]
    calls4: list[tuple[tuple[object, ...], dict[str, object]]] = [((i,), {}) for i in range(4)]
    assert seal_many(RING, plain, "app.W", AT, calls4) == [
        seal(RING, i, "app.W", AT, a, k) for i, (a, k) in zip(plain, calls4, strict=True)
    ]
    for too_long in ("x" * 70_000, '"' * 70_000):
        with pytest.raises(SerializationError, match="too long"):
            seal_many(RING, ["a", too_long], "w.W", AT, calls4[:2])
    with pytest.raises(SerializationError, match=r"argument 'f' \(function\)"):
        seal_many(RING, ["a", "b"], "w.W", AT, [((1,), {}), ((), {"f": lambda: None})])
    with pytest.raises(PayloadTooLargeError, match="max_payload_size"):
        seal_many(RING, ["a", "b"], "w.W", AT, [((1,), {}), (("x" * 2000,), {})], max_size=1000)


def test_rotation_new_key_signs_and_old_key_still_verifies() -> None:
    rotated = Keyring(parse_secrets(f"{NEW.decode()},{OLD.decode()}"))
    old_payload = sealed(Keyring([OLD]))
    assert opened(old_payload, rotated) == ((1,), {"k": b"v"})
    fresh = sealed(rotated)
    assert fresh[3:7] == key_id(NEW)
    with pytest.raises(PayloadError, match="not one of this process's keys"):
        opened(fresh, Keyring([OLD]))


def test_a_payload_copied_under_another_job_or_worker_is_refused() -> None:
    with pytest.raises(PayloadError, match=r"signed for job j1 of app\.W, not job j2"):
        opened(sealed(), job_id="j2")
    with pytest.raises(PayloadError, match=r"not job j1 of app\.Other"):
        opened(sealed(), worker="app.Other")
    with pytest.raises(PayloadError, match="signed for enqueue time"):
        opened(sealed(), enqueued_at=AT + 1)


def _forged_body() -> bytes:
    class Evil:
        def __reduce__(self) -> tuple[object, ...]:
            return (exec, ("raise AssertionError('unpickled a forged payload')",))

    return pickle.dumps(((Evil(),), {}))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "bad magic"),
        (b"garbage", "bad magic"),
        (b"TQ\x09xxxx", "unsupported envelope version"),
        (b"TQ\x02short", "truncated"),
        (sealed()[:-3], "signature is bad"),
        (sealed()[:-1] + b"\x00", "signature is bad"),
        (b"TQ\x02" + key_id(NEW) + b"\x00" * 34 + _forged_body(), "signature is bad"),
        (b"TQ\x02" + b"\x01\x02\x03\x04" + b"\x00" * 34 + _forged_body(), "key id 01020304"),
        (b"TQ\x01" + _forged_body(), "unsigned"),
        (dumps_unsigned((1,), {}), "unsigned"),
    ],
)
def test_bad_payloads_are_refused_before_unpickling(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        opened(payload)


def test_unsigned_payloads_are_read_only_when_explicitly_accepted() -> None:
    insecure = Keyring([], accept_unsigned=True)
    assert opened(dumps_unsigned((1,), {}), insecure) == ((1,), {})
    with pytest.raises(PayloadError, match="cannot be unpickled"):
        opened(b"TQ\x01not pickle", insecure)
    unsigned = seal(insecure, "j1", "app.W", AT, (2,), {})
    assert unsigned[:3] == b"TQ\x01"  # no key: written unsigned (only with the opt-out)


def test_short_or_bad_keys_are_configuration_errors() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        parse_secrets("short")
    assert parse_secrets([NEW, OLD.decode()]) == (NEW, OLD)
    assert "new-key" not in repr(RING)  # a keyring never shows its keys


def test_the_hmac_is_the_standard_librarys_hmac_sha256() -> None:
    import hmac

    from toniq.signing import _HmacSha256

    for key in (b"k" * 16, b"0123456789abcdef" * 4, b"x" * 65, b"y" * 200):
        for message in (b"", b"m", b"z" * 1000):
            assert _HmacSha256(key).digest(message) == hmac.digest(key, message, "sha256")
