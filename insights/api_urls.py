"""Insights API (/api/v1/insights/...)."""

from django.urls import path

from . import review_api
from .api import CapacityView, HerdsView

urlpatterns = [
    path("capacity/", CapacityView.as_view(), name="api-insights-capacity"),
    path("herds/", HerdsView.as_view(), name="api-insights-herds"),
    # The review pages' data (insights/review_api.py).
    path("rightsizing/", review_api.RightsizingView.as_view(), name="api-insights-rightsizing"),
    path(
        "rightsizing/<int:pk>/propose/",
        review_api.RightsizingProposeView.as_view(),
        name="api-insights-rightsizing-propose",
    ),
    path("zombies/", review_api.ZombiesView.as_view(), name="api-insights-zombies"),
    path("overhead/", review_api.OverheadView.as_view(), name="api-insights-overhead"),
]
