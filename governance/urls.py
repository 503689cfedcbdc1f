"""URL map: the browser UI at /, the REST API at /api/, the Django admin at /admin/."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("governance.api_urls")),
    path("", include("governance.ui_urls")),
]
