"""axe-core (vendored, tests/vendor/axe-core) on every page of the navigation and the pages one
click below it, for an acme admin and an acme viewer: no serious or critical violation."""

from __future__ import annotations

import json

import pytest

from tests.console_pages import AXE, populate, sign_in
from tests.test_browser_review_flow import ARTIFACTS
from tests.test_browser_review_flow import browser as browser  # noqa: PLC0414 (the shared Chromium fixture)

pytestmark = pytest.mark.browser

AXE_SOURCE = AXE.read_text()
# WCAG 2.1 A and AA plus axe's best practices (landmarks, one main, heading order ...).
AXE_OPTIONS = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]}}


def serious_violations(page) -> list[dict]:
    # Through the DevTools protocol, so the page's CSP (script-src 'self') does not apply to axe.
    page.evaluate(AXE_SOURCE)
    violations = page.evaluate("options => axe.run(document, options).then(r => r.violations)", AXE_OPTIONS)
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [{"target": n["target"], "summary": n["failureSummary"]} for n in v["nodes"][:5]],
        }
        for v in violations
        if v["impact"] in {"serious", "critical"}
    ]


@pytest.mark.parametrize("role", ["admin", "viewer"])
@pytest.mark.parametrize("width", [1360, 390])
def test_axe_finds_no_serious_violation_on_any_page(browser, live_server, tcast, role, width):
    pages = populate(tcast)
    page = sign_in(browser, live_server, getattr(tcast, role).username, width=width)
    found = {}
    for name, path in pages:
        page.goto(f"{live_server.url}{path}")
        violations = serious_violations(page)
        if violations:
            found[name] = violations
    page.context.close()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"axe-{role}-{width}.json").write_text(json.dumps(found, indent=1))
    assert not found, json.dumps(found, indent=1)


def test_axe_finds_no_serious_violation_on_the_login_page(browser, live_server):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(f"{live_server.url}/login/")
    assert serious_violations(page) == []
    context.close()
