"""``/metrics``: Governor's state in the Prometheus text format, read from the database at scrape time.

Nothing is counted in the process: a scrape runs a fixed number of aggregate queries (13, whatever
the number of jobs or runs), so every web process answers the same and a restart loses nothing. Label
sets stay bounded: tenant and environment slugs, run states, pool names, and for the duration histogram
only the ``GOVERNOR_METRICS_MAX_JOBS`` jobs with the most runs finished in the window.

Who may scrape: a client whose address is in ``GOVERNOR_METRICS_ALLOW`` (CIDRs, loopback by default),
or one presenting ``Authorization: Bearer <GOVERNOR_METRICS_TOKEN>``. A wrong token is refused even
from an allowed address; no credentials from elsewhere is a 401, anything else a 403.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import BooleanField, Count, Min, OuterRef, Subquery
from django.db.models.expressions import RawSQL
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from governance.dbtime import Seconds
from governance.models import Environment
from jobs.models import Job, JobStatus, Pool, Run, RunStatus, SchedulerLease
from monitoring.models import Incident
from monitoring.models.incidents import OPEN_STATES
from notifications.models import DeliveryAttempt, Notification, NotificationState

# Upper bounds (seconds) of the run duration histogram; +Inf is added.
DURATION_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
# Runs that still hold or wait for a place; every other state is an outcome.
UNFINISHED = (RunStatus.SCHEDULED, RunStatus.QUEUED, RunStatus.DEFERRED, RunStatus.RUNNING)
POOL_BUSY = (RunStatus.QUEUED, RunStatus.RUNNING)  # as jobs/pools.py counts a pool's slots
# Looked up per run by primary key: a join lets SQLite drive the query from the jobs table and
# visit every run of every job, where the run indexes find the few runs wanted.
ENVIRONMENT_OF_RUN = Subquery(Job.objects.filter(pk=OuterRef("job_id")).values("environment_id").order_by()[:1])
POOL_OF_RUN = Subquery(Job.objects.filter(pk=OuterRef("job_id")).values("pool").order_by()[:1])


def status_in(statuses) -> RawSQL:
    """``status IN (...)`` with the states written into the SQL. SQLite uses a partial index (such
    as ``run_unfinished`` or ``run_active``) only when it can see the values its condition names:
    with bound parameters it scans the whole run table (150 ms at a million runs). The states are
    Governor's own constants, never user input."""
    values = ", ".join(f"'{RunStatus(status).value}'" for status in statuses)
    return RawSQL(f'"{Run._meta.db_table}"."status" IN ({values})', (), output_field=BooleanField())  # noqa: S611


def _seconds(value: timedelta | None) -> float:
    return value.total_seconds() if value is not None else 0.0


