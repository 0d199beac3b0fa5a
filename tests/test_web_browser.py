"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright),
served by uvicorn in a thread, on SQLite and on a private Redis, with a real node running
the jobs in this process.

The screenshots in ``docs/screenshots`` come from :func:`test_screenshots`: set
``TONIQ_SCREENSHOTS=docs/screenshots`` to write them there (otherwise they go to a
temporary directory, so a test run leaves the checkout alone).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

import toniq
import toniq.app
from tests.conftest import FAST, backend_url
from tests.test_web import serve, wait_for
from tests.workers import Echo, Fails
from toniq.job import JobState
from toniq.web import create_app

CHROMIUM = os.environ.get("TONIQ_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), (
        f"no Chromium at {CHROMIUM}: apt-get install chromium (or set TONIQ_CHROMIUM)"
    )
    browser = playwright.chromium.launch(executable_path=CHROMIUM)
    yield browser
    browser.close()


@pytest.fixture(params=["sqlite", "redis"])
def web_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[toniq.Toniq]:
    app = toniq.configure(url=backend_url(request.param, tmp_path), **FAST)
    yield app
    app.close()
    toniq.app._default = None


@pytest.fixture
def site(web_app: toniq.Toniq) -> Iterator[str]:
    with serve(create_app(web_app, poll_interval=0.2, chart_window=60)) as url:
        yield url


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.set_default_timeout(15_000)
    yield page
    context.close()
    # A script error or a refused resource (CSP) shows up here.
    assert errors == []


def wait_state(app: toniq.Toniq, job_id: str, state: JobState) -> None:
    wait_for(
        lambda: (r := app.get_job(job_id)) is not None and r.state is state, f"{job_id} {state}"
    )


class Flips(toniq.Worker, name="tests.web.Flips", retries=0):
    """Fails until ``broken`` is cleared."""

    broken = True

    def perform(self, order: int) -> None:
        if Flips.broken:
            raise ConnectionError(f"payment gateway timed out for order {order}")


# -- the scenarios ---------------------------------------------------------------------------


def test_a_failed_job_shows_its_traceback_and_retry_runs_it(
    web_app: toniq.Toniq, site: str, page: Page
) -> None:
    Flips.broken = True
    handle = Flips.enqueue(42)
    with toniq.Node(web_app):
        wait_state(web_app, handle.id, JobState.FAILED)
        page.goto(f"{site}/failed")
        row = page.locator(f'tr[data-job="{handle.id}"]')
        expect(row).to_contain_text("ConnectionError")
        expect(row).to_contain_text("payment gateway timed out for order 42")
        traceback = row.locator("pre.traceback")
        expect(traceback).to_be_hidden()
        row.locator("summary").click()
        expect(traceback).to_be_visible()
        expect(traceback).to_contain_text("Traceback (most recent call last)")
        expect(traceback).to_contain_text('raise ConnectionError(f"payment gateway')

        Flips.broken = False
        row.get_by_role("button", name="Retry").click()
        expect(page.locator(".notice")).to_have_text("Retried 1 job.")
        wait_for(lambda: web_app.get_job(handle.id) is None, "the retried job to run")
        page.reload()
        expect(page.locator(f'tr[data-job="{handle.id}"]')).to_have_count(0)
        expect(page.locator("p.empty")).to_have_text("No failed jobs.")
    assert web_app.counts()["tests.web.Flips"]["done"] == 1


def test_deleting_selected_and_all_failed_jobs(web_app: toniq.Toniq, site: str, page: Page) -> None:
    handles = [Fails.enqueue(f"broken {i}") for i in range(3)]
    with toniq.Node(web_app) as node:
        node.drain()
    page.goto(f"{site}/failed")
    expect(page.locator("tr[data-job]")).to_have_count(3)
    delete_selected = page.get_by_role("button", name="Delete selected")
    expect(delete_selected).to_be_disabled()
    page.locator(f'tr[data-job="{handles[0].id}"] input[type=checkbox]').check()
    expect(delete_selected).to_be_enabled()
    delete_selected.click()
    expect(page.locator(".notice")).to_have_text("Deleted 1 job.")
    expect(page.locator("tr[data-job]")).to_have_count(2)
    assert web_app.get_job(handles[0].id) is None

    page.get_by_role("link", name="Delete all 2…").click()
    expect(page.locator("h1")).to_have_text("Delete 2 failed jobs?")
    assert len(web_app.failed_jobs()) == 2  # nothing happens before the confirmation
    page.get_by_role("button", name="Yes, delete them").click()
    expect(page.locator(".notice")).to_have_text("Deleted 2 jobs.")
    expect(page.locator("tr[data-job]")).to_have_count(0)
    assert web_app.failed_jobs() == []


def test_the_overview_counts_change_as_jobs_run(
    web_app: toniq.Toniq, site: str, page: Page
) -> None:
    page.goto(site)
    available = page.locator('.cards [data-total="available"]')
    done = page.locator('.cards [data-total="done"]')
    expect(available).to_have_text("0")
    for i in range(5):
        Echo.enqueue(i)
    expect(available).to_have_text("5")  # live: the page polls, no reload
    row = page.locator('#counts tr[data-worker="tests.Echo"]')
    expect(row.locator('[data-state="available"]')).to_have_text("5")
    with toniq.Node(web_app) as node:
        node.drain()
        expect(available).to_have_text("0")
        expect(done).to_have_text("5")
        expect(row.locator('[data-state="done"]')).to_have_text("5")
        expect(page.locator(".cards [data-nodes]")).to_have_text("1")
        chart = page.locator("#rate-chart")
        expect(chart.locator("polyline")).to_have_count(1)
    expect(page.locator(".cards [data-nodes]")).to_have_text("0")  # it stopped cleanly


