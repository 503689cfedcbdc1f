"""Monitoring API (/api/v1/incidents/, /api/v1/alert-rules/, ...)."""

from rest_framework.routers import DefaultRouter

router = DefaultRouter()
urlpatterns: list = []
