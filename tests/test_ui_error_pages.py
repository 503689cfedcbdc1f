"""Governor answers errors with its own pages (templates/404.html, 403.html, 403_csrf.html,
500.html): never Django's technical pages that list the URL patterns or a traceback."""

from __future__ import annotations

import pytest
from django.test import Client

from conftest import PASSWORD

TECHNICAL = ("Using the URLconf", "Django tried these URL patterns", "Traceback", "DEBUG = True")


def signed_in(user) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def assert_governor_page(response, status: int, heading: str) -> str:
    text = response.content.decode()
    assert response.status_code == status
    assert f"<h1>{heading}</h1>" in text
    assert 'href="/"' in text and "Back to the dashboard" in text
    assert not [marker for marker in TECHNICAL if marker in text]
    return text


def test_an_unknown_address_answers_governors_not_found_page_with_the_navigation(cast):
    text = assert_governor_page(signed_in(cast.viewer).get("/no-such-page/"), 404, "Not found")
    assert 'aria-label="Main"' in text and "acme-viewer" in text


def test_another_tenants_job_answers_the_same_not_found_page(cast):
    job = cast.make_job(cast.globex_prod)
    assert_governor_page(signed_in(cast.viewer).get(f"/jobs/{job.pk}/"), 404, "Not found")


def test_a_refusal_answers_governors_page_naming_the_reason(cast):
    text = assert_governor_page(signed_in(cast.viewer).get("/changes/new/"), 403, "Not allowed")
    assert "propose" in text.lower()


def test_a_form_sent_without_its_csrf_token_answers_governors_page(cast):
    client = Client(enforce_csrf_checks=True)
    client.login(username=cast.viewer.username, password=PASSWORD)
    response = client.post("/logout/")
    assert_governor_page(response, 403, "This form has expired")


@pytest.mark.urls("tests.error_urls")
def test_a_failing_view_answers_governors_server_error_page(cast):
    client = signed_in(cast.viewer)
    client.raise_request_exception = False
    text = assert_governor_page(client.get("/test-only/fail/"), 500, "Something went wrong")
    assert "a bug in a view" not in text
