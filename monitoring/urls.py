"""Monitoring pages: incidents, the team page (who is on call) and the alert rules."""

from django.urls import path

from . import rule_views, views

urlpatterns = [
    path("incidents/", views.incident_list, name="incident_list"),
    path("incidents/<int:pk>/", views.incident_detail, name="incident_detail"),
    path("incidents/<int:pk>/acknowledge/", views.incident_acknowledge, name="incident_acknowledge"),
    path("incidents/<int:pk>/resolve/", views.incident_resolve, name="incident_resolve"),
    path("teams/<int:pk>/", views.team_detail, name="team_detail"),
    path("alert-rules/", rule_views.alert_rule_list, name="alert_rule_list"),
]
