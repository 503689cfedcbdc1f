"""Insights pages (/insights/...)."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="insights_index"),
    path("capacity/", views.capacity_page, name="insights_capacity"),
    path("herds/", views.herds_page, name="insights_herds"),
    path("herds/propose/", views.herds_propose, name="insights_herds_propose"),
    path("refresh/", views.refresh, name="insights_refresh"),
]
