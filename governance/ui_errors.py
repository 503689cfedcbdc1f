"""Service errors in the UI: one mapping, as ``governance.api.exception_handler`` is for the API.

A view calls a service and lets its refusal escape; ``service_errors`` turns it into the page:

- ``Http404`` (missing or hidden) passes through: the 404 page.
- ``AccessDenied`` (the actor may not): 403 with the reason.
- ``ServiceError`` (``ChangeError``, ``JobStateError``: not now): 409 for a state conflict, else 400.

With ``page``, the view's own page is rendered again with the error (``page(request, error, *args,
**kwargs)`` receives the view's arguments and a ``UIError``); without, a refusal is the standard 403
page (``PermissionDenied``, audited by ``security.DeniedAccessAuditMiddleware``) and a conflict is a
message on the page the request came from (a redirect to ``redirect_to``, a URL name taking the
view's arguments; neither: the error propagates). Form views put the error on the form with ``form_error``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from .access import record_denied
from .errors import ServiceError
from .services import AccessDenied

# What a view may let escape for ``service_errors`` to map.
UI_ERRORS = (AccessDenied, ServiceError)


@dataclass(frozen=True)
class UIError:
    message: str
    status: int

    @property
    def denied(self) -> bool:
        return self.status == 403

    def record(self, request: HttpRequest, action: str, obj: Model) -> None:
        """Audit a refusal (403) in the object's tenant chain; conflicts are not recorded."""
        if self.denied:
            record_denied(request.user, action, obj, reason=self.message)


def ui_error(exc: Exception) -> UIError:
    """The status and the message a user sees for a service error."""
    if isinstance(exc, AccessDenied):
        return UIError(str(exc), 403)
    if isinstance(exc, ServiceError):
        return UIError(exc.reason, 409 if exc.conflict else 400)
    if isinstance(exc, ValidationError):
        return UIError(" ".join(exc.messages), 400)
    raise TypeError(f"not a service error: {exc!r}")


# A page shown again with the error: (request, error, *the view's own arguments).
ErrorPage = Callable[..., HttpResponse]
View = Callable[..., HttpResponse]


def service_errors(page: ErrorPage | None = None, *, redirect_to: str | None = None) -> Callable[[View], View]:
    """Decorate a view: the service errors it lets escape become the UI response (see the module)."""

    def decorate(view: View) -> View:
        def wrapped(request: HttpRequest, /, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                return view(request, *args, **kwargs)
            except UI_ERRORS as exc:
                error = ui_error(exc)
                if page is not None:
                    return page(request, error, *args, **kwargs)
                if error.denied:
                    raise PermissionDenied(error.message) from None
                if redirect_to is None:
                    raise
                messages.error(request, error.message)
                return redirect(reverse(redirect_to, args=args, kwargs=kwargs))

        functools.update_wrapper(wrapped, view)
        return wrapped

    return decorate


class _ServiceForm(Protocol):
    def add_error(self, field: str | None, error: Any) -> None: ...


def form_error(form: _ServiceForm, exc: Exception) -> int:
    """Put a service error on a form and return the status to render it with: field errors beside
    the fields they name (the rest above the form), a refusal or a conflict above the form."""
    if isinstance(exc, ValidationError):
        add_service_errors = getattr(form, "add_service_errors", None)
        if add_service_errors is not None:
            add_service_errors(exc)
        else:
            fields = getattr(form, "fields", {})
            for field, errors in exc.message_dict.items() if hasattr(exc, "error_dict") else [(None, exc.messages)]:
                form.add_error(field if field in fields else None, errors)
        return 400
    error = ui_error(exc)
    form.add_error(None, error.message)
    return error.status
