"""Insights pages (/insights/...)."""

from django.urls import path

from . import review_views, views

urlpatterns = [
    path("", views.index, name="insights_index"),
    path("capacity/", views.capacity_page, name="insights_capacity"),
    path("herds/", views.herds_page, name="insights_herds"),
    path("herds/propose/", views.herds_propose, name="insights_herds_propose"),
    path("refresh/", views.refresh, name="insights_refresh"),
    # The review pages (right-sizing, zombie jobs, overhead): insights/review_views.py.
    path("rightsizing/", review_views.rightsizing_page, name="insights_rightsizing"),
    path("rightsizing/<int:pk>/propose/", review_views.rightsizing_propose, name="insights_rightsizing_propose"),
    path("zombies/", review_views.zombies_page, name="insights_zombies"),
    path("overhead/", review_views.overhead_page, name="insights_overhead"),
]
