"""Monitoring pages: incidents, alert rules, on-call."""

from django.urls import path

from . import views

urlpatterns = [
    path("alert-rules/", views.alert_rule_list, name="alert_rule_list"),
]
