"""/metrics: what a Prometheus scrape reads from the database, who may scrape, and what it costs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from governor.settings import env_networks
from jobs.models import Alert, AlertKind, JobStatus, Pool, Run, RunStatus, SchedulerLease
from monitoring.incident_listeners import incident_from_alert

TOKEN = "m" * 40
OUTSIDE = "203.0.113.9"


def scrape(client, **extra) -> dict[str, list]:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {family.name: family.samples for family in text_string_to_metric_families(response.content.decode())}


def value(samples, name: str, **labels) -> float | None:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, found
    return found[0] if found else None


def run(job, status, *, ago=0, took=None, n=[0], **fields):  # noqa: B006 - a counter for unique slots
    """A run of ``job`` in ``status``; when ``took`` (seconds), it finished ``ago`` seconds ago."""
    now = timezone.now()
    n[0] += 1
    if took is not None:
        fields.update(started_at=now - timedelta(seconds=ago + took), finished_at=now - timedelta(seconds=ago))
    return Run.objects.create(
        job=job,
        tenant_id=job.tenant_id,
        status=status,
        scheduled_for=now - timedelta(days=30, seconds=n[0]),
        job_version=job.version,
        definition=job.definition(),
        **fields,
    )


@pytest.fixture
def planted(cast):
    now = timezone.now()
    ledger = cast.bulk_job(0, pool="batch", next_fire_at=now - timedelta(seconds=90))  # acme dev
    report = cast.bulk_job(2, next_fire_at=now + timedelta(minutes=5))  # acme prod
    paused = cast.bulk_job(3, status=JobStatus.PAUSED, next_fire_at=now - timedelta(hours=5))  # acme dev
    from jobs.models import Job

    backup = Job.objects.create(
        tenant=cast.globex,
        team=cast.ops,
        environment=cast.globex_prod,
        **cast.definition(name="ops.backup.snapshot"),
    )
    for took in (0.5, 5, 30):
        run(ledger, RunStatus.SUCCEEDED, ago=60, took=took)
    run(ledger, RunStatus.FAILED, ago=120, took=120)
    run(ledger, RunStatus.SUCCEEDED, ago=3 * 86400, took=7)  # outside the window
    run(ledger, RunStatus.RUNNING, started_at=now)
    run(ledger, RunStatus.QUEUED)
    run(paused, RunStatus.QUEUED)  # pool-less job of the same environment
    run(report, RunStatus.QUEUED)
    run(report, RunStatus.QUEUED)
    run(report, RunStatus.DEFERRED)
    run(report, RunStatus.TIMED_OUT, ago=10, took=3600)
    run(backup, RunStatus.QUEUED)
    Pool.objects.create(tenant=cast.acme, environment=cast.dev, name="batch", slots=3)
    Pool.objects.create(tenant=cast.acme, environment=cast.prod, name="idle", slots=5)
    SchedulerLease.objects.create(
        name="scheduler",
        holder="host-a:41:nonce",
        acquired_at=now - timedelta(seconds=30),
        expires_at=now + timedelta(seconds=10),
    )
    Alert.objects.create(tenant=cast.acme, job=ledger, kind=AlertKind.LOST_RUN, message="lost")
    Alert.objects.create(tenant=cast.acme, job=ledger, kind=AlertKind.LOST_RUN, message="lost again")
    Alert.objects.create(tenant=cast.acme, job=report, kind=AlertKind.STUCK_QUEUED, message="stuck")
    Alert.objects.create(tenant=cast.acme, job=report, kind=AlertKind.STUCK_QUEUED, message="over", resolved_at=now)
    # Each open alert becomes its job's incident (two of one job and kind: one incident).
    for alert in Alert.objects.filter(resolved_at__isnull=True).order_by("id"):
        incident_from_alert(alert)
    return ledger, report, backup


def test_runs_by_state_queue_depth_and_finished_window(client, planted):
    families = scrape(client)
    runs = families["governor_runs"]
    assert value(runs, "governor_runs", tenant="acme", environment="dev", state="running") == 1
    assert value(runs, "governor_runs", tenant="acme", environment="dev", state="queued") == 2
    assert value(runs, "governor_runs", tenant="acme", environment="prod", state="queued") == 2
    assert value(runs, "governor_runs", tenant="acme", environment="prod", state="deferred") == 1
    assert value(runs, "governor_runs", tenant="globex", environment="prod", state="queued") == 1
    assert len(runs) == 5
    depth = families["governor_queue_depth"]
    assert value(depth, "governor_queue_depth", tenant="acme") == 4
    assert value(depth, "governor_queue_depth", tenant="globex") == 1
    finished = families["governor_runs_finished"]
    assert value(finished, "governor_runs_finished", tenant="acme", environment="dev", state="succeeded") == 3
    assert value(finished, "governor_runs_finished", tenant="acme", environment="dev", state="failed") == 1
    assert value(finished, "governor_runs_finished", tenant="acme", environment="prod", state="timed_out") == 1
    assert len(finished) == 3  # the run of three days ago is outside the window


def test_duration_histogram_per_job(client, planted):
    ledger, report, _ = planted
    samples = scrape(client)["governor_run_duration_seconds"]
    job = {"tenant": "acme", "environment": "dev", "job": ledger.name}
    buckets = {
        s.labels["le"]: s.value for s in samples if s.name.endswith("_bucket") and s.labels["job"] == ledger.name
    }
    # 0.5 s, 5 s, 30 s and 120 s finished in the window (the 7 s run of three days ago did not).
    assert buckets == {
        "1.0": 1,
        "10.0": 2,
        "60.0": 3,
        "300.0": 4,
        "900.0": 4,
        "3600.0": 4,
        "14400.0": 4,
        "+Inf": 4,
    }
    assert value(samples, "governor_run_duration_seconds_count", **job) == 4
    assert value(samples, "governor_run_duration_seconds_sum", **job) == pytest.approx(155.5, abs=0.01)
    prod = {"tenant": "acme", "environment": "prod", "job": report.name}
    assert value(samples, "governor_run_duration_seconds_bucket", le="900.0", **prod) == 0
    assert value(samples, "governor_run_duration_seconds_bucket", le="3600.0", **prod) == 1
    assert {s.labels["job"] for s in samples} == {ledger.name, report.name}


def test_duration_histogram_keeps_the_busiest_jobs(client, planted, settings):
    ledger, _, _ = planted
    settings.GOVERNOR_METRICS_MAX_JOBS = 1
    samples = scrape(client)["governor_run_duration_seconds"]
    assert {s.labels["job"] for s in samples} == {ledger.name}


def test_scheduler_lag_lease_pools_and_open_incidents(client, planted):
    families = scrape(client)
    # The paused job's older due time does not count; the enabled one is 90 s late.
    lag = value(families["governor_scheduler_lag_seconds"], "governor_scheduler_lag_seconds")
    assert 90 <= lag < 100
    age = value(families["governor_scheduler_lease_age_seconds"], "governor_scheduler_lease_age_seconds")
    assert 30 <= age < 40
    lease = families["governor_scheduler_lease_valid"]
    assert value(lease, "governor_scheduler_lease_valid", holder="host-a:41:nonce") == 1
    pools = families["governor_pool_active_runs"] + families["governor_pool_slots"]
    batch = {"tenant": "acme", "environment": "dev", "pool": "batch"}
    idle = {"tenant": "acme", "environment": "prod", "pool": "idle"}
    assert value(pools, "governor_pool_active_runs", **batch) == 2  # running + queued of the ledger job
    assert value(pools, "governor_pool_slots", **batch) == 3
    assert value(pools, "governor_pool_active_runs", **idle) == 0
    assert value(pools, "governor_pool_slots", **idle) == 5
    incidents = families["governor_open_incidents"]

    def open_incidents(**labels) -> float:
        return sum(s.value for s in incidents if all(s.labels[k] == v for k, v in labels.items()))

    assert open_incidents(tenant="acme", environment="dev", kind="lost_run") == 1
    assert open_incidents(tenant="acme", environment="prod", kind="stuck_queued") == 1
    assert len(incidents) == 2


def test_nothing_due_and_an_expired_lease(client, cast):
    now = timezone.now()
    cast.bulk_job(0, next_fire_at=now + timedelta(seconds=30))
    SchedulerLease.objects.create(
        name="scheduler", holder="gone:1:x", acquired_at=now - timedelta(minutes=10), expires_at=now - timedelta(1)
    )
    families = scrape(client)
    assert value(families["governor_scheduler_lag_seconds"], "governor_scheduler_lag_seconds") == 0
    assert value(families["governor_scheduler_lease_valid"], "governor_scheduler_lease_valid", holder="gone:1:x") == 0
    assert families["governor_runs"] == [] and families["governor_open_incidents"] == []


def test_query_count_does_not_grow_with_jobs_and_runs(client, cast):
    def plant(start: int, count: int) -> None:
        for i in range(start, start + count):
            job = cast.bulk_job(i, pool="batch", next_fire_at=timezone.now() - timedelta(seconds=5))
            run(job, RunStatus.SUCCEEDED, ago=10, took=i % 50)
            run(job, RunStatus.QUEUED)
            Alert.objects.create(tenant=cast.acme, job=job, kind=AlertKind.LOST_RUN, message="lost")
        for env in (cast.dev, cast.staging, cast.prod):
            Pool.objects.get_or_create(tenant=cast.acme, environment=env, name="batch", defaults={"slots": 4})

    def queries() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as captured:
            samples = scrape(client)["governor_run_duration_seconds"]
        return len(captured), len({s.labels["job"] for s in samples})

    plant(0, 10)
    few, jobs = queries()
    assert jobs == 10
    plant(10, 190)
    many, jobs = queries()
    assert jobs == 200
    assert many == few == 13


# --- who may scrape -------------------------------------------------------------------------------


@pytest.fixture
def token(settings):
    settings.GOVERNOR_METRICS_TOKEN = TOKEN
    return TOKEN


@pytest.mark.django_db
def test_outside_the_allow_list_without_credentials_is_401(client):
    response = client.get("/metrics", REMOTE_ADDR=OUTSIDE)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"governor_" not in response.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header",
    [f"Bearer {'x' * 40}", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Token {TOKEN}", "Bearer ", "Basic abc"],
)
def test_a_wrong_token_is_403_even_from_loopback(client, token, header):
    for address in (OUTSIDE, "127.0.0.1"):
        response = client.get("/metrics", REMOTE_ADDR=address, HTTP_AUTHORIZATION=header)
        assert response.status_code == 403, (address, header)
        assert b"governor_" not in response.content


@pytest.mark.django_db
def test_no_token_configured_means_no_token_works(client, settings):
    settings.GOVERNOR_METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION="Bearer ").status_code == 403


@pytest.mark.django_db
def test_the_token_opens_metrics_from_anywhere(client, token):
    scrape(client, REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.mark.django_db
def test_the_allow_list(client, settings):
    assert scrape(client, REMOTE_ADDR="::1")
    assert scrape(client, REMOTE_ADDR="::ffff:127.0.0.1")
    settings.GOVERNOR_METRICS_ALLOW = env_networks("X", ["10.0.0.0/8"])
    assert scrape(client, REMOTE_ADDR="10.20.30.40")
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401
    assert client.get("/metrics", REMOTE_ADDR="11.0.0.1").status_code == 401
    settings.GOVERNOR_METRICS_ALLOW = []
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401


@pytest.mark.django_db
def test_only_get(client):
    assert client.post("/metrics").status_code == 405


def test_allow_list_setting_refuses_what_is_not_a_cidr(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.setenv("GOVERNOR_METRICS_ALLOW", "10.0.0.0/8, prometheus.internal")
    with pytest.raises(ImproperlyConfigured, match="prometheus.internal"):
        env_networks("GOVERNOR_METRICS_ALLOW", [])
