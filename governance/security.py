"""Session security pieces: login throttling without a request, and the content security policy."""

from __future__ import annotations

from axes.backends import AxesStandaloneBackend
from django.conf import settings


class LoginThrottleBackend(AxesStandaloneBackend):
    """django-axes lockout for every login that comes with a request (UI form, API token endpoint).

    Calls without a request (management commands, the test client's ``login()``)
    have no client to throttle, so they are passed on instead of raising.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def _header(directives: dict[str, list[str]]) -> str:
    return "; ".join(f"{name} {' '.join(values)}".strip() for name, values in directives.items())


class ContentSecurityPolicyMiddleware:
    """Send a strict CSP on every response (scripts and styles only from our own origin, no framing).

    The API's Swagger page (served from our own static files) sets inline styles, so it gets
    its own policy allowing them; nothing else does.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self.default = _header(settings.GOVERNOR_CSP)
        self.docs = _header(settings.GOVERNOR_CSP_API_DOCS)

    def __call__(self, request):
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            policy = self.docs if request.path.startswith("/api/docs/") else self.default
            response["Content-Security-Policy"] = policy
        response.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        response.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
        return response


class DeniedAccessAuditMiddleware:
    """Every refusal of a signed-in user in the browser UI or the admin lands in the audit trail.

    Views record refusals with ``access.record_denied`` in the object's tenant chain; a 403 that
    no view recorded (a page rule, a CSRF failure, a view that forgot) is recorded here, in the
    platform chain, with the path. The API records its own refusals (governance.api).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from . import audit
        from .access import denials_recorded
        from .models import AuditAction

        token = denials_recorded.set(0)
        try:
            response = self.get_response(request)
            user = getattr(request, "user", None)
            if (
                response.status_code == 403
                and getattr(user, "is_authenticated", False)
                and not denials_recorded.get()
                and not request.path.startswith("/api/")
            ):
                audit.record(
                    AuditAction.ACCESS_DENIED,
                    actor=user,
                    ip=request.META.get("REMOTE_ADDR") or None,
                    data={"action": request.method.lower(), "path": request.path[:300], "reason": "page refused"},
                )
            return response
        finally:
            denials_recorded.reset(token)
