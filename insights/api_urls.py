"""Insights API (/api/v1/insights/...)."""

from django.urls import path

from .api import CapacityView, HerdsView

urlpatterns = [
    path("capacity/", CapacityView.as_view(), name="api-insights-capacity"),
    path("herds/", HerdsView.as_view(), name="api-insights-herds"),
]
