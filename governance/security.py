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

    The API's Swagger page loads its bundle from a CDN with an inline bootstrap, so
    it gets its own, looser policy; nothing else does.
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
