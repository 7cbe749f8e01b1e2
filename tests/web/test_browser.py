"""The Track Delivery page in a real headless Chromium (Debian's `chromium`, driven by Playwright).

A missing chromium or Playwright FAILS these tests (never a skip: a skipped browser tier looks green).
Screenshots go to artifacts/screenshots/ (gitignored).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

pytestmark = pytest.mark.store

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("EXIMTRACK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ZONE = "Europe/Berlin"
DEFAULT_HEADERS = ["Event", "From Address", "Sent Time", "Spam Score", "Recipient", "Result", "Actions"]


@pytest.fixture(scope="module")
def browser():
    """Chromium for this module's tests. Module-scoped, not session-scoped: while Playwright's sync API is
    open its event loop runs in this thread, and a test that runs after this module in the same process
    (`make test` runs two, each taking whole files) could not call `asyncio.run`."""
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.fail(f"chromium not found at {CHROMIUM}: install Debian's chromium (make apt)", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]'", pytrace=False)
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, web):
    ctx = browser.new_context(
        viewport={"width": 1400, "height": 900}, timezone_id=ZONE, accept_downloads=True
    )
    # window.print() would block headless Chromium: count the calls instead
    ctx.add_init_script("window.__prints = 0; window.print = function () { window.__prints += 1; };")
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(web.url + "/")
    yield pg
    ctx.close()
    assert errors == [], errors


def sign_in(page, web, account="root"):
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#token", web.tokens[account])
    page.click("#signin")
    page.wait_for_selector("#app:not([hidden])")
    wait_loaded(page)


def wait_loaded(page):
    page.wait_for_selector("body:not([data-loading])", state="attached")
    page.wait_for_selector("#body tr")


def headers(page) -> list[str]:
    return [t.strip() for t in page.locator("#head th").all_inner_texts()]


def column(page, name: str) -> list[str]:
    idx = headers(page).index(name)
    return [t.strip() for t in page.locator(f"#body tr td:nth-child({idx + 1})").all_inner_texts()]


def row_types(page) -> list[str]:
    return page.locator("#body tr").evaluate_all("rows => rows.map(r => r.dataset.type)")


def test_sign_in_shows_cpanels_default_report(page, web):
    assert page.locator("#app").is_hidden()
    sign_in(page, web)
    assert page.locator("#whoami-text").inner_text().startswith("Signed in as root")
    assert page.get_by_label("Recipient Email (optional)").is_visible()
    assert page.get_by_role("button", name="Run Report").is_visible()
    assert page.get_by_role("button", name="Show All").is_visible()
    assert page.get_by_role("button", name="Show Blocked & Failed").is_visible()
    boxes = {
        n: page.get_by_label(n).is_checked()
        for n in ("Show Successes", "Show Deferred", "Show Failures", "Show In-Progress")
    }
    assert boxes == {
        "Show Successes": False,
        "Show Deferred": False,
        "Show Failures": True,
        "Show In-Progress": False,
    }
    assert headers(page) == DEFAULT_HEADERS
    total = web.api("/api/v1/search", failure=1, with_total=1, limit=1)["total"]
    assert set(row_types(page)) <= {"failure", "rejected"}
    assert page.locator("#body tr").count() == min(25, total)
    assert page.locator("#status").inner_text() == f"Showing 1–{min(25, total)} of {total} results"
    icon = page.locator("#body tr").first.locator(".event")
    assert icon.get_attribute("title") in ("Failure", "Rejected (blocked at SMTP time)")
    assert page.locator("#tz").inner_text() == ZONE
    assert (
        page.locator("#retention").inner_text() == "Data is kept until you delete it."
    )  # test store: no TTL
    page.screenshot(path=str(SHOTS / "01-default-report.png"), full_page=True)


def test_wrong_token_is_refused(page, web):
    page.fill("#token", "et_wrong")
    page.click("#signin")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "not accepted" in page.locator("#login-error").inner_text()
    assert page.locator("#app").is_hidden()


def test_show_all_and_show_blocked_and_failed(page, web, all_rows):
    sign_in(page, web)
    page.click("#show-all")
    wait_loaded(page)
    for name in ("Show Successes", "Show Deferred", "Show Failures", "Show In-Progress"):
        assert page.get_by_label(name).is_checked()
    assert page.locator("#status").inner_text().endswith(f"of {len(all_rows)} results")
    page.click("#show-blocked")
    wait_loaded(page)
    assert page.get_by_label("Show Failures").is_checked()
    assert not page.get_by_label("Show Successes").is_checked()
    assert set(row_types(page)) <= {"failure", "rejected"}
    # one checkbox: successes only
    page.get_by_label("Show Failures").uncheck()
    page.get_by_label("Show Successes").check()
    page.click("#run")
    wait_loaded(page)
    assert set(row_types(page)) <= {"success", "filtered", "archive"}


def test_at_least_one_message_type(page, web):
    sign_in(page, web)
    before = page.locator("#status").inner_text()
    page.get_by_label("Show Failures").uncheck()
    assert page.get_by_text("You must show at least one message type.").is_visible()
    page.click("#run")
    assert page.locator("#type-error").is_visible()
    assert page.locator("#status").inner_text() == before  # no report was run
    page.screenshot(path=str(SHOTS / "02-at-least-one-type.png"))
    page.get_by_label("Show Deferred").check()
    assert page.locator("#type-error").is_hidden()


def test_recipient_search(page, web):
    sign_in(page, web)
    page.click("#show-all")
    wait_loaded(page)
    page.fill("#recipient", "BOB@local.test")
    page.click("#run")
    wait_loaded(page)
    want = web.search_all(recipient="bob@local.test")
    assert set(column(page, "Recipient")) == {"bob@local.test"}
    assert page.locator("#status").inner_text().endswith(f"of {len(want)} results")


def test_paging_and_rows_per_page(page, web):
    sign_in(page, web)
    page.click("#show-all")
    wait_loaded(page)
    page.select_option("#rows-per-page", "10")
    wait_loaded(page)
    want = web.search_all()
    pages = -(-len(want) // 10)
    assert page.locator("#page-info").inner_text() == f"Page 1 of {pages}"
    seen = []
    first = page.locator("#body tr").evaluate_all("rows => rows.map(r => r.dataset.msgid)")
    for n in range(pages):
        ids = page.locator("#body tr").evaluate_all("rows => rows.map(r => r.dataset.msgid)")
        assert len(ids) == (10 if n < pages - 1 else len(want) - 10 * (pages - 1))
        seen.extend(ids)
        if n < pages - 1:
            page.click("#next")
            page.wait_for_selector(f"#page-info:text-is('Page {n + 2} of {pages}')")
            wait_loaded(page)
    assert page.locator("#next").is_disabled()
    assert seen == [r["msgid"] for r in want]
    for _ in range(pages - 1):
        page.click("#prev")
        wait_loaded(page)
    assert page.locator("#page-info").inner_text() == f"Page 1 of {pages}"
    assert page.locator("#body tr").evaluate_all("rows => rows.map(r => r.dataset.msgid)") == first
    assert page.locator("#prev").is_disabled()


def test_sort_by_column_header(page, web):
    sign_in(page, web)
    page.click("#show-all")
    wait_loaded(page)
    page.click("#head th[data-col=recipient]")
    page.wait_for_selector("#head th[data-col=recipient][aria-sort=ascending]")
    wait_loaded(page)
    got = column(page, "Recipient")
    want = [r["recipient"] for r in web.api("/api/v1/search", sort="recipient:asc", limit=25)["rows"]]
    assert got == want
    page.click("#head th[data-col=recipient]")
    page.wait_for_selector("#head th[data-col=recipient][aria-sort=descending]")
    wait_loaded(page)
    want = [r["recipient"] for r in web.api("/api/v1/search", sort="recipient:desc", limit=25)["rows"]]
    assert column(page, "Recipient") == want


def test_table_options_and_choices_are_remembered(page, web):
    sign_in(page, web)
    page.click("#columns-button")
    page.check("#col-server")
    page.check("#col-subject")
    page.check("#col-size")
    page.uncheck("#col-spamscore")
    page.screenshot(path=str(SHOTS / "03-columns-menu.png"))
    page.click("#columns-button")
    assert headers(page) == [
        "Event", "From Address", "Sent Time", "Recipient", "Size", "Result", "Server", "Subject", "Actions"
    ]  # fmt: skip
    assert set(column(page, "Server")) <= {"web1", "web2"}
    page.select_option("#rows-per-page", "50")
    wait_loaded(page)
    page.get_by_label("Show Deferred").check()
    page.click("#run")
    wait_loaded(page)
    page.reload()  # sessionStorage keeps the token in this tab, localStorage the choices
    page.wait_for_selector("#app:not([hidden])")
    wait_loaded(page)
    assert "Server" in headers(page) and "Spam Score" not in headers(page)
    assert page.locator("#rows-per-page").input_value() == "50"
    assert page.get_by_label("Show Deferred").is_checked() and page.get_by_label("Show Failures").is_checked()
    assert set(row_types(page)) <= {"failure", "rejected", "defer"}


def test_details_popup_with_timeline_print_and_close(page, web, all_rows):
    sign_in(page, web)
    page.click("#show-all")
    wait_loaded(page)
    target = next(r for r in all_rows if r["attempts"] >= 2 and r["type"] == "success")
    page.fill("#recipient", target["recipient"])
    page.click("#run")
    wait_loaded(page)
    row = page.locator(f"#body tr[data-msgid='{target['msgid']}']").first
    row.locator(".details-btn").click()
    dialog = page.get_by_role("dialog", name="Delivery Event Details")
    dialog.wait_for()
    assert dialog.locator("tr[data-field=recipient] td").inner_text() == target["recipient"]
    assert dialog.locator("tr[data-field=msgid] td").inner_text() == target["msgid"]
    page.wait_for_selector("#timeline-table tbody tr")
    types = page.locator("#timeline-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.type)")
    assert "defer" in types and "success" in types
    assert target["msgid"] in page.locator("#loglines").inner_text()
    assert page.locator("#timeline-status").inner_text().startswith("Arrived ")
    page.screenshot(path=str(SHOTS / "04-details-popup.png"))
    page.get_by_role("button", name="Print").click()
    assert page.evaluate("window.__prints") == 1
    page.get_by_role("button", name="Close", exact=True).click()
    assert page.locator("#overlay").is_hidden()


def test_bounce_children_in_the_timeline(page, web, all_rows):
    sign_in(page, web)
    bounce = next(r for r in all_rows if r["parent_msgid"] and r["server"] == "web1")
    parent = next(r for r in all_rows if r["msgid"] == bounce["parent_msgid"] and r["server"] == "web1")
    page.click("#more summary")
    page.fill("#f-msgid", parent["msgid"])
    page.click("#show-all")
    wait_loaded(page)
    page.locator("#body tr .details-btn").first.click()
    page.wait_for_selector("#children li")
    assert bounce["msgid"] in page.locator("#children").inner_text()


def test_csv_export(page, web):
    sign_in(page, web)
    page.click("#show-all")
    wait_loaded(page)
    with page.expect_download() as info:
        page.click("#export")
    path = info.value.path()
    rows = list(csv.DictReader(io.StringIO(Path(path).read_text(encoding="utf-8"))))
    assert info.value.suggested_filename.endswith(".csv")
    assert len(rows) == len(web.search_all())


def test_times_in_the_viewers_zone(page, web):
    sign_in(page, web)
    first = web.api("/api/v1/search", failure=1, limit=1)["rows"][0]
    t = first["sendunixtime"] or first["actionunixtime"]
    want = datetime.fromtimestamp(t, ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M:%S")
    assert column(page, "Sent Time")[0] == want


def test_more_filters_server_subject_date_range(page, web, all_rows):
    sign_in(page, web)
    page.click("#more summary")
    assert page.locator("#f-server option").all_inner_texts() == ["All servers", "web1", "web2"]
    page.select_option("#f-server", "web2")
    page.fill("#f-subject", "S07")
    page.click("#show-all")
    wait_loaded(page)
    want = web.search_all(server="web2", subject="S07", subject_searchmatch="contains")
    assert want and page.locator("#body tr").count() == len(want)
    # a date range after every row: nothing
    page.fill("#f-subject", "")
    page.fill("#f-start", "2099-01-01T00:00:00")
    page.click("#run")
    page.wait_for_selector("#body td.empty")
    assert page.locator("#status").inner_text() == "0 results"


def test_a_webmail_login_sees_only_its_address(page, web):
    sign_in(page, web, "bob")
    assert "webmail bob@local.test" in page.locator("#whoami-text").inner_text()
    page.click("#show-all")
    wait_loaded(page)
    page.click("#columns-button")
    page.check("#col-deliveredto")
    page.click("#columns-button")
    cols = zip(
        column(page, "From Address"), column(page, "Recipient"), column(page, "Delivered To"), strict=True
    )
    for sender, rcpt, dto in cols:
        assert "bob@local.test" in (sender.lower(), rcpt.lower(), dto.lower())
    page.screenshot(path=str(SHOTS / "05-webmail-bob.png"), full_page=True)
    page.click("#signout")
    assert page.locator("#login").is_visible()


def test_alerts_panel_and_its_links(page, web):
    """Firing alerts the account may see are listed above the form; "Show messages" runs the alert's search
    (the filters of its link, shown with a Clear button). A reseller sees only alerts about its accounts."""
    sign_in(page, web)
    page.wait_for_selector("#alerts:not([hidden])")
    assert page.locator("#alerts-list li").count() == 2
    page.locator("#alerts-list li[data-rule=compromised-account] button").click()
    page.wait_for_selector("#link-filter:not([hidden])")
    assert "user localacct" in page.locator("#link-filter-text").inner_text()
    wait_loaded(page)
    senders = column(page, "From Address")
    assert senders and all(s.lower().endswith("@local.test") for s in senders), senders
    page.screenshot(path=str(SHOTS / "06-alerts.png"), full_page=True)
    page.click("#link-filter-clear")
    wait_loaded(page)
    assert page.locator("#link-filter").is_hidden()
    page.click("#signout")
    sign_in(page, web, "resellerb")
    assert page.locator("#alerts").is_hidden()
    page.click("#signout")
    sign_in(page, web, "resellera")
    page.wait_for_selector("#alerts:not([hidden])")
    assert page.locator("#alerts-list li").count() == 1


def test_a_link_with_filters_opens_the_search(browser, web):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, timezone_id=ZONE)
    pg = ctx.new_page()
    pg.goto(web.url + "/?server=web2&success=1")
    sign_in(pg, web)
    assert "server web2" in pg.locator("#link-filter-text").inner_text()
    want = web.search_all("root", server="web2", success=1, defer=0, failure=0, inprogress=0)
    assert want and pg.locator("#body tr").count() == min(len(want), 25)
    assert pg.locator("#show-success").is_checked() and not pg.locator("#show-failure").is_checked()
    pg.click("#link-filter-clear")
    wait_loaded(pg)
    everywhere = web.search_all("root", success=1, defer=0, failure=0, inprogress=0)
    assert len(everywhere) > len(want) and pg.locator("#body tr").count() == min(len(everywhere), 25)
    ctx.close()
