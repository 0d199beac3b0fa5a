"""The shop's tests: toniq.testing in manual mode (collect, assert, drain) and in inline mode
(jobs run as they are enqueued). Run them with ``pytest examples/shop``."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from unittest.mock import ANY

import pytest
import shop
from shop import ChargeCard, PaymentDeclined, RecordPageView, RemindUnpaid, SendReceipt

import toniq.testing

ADA = "ada@example.com"

# -- manual mode: what was enqueued, then drain -------------------------------------------------


def test_placing_an_order_enqueues_its_jobs(jobs: toniq.testing.Harness) -> None:
    order = shop.place_order(ADA, Decimal("9.99"))

    jobs.assert_enqueued(ChargeCard, order.id, Decimal("9.99"))
    reminder = jobs.assert_enqueued(RemindUnpaid, order_id=order.id)
    assert reminder.options == {"delay": 3600.0}
    jobs.assert_enqueued(RecordPageView, "/checkout")  # persist=False jobs are collected too
    jobs.assert_not_enqueued(SendReceipt)  # not before the card is charged
    assert not order.paid and shop.page_views == {}  # nothing ran


def test_draining_charges_the_card_and_sends_the_receipt(jobs: toniq.testing.Harness) -> None:
    order = shop.place_order(ADA, Decimal("9.99"))

    results = jobs.drain()  # what is due, and what those jobs enqueue

    assert [(r.worker, r.outcome) for r in results] == [
        ("shop.ChargeCard", "done"),
        ("shop.RecordPageView", "done"),
        ("shop.SendReceipt", "done"),  # enqueued by ChargeCard
    ]
    assert order.paid and shop.gateway.charges == [(ADA, Decimal("9.99"))]
    assert shop.outbox == [(ADA, "Receipt for order 1: 9.99 paid")]
    assert shop.page_views == {"/checkout": 1}
    # The reminder is an hour away: drain(scheduled=True) runs it now. The order is paid.
    assert [j.worker for j in jobs.pending()] == ["shop.RemindUnpaid"]
    [reminder] = jobs.drain(scheduled=True)
    assert reminder.ok and len(shop.outbox) == 1


def test_an_unpaid_order_gets_a_reminder(jobs: toniq.testing.Harness) -> None:
    shop.gateway.declined.add(ADA)
    order = shop.place_order(ADA, Decimal("9.99"))

    results = jobs.drain(raise_errors=False)  # report the failure instead of raising it

    charge = results[0]
    assert charge.worker == "shop.ChargeCard" and charge.outcome == "failed"
    assert charge.error is not None and charge.error.type == "shop.PaymentDeclined"
    jobs.assert_not_enqueued(SendReceipt)
    jobs.drain(scheduled=True)
    assert not order.paid
    assert shop.outbox == [(ADA, "Order 1 is waiting for your payment")]


def test_a_failed_charge_fails_the_test_unless_asked_not_to(jobs: toniq.testing.Harness) -> None:
    shop.gateway.declined.add(ADA)
    shop.place_order(ADA, Decimal("9.99"))
    with pytest.raises(PaymentDeclined):
        jobs.drain()


def test_drain_async_from_async_code(jobs: toniq.testing.Harness) -> None:
    async def checkout() -> shop.Order:
        order = shop.place_order(ADA, Decimal("5"))
        await jobs.drain_async()  # async jobs run on this event loop
        return order

    order = asyncio.run(checkout())
    assert order.paid and len(shop.outbox) == 1


# -- inline mode: jobs run as they are enqueued --------------------------------------------------


def test_checkout_inline(inline_jobs: toniq.testing.Harness) -> None:
    order = shop.place_order(ADA, Decimal("9.99"))

    assert order.paid and order.charge_id == "ch_1"
    assert shop.outbox == [(ADA, "Receipt for order 1: 9.99 paid")]
    assert shop.page_views == {"/checkout": 1}
    inline_jobs.assert_enqueued(SendReceipt, order.id)
    inline_jobs.assert_enqueued(ChargeCard, order.id, ANY)
    # Delayed jobs wait, as in production, until drained with scheduled=True.
    assert [j.worker for j in inline_jobs.pending()] == ["shop.RemindUnpaid"]


def test_a_declined_card_raises_in_the_caller() -> None:
    shop.gateway.declined.add(ADA)
    with toniq.testing.inline(), pytest.raises(PaymentDeclined, match="declined"):
        shop.place_order(ADA, Decimal("9.99"))
    assert shop.outbox == []


def test_a_declined_card_is_recorded_with_raise_errors_false() -> None:
    shop.gateway.declined.add(ADA)
    with toniq.testing.inline(raise_errors=False) as jobs:
        order = shop.place_order(ADA, Decimal("9.99"))
    [failure] = jobs.failures
    assert failure.worker == "shop.ChargeCard" and isinstance(failure.exception, PaymentDeclined)
    assert not order.paid and shop.page_views == {"/checkout": 1}  # the rest went on


def test_a_gateway_outage_is_retried() -> None:
    shop.gateway.outages = 2
    with toniq.testing.inline(retries=True) as jobs:  # ChargeCard's own retries=3, no waiting
        order = shop.place_order(ADA, Decimal("9.99"))
    charge = jobs.results[0]
    assert charge.worker == "shop.ChargeCard" and charge.attempts == 3 and charge.ok
    assert [e.kind for e in charge.events] == ["retrying", "retrying", "done"]
    assert order.paid and len(shop.gateway.charges) == 1
