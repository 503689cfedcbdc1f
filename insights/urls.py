"""Insights pages (/insights/...)."""

urlpatterns: list = []
