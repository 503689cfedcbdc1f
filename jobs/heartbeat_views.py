"""The heartbeat endpoints: ``/hb/<token>``, ``/hb/<token>/start``, ``/hb/<token>/fail``,
``/hb/<token>/<exit code>`` (jobs.heartbeats applies the ping)."""

from __future__ import annotations

from django.http import HttpResponse, HttpResponseNotAllowed
from django.views.decorators.csrf import csrf_exempt

from .heartbeats import PingKind, record_ping
from .models import Job, JobStatus


def _ping(request, token, kind: str, exit_code: int | None = None):
    if request.method not in ("GET", "POST", "HEAD"):
        return HttpResponseNotAllowed(["GET", "POST", "HEAD"])
    job = Job.objects.filter(ping_token=token).exclude(status=JobStatus.DELETED).first()
    if job is None:
        return HttpResponse("not found\n", status=404, content_type="text/plain")
    body = request.body[:65536].decode("utf-8", errors="replace") if request.method == "POST" else ""
    run = record_ping(job, kind, exit_code, body)
    if run is None:
        return HttpResponse("no running run to ping\n", status=409, content_type="text/plain")
    return HttpResponse("OK\n", content_type="text/plain")


@csrf_exempt
def ping_success(request, token):
    return _ping(request, token, PingKind.SUCCESS)


@csrf_exempt
def ping_start(request, token):
    return _ping(request, token, PingKind.START)


@csrf_exempt
def ping_fail(request, token):
    return _ping(request, token, PingKind.FAIL)


@csrf_exempt
def ping_exit_code(request, token, exit_code: int):
    if not 0 <= exit_code <= 255:
        return HttpResponse("exit code must be 0..255\n", status=400, content_type="text/plain")
    return _ping(request, token, PingKind.SUCCESS if exit_code == 0 else PingKind.FAIL, exit_code)
