"""The console on a phone (390 px): no page scrolls sideways, the menu folds behind a button that
works from the keyboard, tables turn into cards, and the approvals come before the diff."""

from __future__ import annotations

import pytest

from tests.console_pages import populate, sign_in
from tests.test_browser_review_flow import ARTIFACTS
from tests.test_browser_review_flow import browser as browser  # noqa: PLC0414 (the shared Chromium fixture)

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}

# Any element that scrolls sideways (an overflow-x: auto box wider inside than out), and how wide
# the document is: at 390 px nothing may need a horizontal scroll.
WIDTHS = """() => {
  const sideways = [];
  for (const el of document.querySelectorAll("body *")) {
    const overflow = getComputedStyle(el).overflowX;
    if ((overflow === "auto" || overflow === "scroll") && el.scrollWidth > el.clientWidth + 1) {
      sideways.push(el.tagName.toLowerCase() + (el.className ? "." + String(el.className).replace(/ /g, ".") : ""));
    }
  }
  return {
    document: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
    viewport: window.innerWidth,
    sideways: sideways,
  };
}"""


@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_no_page_scrolls_sideways_at_390_px(browser, live_server, tcast, role):
    pages = populate(tcast)
    page = sign_in(browser, live_server, getattr(tcast, role).username, **PHONE)
    ARTIFACTS.mkdir(exist_ok=True)
    too_wide = {}
    for name, path in pages:
        page.goto(f"{live_server.url}{path}")
        widths = page.evaluate(WIDTHS)
        if widths["document"] > widths["viewport"] or widths["sideways"]:
            too_wide[name] = widths
        if role == "admin":
            page.screenshot(path=str(ARTIFACTS / f"390-{name}.png"), full_page=True)
    page.context.close()
    assert not too_wide, too_wide


def test_the_menu_folds_behind_a_keyboard_button_on_a_phone(browser, live_server, tcast):
    page = sign_in(browser, live_server, tcast.viewer.username, **PHONE)
    toggle = page.get_by_role("button", name="Menu")
    jobs_link = page.locator("nav.mainnav >> text=Jobs")
    assert toggle.is_visible() and toggle.get_attribute("aria-expanded") == "false"
    assert toggle.get_attribute("aria-controls") == "topbar-menu"
    assert not jobs_link.is_visible() and not page.get_by_role("button", name="Sign out").is_visible()

    # From the top of the page: the skip link, the brand, then the menu button.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "nav-toggle"
    # Focus is visible: a solid ring, not the browser's default or nothing.
    ring = page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineWidth]; })()"
    )
    assert ring == ["solid", "3px"], ring
    page.keyboard.press("Enter")
    assert toggle.get_attribute("aria-expanded") == "true"
    assert jobs_link.is_visible() and page.get_by_role("button", name="Sign out").is_visible()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Dashboard"
    page.screenshot(path=str(ARTIFACTS / "390-menu-open.png"))
    page.keyboard.press("Escape")
    assert toggle.get_attribute("aria-expanded") == "false" and not jobs_link.is_visible()
    assert page.evaluate("document.activeElement.className") == "nav-toggle"
    page.keyboard.press("Space")
    jobs_link.click()
    page.wait_for_url(f"{live_server.url}/jobs/")

    # On a wide screen the menu is simply there and the button is not.
    page.set_viewport_size({"width": 1360, "height": 900})
    assert not toggle.is_visible() and jobs_link.is_visible()
    page.context.close()


def test_without_javascript_the_menu_stays_open_and_fits(browser, live_server, tcast):
    context = browser.new_context(viewport=PHONE, java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", tcast.viewer.username)
    page.fill("#id_password", "correct horse battery staple")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    assert not page.locator(".nav-toggle").is_visible()
    assert page.locator("nav.mainnav >> text=Audit").is_visible()
    widths = page.evaluate(WIDTHS)
    assert widths["document"] <= widths["viewport"], widths
    context.close()


def test_the_skip_link_moves_focus_to_the_content(browser, live_server, tcast):
    page = sign_in(browser, live_server, tcast.viewer.username)
    skip = page.get_by_role("link", name="Skip to content")
    assert skip.bounding_box()["y"] < 0  # out of sight until focused
    page.keyboard.press("Tab")
    assert skip.bounding_box()["y"] >= 0
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.context.close()


def test_on_a_phone_tables_become_cards_and_the_approvals_come_before_the_diff(browser, live_server, tcast):
    pages = dict(populate(tcast))
    page = sign_in(browser, live_server, tcast.approver2.username, **PHONE)
    page.goto(f"{live_server.url}/jobs/")
    assert not page.locator("table.table thead").is_visible()
    schedule = page.locator("table.table tbody tr").first.locator("td").nth(4)
    assert schedule.get_attribute("data-label") == "Schedule"
    assert page.evaluate("el => getComputedStyle(el, '::before').content", schedule.element_handle()) == '"Schedule"'

    page.goto(f"{live_server.url}{pages['change-open']}")
    progress = page.get_by_role("progressbar", name="Approvals")
    assert progress.get_attribute("aria-valuenow") == "1" and progress.get_attribute("aria-valuemax") == "2"
    approve = page.locator("[data-testid=approve]").bounding_box()
    diff = page.locator("table.diff").first.bounding_box()
    assert approve["y"] < diff["y"], (approve, diff)
    page.screenshot(path=str(ARTIFACTS / "390-change-review.png"), full_page=True)

    # On a wide screen the approvals sit beside the diff, on its right.
    page.set_viewport_size({"width": 1360, "height": 900})
    approve = page.locator("[data-testid=approve]").bounding_box()
    diff = page.locator("table.diff").first.bounding_box()
    assert approve["x"] > diff["x"] + diff["width"] - 1, (approve, diff)
    page.context.close()


def test_an_unknown_address_shows_governors_not_found_page(browser, live_server, tcast):
    page = sign_in(browser, live_server, tcast.viewer.username, **PHONE)
    response = page.goto(f"{live_server.url}/no-such-page/")
    assert response.status == 404
    assert page.locator("h1").inner_text() == "Not found"
    assert page.get_by_role("link", name="Back to the dashboard").is_visible()
    assert "URLconf" not in page.content()
    page.screenshot(path=str(ARTIFACTS / "390-not-found.png"), full_page=True)
    page.context.close()
