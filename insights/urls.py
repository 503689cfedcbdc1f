"""Insights pages (/insights/...)."""

from django.urls import path

from . import review_views

urlpatterns: list = [
    # The review pages (right-sizing, zombie jobs, overhead): insights/review_views.py.
    path("rightsizing/", review_views.rightsizing_page, name="insights_rightsizing"),
    path("rightsizing/<int:pk>/propose/", review_views.rightsizing_propose, name="insights_rightsizing_propose"),
    path("zombies/", review_views.zombies_page, name="insights_zombies"),
    path("overhead/", review_views.overhead_page, name="insights_overhead"),
]