def test_a_script_in_arguments_and_errors_is_shown_as_text(
    web_app: toniq.Toniq, site: str, page: Page
) -> None:
    hostile = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
    handle = Fails.enqueue(hostile)
    with toniq.Node(web_app) as node:
        node.drain()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    for path in ("/failed", f"/jobs/{handle.id}", "/"):
        page.goto(site + path)
        if path == "/failed":
            page.locator("summary").first.click()
        if path != "/":
            expect(page.locator("main")).to_contain_text(hostile)  # the text, verbatim
        assert page.evaluate("window.__xss") is None
        assert page.locator("main script, main img").count() == 0
    assert dialogs == []


# -- screenshots -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    street: str
    city: str


class SendReceipt(toniq.Worker, name="shop.SendReceipt"):
    def perform(self, order: int, email: str) -> None:
        pass


class ChargeCard(toniq.Worker, name="shop.ChargeCard", retries=2, backoff=lambda n: 0.01):
    def perform(self, order: int, amount: Decimal, ship_to: Address) -> None:
        raise ValueError(f"card declined for order {order}: insufficient funds")


class SyncInventory(toniq.Worker, name="shop.SyncInventory", retries=5, backoff=lambda n: 900):
    def perform(self, sku: str) -> None:
        raise TimeoutError(f"warehouse API did not answer for {sku}")


GATE = threading.Event()


class ResizeImage(toniq.Worker, name="media.ResizeImage", max_concurrency=3):
    def perform(self, path: str, width: int) -> None:
        GATE.wait(60)


def test_screenshots(browser: Browser, tmp_path: Path) -> None:
    """Every page with realistic content, saved as PNG (see the module docstring)."""
    out = Path(os.environ.get("TONIQ_SCREENSHOTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    app = toniq.configure(url=backend_url("sqlite", tmp_path), **FAST)
    GATE.clear()
    context = browser.new_context(viewport={"width": 1280, "height": 760})
    page = context.new_page()
    node = toniq.Node(app)
    try:
        with serve(create_app(app, poll_interval=0.2, chart_window=300)) as site:
            charge = _build_scene(app, node, site, page)

            def shot(name: str, path: str, action: Any = None) -> None:
                page.goto(site + path)
                if action is not None:
                    action()
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
                assert (out / f"{name}.png").stat().st_size > 10_000

            # _build_scene left the overview open, its chart drawn from live samples.
            page.screenshot(path=str(out / "overview.png"), full_page=True)
            shot("running", "/running")
            shot("queued", "/queued")
            shot("scheduled", "/scheduled")
            shot("failed", "/failed", lambda: page.locator("summary").first.click())
            shot("confirm", "/failed/confirm?action=retry")
            shot("job", f"/jobs/{charge}")
    finally:
        GATE.set()
        node.stop()
        context.close()
        app.close()
        toniq.app._default = None


def _chart_points(page: Page) -> int:
    return int(page.locator("#rate-chart").get_attribute("data-points") or 0)


def _wait_chart(page: Page, points: int) -> None:
    # Polled from here: the page's CSP forbids the eval that wait_for_function needs.
    wait_for(lambda: _chart_points(page) >= points, f"{points} chart points", timeout=30)


def _build_scene(app: toniq.Toniq, node: toniq.Node, site: str, page: Page) -> str:
    """Failed, retrying, delayed, held, running and queued jobs, and a few seconds of
    varied throughput for the chart. Returns the id of a failed job."""
    address = Address("12 Rue des Lilas", "Lyon")
    charges = [
        ChargeCard.enqueue(1000 + i, Decimal("49.90") + i, ship_to=address) for i in range(3)
    ]
    Fails.enqueue("could not render invoice template 'receipt.html'")
    SyncInventory.enqueue("SKU-4471")
    SyncInventory.enqueue("SKU-0093")
    for i in range(3):
        SendReceipt.with_options(delay=120 + 300 * i).enqueue(2000 + i, f"buyer{i}@example.com")
    SendReceipt.with_options(hold=True).enqueue(2999, "vip@example.com")
    node.start()
    wait_for(lambda: len(app.failed_jobs()) == 4, "the failures", timeout=30)
    wait_for(lambda: len(app.jobs("scheduled")) == 6, "the retries", timeout=30)
    for i in range(8):
        ResizeImage.enqueue(f"/uploads/2024/06/photo-{i:03}.jpg", width=1024 if i % 2 else 640)
    wait_for(lambda: len(app.jobs("running")) == 3, "three images resizing")

    page.goto(site)
    waves = [4, 10, 22, 35, 28, 40, 55, 48, 30, 36, 20, 12, 18, 26, 30]
    for n in waves:
        before = _chart_points(page)
        for i in range(n):
            SendReceipt.enqueue(i, f"customer{i}@example.com")
        _wait_chart(page, before + 1)
    assert len(app.jobs("available", "shop.SendReceipt")) < 60  # the node keeps up
    return charges[0].id
