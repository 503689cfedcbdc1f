"""Monitoring pages: incidents, alert rules, on-call."""

urlpatterns: list = []
