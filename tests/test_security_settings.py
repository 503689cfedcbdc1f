"""Session security: login throttling, headers, CSP, cookies, and a clean `check --deploy` in production."""

import os
import subprocess
import sys
from pathlib import Path

from rest_framework.test import APIClient

from conftest import PASSWORD
from governance.models import AuditAction, AuditEvent

ROOT = Path(__file__).resolve().parent.parent


def _post_login(client, username, password, ip="10.9.9.9"):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=ip)


def test_brute_force_login_is_locked_out_after_the_failure_limit(cast, client, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _post_login(client, "acme-viewer", "guess").status_code == 200
    assert _post_login(client, "acme-viewer", "guess").status_code == 429
    locked = _post_login(client, "acme-viewer", PASSWORD)
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action=AuditAction.LOGIN_FAILED).count() >= settings.AXES_FAILURE_LIMIT


def test_a_lockout_does_not_lock_the_user_out_from_another_address(cast, client, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _post_login(client, "acme-viewer", "guess", ip="10.9.9.9")
    response = _post_login(client, "acme-viewer", PASSWORD, ip="10.1.1.1")
    assert response.status_code == 302


def test_brute_force_on_the_token_endpoint_is_locked_out(cast, settings):
    api = APIClient()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        api.post("/api/v1/auth/token/", {"username": "acme-viewer", "password": "guess"}, format="json")
    response = api.post("/api/v1/auth/token/", {"username": "acme-viewer", "password": PASSWORD}, format="json")
    assert response.status_code == 429
    assert "token" not in response.content.decode()


def test_pages_carry_a_strict_content_security_policy_and_security_headers(cast, client):
    response = client.get("/login/")
    csp = response["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_the_api_docs_load_swagger_ui_from_this_origin_only(cast, client):
    client.force_login(cast.viewer)
    response = client.get("/api/docs/")
    csp = response["Content-Security-Policy"]
    script_src = csp.split("script-src")[1].split(";")[0]
    assert script_src.split() == ["'self'"]
    assert "http" not in csp
    page = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "<script>" not in page and "cdn" not in page
    # The bootstrap is a script of its own, under the same policy.
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.content.decode()


def test_api_responses_carry_the_policy_too(cast):
    api = APIClient()
    api.force_authenticate(cast.viewer)
    assert "default-src 'self'" in api.get("/api/v1/jobs/")["Content-Security-Policy"]


def test_csrf_is_enforced_on_browser_posts(cast):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(cast.viewer)
    assert client.post("/logout/").status_code == 403


def _production_env(**extra):
    # Only the variables a production host would have: nothing from this test process's own setup.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GOVERNOR_", "DATABASE_", "DEBUG"))}
    env.update(
        GOVERNOR_ENV="production",
        SECRET_KEY="k" * 10 + "Zq8!pX2#mN4$vB6^cD9&fG1*hJ3(lK5)wE7-rT0_yU+aS",
        DATABASE_URL="sqlite:////tmp/governor-check-deploy.sqlite3",
        ALLOWED_HOSTS="governor.example.com",
        GOVERNOR_AUDIT_KEY="a" * 8 + "3f9c1e7b5d2a4c6e8f0b1d3a5c7e9f2b4d6a8c0e",
        **extra,
    )
    return env


def test_check_deploy_is_clean_in_production_mode():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=_production_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_cookies_are_secure_and_http_only():
    code = (
        "from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, s.SECURE_HSTS_SECONDS > 0)"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'governor.settings'); django.setup(); {code}",
        ],
        cwd=ROOT,
        env=_production_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.split() == ["True", "True", "True", "True"], result.stderr
