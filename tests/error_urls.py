"""The real URL map plus one view that fails, for the server error page test."""

from django.urls import path

from governor.urls import urlpatterns as governor_urlpatterns


def fail(request):
    raise RuntimeError("a bug in a view")


urlpatterns = [path("test-only/fail/", fail), *governor_urlpatterns]
