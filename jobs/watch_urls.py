"""Routes of the pages for watching jobs (issue 17), included by the browser UI's URLconf."""

from django.urls import path

from . import views, watch_views

urlpatterns = [
    path("runs/", watch_views.run_list, name="run_list"),
    path("now/", watch_views.now_page, name="now"),
    path("now/panel/", watch_views.now_fragment, {"variant": "panel"}, name="now_panel"),
    path("now/board/", watch_views.now_fragment, {"variant": "board"}, name="now_board"),
    path("jobs/<int:pk>/live/", views.job_live, name="job_live"),
    path("runs/<int:pk>/live/", views.run_live, name="run_live"),
]
