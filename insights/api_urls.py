"""Insights API (/api/v1/insights/...)."""

urlpatterns: list = []