class GovernorCollector(Collector):
    """One scrape: every family computed from the database now."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        since = now - timedelta(seconds=settings.GOVERNOR_METRICS_WINDOW_SECONDS)
        # Run queries group by ids, joining jobs only; the few environments give the labels.
        self.places = {
            env_id: (tenant, slug)
            for env_id, tenant, slug in Environment.objects.values_list("id", "tenant__slug", "slug").order_by()
        }
        yield from self._runs(since)
        yield self._durations(since)
        yield from self._scheduler(now)
        yield from self._pools()
        yield self._incidents()
        yield from self._notifications(now, since)

    def _by_place(self, rows) -> list[tuple[str, str, str, int]]:
        """(environment id, label, n) rows as sorted (tenant, environment, label, n)."""
        return sorted((*self.places.get(env_id, ("", "")), label, n) for env_id, label, n in rows)

    def _runs(self, since) -> Iterator[Metric]:
        unfinished = GaugeMetricFamily(
            "governor_runs",
            "Runs now scheduled, queued, deferred or running, per tenant, environment and state.",
            labels=["tenant", "environment", "state"],
        )
        queue = GaugeMetricFamily("governor_queue_depth", "Runs queued for a worker, per tenant.", labels=["tenant"])
        depth: dict[str, int] = defaultdict(int)
        rows = (
            Run.objects.filter(status_in(UNFINISHED))
            .annotate(environment_id=ENVIRONMENT_OF_RUN)
            .values_list("environment_id", "status")
            .annotate(n=Count("id"))
            .order_by()
        )
        for tenant, environment, state, n in self._by_place(rows):
            unfinished.add_metric([tenant, environment, state], n)
            if state == RunStatus.QUEUED:
                depth[tenant] += n
        for tenant in sorted(depth):
            queue.add_metric([tenant], depth[tenant])
        yield unfinished
        yield queue

        finished = GaugeMetricFamily(
            "governor_runs_finished",
            f"Runs that finished in the last {settings.GOVERNOR_METRICS_WINDOW_SECONDS} s, per tenant, "
            "environment and final state.",
            labels=["tenant", "environment", "state"],
        )
        rows = (
            Run.objects.filter(finished_at__gte=since)
            .exclude(status__in=UNFINISHED)
            .annotate(environment_id=ENVIRONMENT_OF_RUN)
            .values_list("environment_id", "status")
            .annotate(n=Count("id"))
            .order_by()
        )
        for tenant, environment, state, n in self._by_place(rows):
            finished.add_metric([tenant, environment, state], n)
        yield finished

    def _durations(self, since) -> Metric:
        """One query: each finished run's duration computed once (a materialised CTE: SQLite would
        otherwise recompute it for every bucket), the busiest jobs picked in SQL, and one row per
        (kept job, bucket) returned; the cumulative bucket counts are summed here."""
        family = HistogramMetricFamily(
            "governor_run_duration_seconds",
            f"Duration (start to finish) of the runs that finished in the last "
            f"{settings.GOVERNOR_METRICS_WINDOW_SECONDS} s, per job.",
            labels=["tenant", "environment", "job"],
        )
        durations = (
            Run.objects.filter(finished_at__gte=since, started_at__isnull=False)
            .exclude(status__in=UNFINISHED)
            .annotate(seconds=Seconds("finished_at", "started_at"))
            .values_list("job_id", "seconds")
            .order_by()
        )
        inner, params = durations.query.sql_with_params()
        bucket = " ".join(f"WHEN d.seconds <= {float(bound)!r} THEN {i}" for i, bound in enumerate(DURATION_BUCKETS))
        # Only constants and Django's own compiled SQL are formatted in; the values are parameters.
        sql = (
            f"WITH d(job_id, seconds) AS MATERIALIZED ({inner}), "  # noqa: S608
            "top(job_id, n) AS (SELECT job_id, COUNT(*) FROM d GROUP BY job_id ORDER BY 2 DESC, 1 LIMIT %s) "
            f"SELECT d.job_id, CASE {bucket} ELSE {len(DURATION_BUCKETS)} END, COUNT(*), SUM(d.seconds) "
            "FROM d INNER JOIN top ON top.job_id = d.job_id GROUP BY 1, 2"
        )
        per_job: dict[int, tuple[list[int], list[float]]] = {}
        with connection.cursor() as cursor:
            cursor.execute(sql, (*params, settings.GOVERNOR_METRICS_MAX_JOBS))
            for job_id, index, n, total in cursor.fetchall():
                counts, sums = per_job.setdefault(job_id, ([0] * (len(DURATION_BUCKETS) + 1), [0.0]))
                counts[index] += n
                sums[0] += total or 0.0
        jobs = {
            pk: (*self.places.get(env_id, ("", "")), name)
            for pk, env_id, name in Job.objects.filter(pk__in=list(per_job))
            .values_list("pk", "environment_id", "name")
            .order_by()
        }
        bounds = [str(bound) for bound in DURATION_BUCKETS]
        for job_id in sorted(per_job, key=lambda pk: jobs.get(pk, ("", "", ""))):
            counts, sums = per_job[job_id]
            cumulative, running = [], 0
            for bound, n in zip(bounds, counts, strict=False):
                running += n
                cumulative.append((bound, running))
            labels = list(jobs.get(job_id, ("", "", "")))
            family.add_metric(labels, [*cumulative, ("+Inf", sum(counts))], sums[0])
        return family

    def _scheduler(self, now) -> Iterator[Metric]:
        oldest = Job.objects.filter(status=JobStatus.ENABLED, next_fire_at__lte=now).aggregate(
            oldest=Min("next_fire_at")
        )["oldest"]
        yield GaugeMetricFamily(
            "governor_scheduler_lag_seconds",
            "Now minus the oldest due next fire time of an enabled job (0 when none is due).",
            value=_seconds(now - oldest) if oldest else 0.0,
        )
        age = GaugeMetricFamily(
            "governor_scheduler_lease_age_seconds",
            "How long the scheduler lease holder has held it.",
            labels=["holder"],
        )
        live = GaugeMetricFamily(
            "governor_scheduler_lease_valid",
            "1 when the scheduler lease has not expired, 0 when its holder stopped renewing it.",
            labels=["holder"],
        )
        for holder, acquired_at, expires_at in SchedulerLease.objects.values_list(
            "holder", "acquired_at", "expires_at"
        ).order_by("name"):
            age.add_metric([holder], _seconds(now - acquired_at))
            live.add_metric([holder], 1.0 if expires_at > now else 0.0)
        yield age
        yield live

    def _pools(self) -> Iterator[Metric]:
        slots = GaugeMetricFamily(
            "governor_pool_slots", "Slots of each pool.", labels=["tenant", "environment", "pool"]
        )
        active = GaugeMetricFamily(
            "governor_pool_active_runs",
            "Queued and running runs holding a slot of each pool.",
            labels=["tenant", "environment", "pool"],
        )
        busy = {
            (env_id, name): n
            for env_id, name, n in Run.objects.filter(status_in(POOL_BUSY), partition="")
            .annotate(environment_id=ENVIRONMENT_OF_RUN, pool=POOL_OF_RUN)
            .exclude(pool="")
            .values_list("environment_id", "pool")
            .annotate(n=Count("id"))
            .order_by()
        }
        for pool in Pool.objects.values("tenant__slug", "environment_id", "environment__slug", "name", "slots"):
            labels = [pool["tenant__slug"], pool["environment__slug"], pool["name"]]
            slots.add_metric(labels, pool["slots"])
            active.add_metric(labels, busy.get((pool["environment_id"], pool["name"]), 0))
        yield slots
        yield active

    def _incidents(self) -> Metric:
        family = GaugeMetricFamily(
            "governor_open_incidents",
            "Triggered or acknowledged incidents, per tenant, environment, kind and severity.",
            labels=["tenant", "environment", "kind", "severity"],
        )
        rows = (
            Incident.objects.filter(state__in=OPEN_STATES)
            .values_list("tenant__slug", "environment__slug", "kind", "severity")
            .annotate(n=Count("id"))
            .order_by("tenant__slug", "environment__slug", "kind", "severity")
        )
        for tenant, environment, kind, severity, n in rows:
            family.add_metric([tenant, environment or "", kind, severity], n)
        return family

    def _notifications(self, now, since) -> Iterator[Metric]:
        """The outbox: what waits, how long the oldest has waited, and what failed for good or on a try."""
        pending = GaugeMetricFamily(
            "governor_notifications_pending",
            "Notifications waiting in the outbox (due or backing off), per tenant.",
            labels=["tenant"],
        )
        oldest = GaugeMetricFamily(
            "governor_notification_outbox_oldest_seconds",
            "Age of the oldest notification still waiting, per tenant.",
            labels=["tenant"],
        )
        waiting = (
            Notification.objects.filter(state=NotificationState.PENDING)
            .values_list("tenant__slug")
            .annotate(n=Count("id"), first=Min("created_at"))
            .order_by("tenant__slug")
        )
        for tenant, n, first in waiting:
            pending.add_metric([tenant], n)
            oldest.add_metric([tenant], max(0.0, _seconds(now - first)))
        yield pending
        yield oldest
        failures = GaugeMetricFamily(
            "governor_notification_failures",
            f"Notifications given up on (every retry failed, or undeliverable) in the last "
            f"{settings.GOVERNOR_METRICS_WINDOW_SECONDS} s, per tenant and channel kind (email for people).",
            labels=["tenant", "kind"],
        )
        failed = (
            Notification.objects.filter(state=NotificationState.FAILED, failed_at__gte=since)
            .values_list("tenant__slug", "channel__kind")
            .annotate(n=Count("id"))
            .order_by("tenant__slug", "channel__kind")
        )
        for tenant, kind, n in failed:
            failures.add_metric([tenant, kind or "email"], n)
        yield failures
        errors = GaugeMetricFamily(
            "governor_notification_delivery_errors",
            f"Delivery attempts that failed (and may be retried) in the last "
            f"{settings.GOVERNOR_METRICS_WINDOW_SECONDS} s, per tenant.",
            labels=["tenant"],
        )
        tries = (
            DeliveryAttempt.objects.filter(at__gte=since, ok=False)
            .values_list("notification__tenant__slug")
            .annotate(n=Count("id"))
            .order_by("notification__tenant__slug")
        )
        for tenant, n in tries:
            errors.add_metric([tenant], n)
        yield errors


def exposition() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GovernorCollector())
    return generate_latest(registry)


def _bearer(request: HttpRequest) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header:
        return None
    scheme, _, credentials = header.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def _allowed_address(request: HttpRequest) -> bool:
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in settings.GOVERNOR_METRICS_ALLOW)


def refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the client may scrape; else the 401 (no credentials) or 403 to answer."""
    presented = _bearer(request)
    expected = settings.GOVERNOR_METRICS_TOKEN
    if presented is not None:
        if expected and presented and hmac.compare_digest(presented.encode(), expected.encode()):
            return None
        return HttpResponse("Invalid metrics token.\n", status=403, content_type="text/plain")
    if _allowed_address(request):
        return None
    response = HttpResponse("Metrics need a bearer token or an allowed address.\n", status=401)
    response["Content-Type"] = "text/plain"
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    refused = refusal(request)
    if refused is not None:
        return refused
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
