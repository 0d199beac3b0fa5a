"""A tiny shop that uses toniq, to show how to test code that enqueues jobs.

Placing an order charges the card in the background; a charged order gets a receipt, an
unpaid one a reminder an hour later; page views are counted without touching the store.
``test_shop.py`` tests it with :mod:`toniq.testing`, in both modes: ``pytest examples/shop``.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import toniq

#: How long an unpaid order waits before its reminder.
REMINDER_DELAY = timedelta(hours=1)


@dataclass
class Order:
    id: int
    email: str
    amount: Decimal
    paid: bool = False
    charge_id: str | None = None


class PaymentDeclined(Exception):
    """The card was refused."""


class CardGateway:
    """A stand-in for a payment provider: cards of ``declined`` emails are refused, and
    the next ``outages`` calls fail as if the network were down."""

    def __init__(self) -> None:
        self.charges: list[tuple[str, Decimal]] = []
        self.declined: set[str] = set()
        self.outages = 0

    def charge(self, email: str, amount: Decimal) -> str:
        if self.outages:
            self.outages -= 1
            raise ConnectionError("payment gateway unreachable")
        if email in self.declined:
            raise PaymentDeclined(f"the card of {email} was declined")
        self.charges.append((email, amount))
        return f"ch_{len(self.charges)}"


# The shop's "database" and the outside world.
orders: dict[int, Order] = {}
outbox: list[tuple[str, str]] = []
page_views: Counter[str] = Counter()
gateway = CardGateway()
_ids = itertools.count(1)


class ChargeCard(toniq.Worker, retries=3, timeout=30):
    """Charge an order's card, then send its receipt. ``async``: it waits on the network."""

    async def perform(self, order_id: int, amount: Decimal) -> str | None:
        order = orders[order_id]
        if order.paid:
            return None  # idempotent: a second run of the same job charges nothing
        order.charge_id = gateway.charge(order.email, amount)
        order.paid = True
        await SendReceipt.enqueue_async(order_id)
        return order.charge_id


class SendReceipt(toniq.Worker):
    def perform(self, order_id: int) -> None:
        order = orders[order_id]
        outbox.append((order.email, f"Receipt for order {order.id}: {order.amount} paid"))


class RemindUnpaid(toniq.Worker):
    def perform(self, order_id: int) -> None:
        order = orders[order_id]
        if not order.paid:
            outbox.append((order.email, f"Order {order.id} is waiting for your payment"))


class RecordPageView(toniq.Worker, persist=False):
    """Counted in this process, never stored: losing one on a crash is fine."""

    def perform(self, path: str) -> None:
        page_views[path] += 1


def place_order(email: str, amount: Decimal) -> Order:
    """What the checkout page calls."""
    order = Order(next(_ids), email, amount)
    orders[order.id] = order
    ChargeCard.enqueue(order.id, amount)
    RemindUnpaid.with_options(delay=REMINDER_DELAY).enqueue(order.id)
    RecordPageView.enqueue("/checkout")
    return order


def reset() -> None:
    """Empty the shop (between tests)."""
    global _ids
    orders.clear()
    outbox.clear()
    page_views.clear()
    gateway.charges.clear()
    gateway.declined.clear()
    gateway.outages = 0
    _ids = itertools.count(1)
