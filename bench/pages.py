"""Page server times and query counts with 10,000 jobs, 1,000,000 runs and 1,000,000 audit events
(issues 17 and 20), on SQLite (the embedded default) and on PostgreSQL, plus the audit export's rate
and memory on PostgreSQL.

Each backend is measured in a child process of its own (``python -m bench.pages --child``): the
SQLite one on var/bench/pages.sqlite3, the PostgreSQL one under scripts/with-postgres.sh (a
throwaway server on a free loopback port). The rows are planted with one ``INSERT ... SELECT`` over
a generated series per table, not the ORM per row. Every page is requested through Django's test
client, signed in as the tenant admin (who sees every row; a few as a viewer narrowed to one team,
``dashboard_team`` as ``bench-team``, an author and approver of one team): two warm-up requests, then
BENCH_PAGES_REQUESTS (20) timed ones; the query count of one more.

Environment: BENCH_PAGES_BACKENDS (``sqlite,pg``), BENCH_PAGES_RUNS and BENCH_PAGES_EVENTS
(1,000,000 each), BENCH_PAGES_REUSE=1 keeps and reuses the SQLite file (and a PostgreSQL database
named by BENCH_PAGES_PG_URL) when it already holds the rows, BENCH_PAGES_ONLY (comma-separated page
names) measures only those pages.
"""

from __future__ import annotations

import gc
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

TITLE = "Pages (issues 17 and 20)"

ROOT = Path(__file__).resolve().parent.parent
JOBS = 10_000
RUNS = int(os.environ.get("BENCH_PAGES_RUNS", "1000000"))
EVENTS = int(os.environ.get("BENCH_PAGES_EVENTS", "1000000"))
REQUESTS = int(os.environ.get("BENCH_PAGES_REQUESTS", "20"))
DAYS = 30
TARGET_MS = 100
TENANT = "bench-pages"
# A team with a handful of jobs (the sparse team filter) and a viewer narrowed to one of the three
# large teams (a third of the jobs): runs lists filtered through the job (issues 17 and 20).
SMALL_TEAM = "bench-small"
SMALL_JOBS = 5
TEAM_VIEWER = "bench-team-viewer"


# ---------------------------------------------------------------------------------------------
# The parent: one child per backend, its figures into the report.


def run(report) -> None:
    backends = [b.strip() for b in os.environ.get("BENCH_PAGES_BACKENDS", "sqlite,pg").split(",") if b.strip()]
    for backend in backends:
        figures = _child(backend)
        for key, value, unit, target, note in figures:
            report.figure(key, value, unit, target=target, note=note)


def _child(backend: str) -> list:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    argv = [sys.executable, "-m", "bench.pages", "--child", backend]
    if backend == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{ROOT / 'var' / 'bench' / 'pages.sqlite3'}"
    elif env.get("BENCH_PAGES_PG_URL"):
        env["DATABASE_URL"] = env["BENCH_PAGES_PG_URL"]
    else:
        argv = ["bash", str(ROOT / "scripts" / "with-postgres.sh"), *argv]
    out = ROOT / "var" / "bench" / f"pages-{backend}.json"
    out.unlink(missing_ok=True)
    env["BENCH_PAGES_OUT"] = str(out)
    subprocess.run(argv, cwd=ROOT, env=env, check=True)
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------------------------
# The child: plant the rows, then measure.


def _setup(backend: str) -> None:
    if backend == "sqlite" and not os.environ.get("BENCH_PAGES_REUSE"):
        db = ROOT / "var" / "bench" / "pages.sqlite3"
        db.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governor.settings")
    sys.path.insert(0, str(ROOT))
    import logging

    import django
    from django.core.management import call_command

    django.setup()
    logging.getLogger("django.request").setLevel(logging.ERROR)
    logging.getLogger("governance").setLevel(logging.WARNING)
    call_command("migrate", verbosity=0)


def _series_sql(vendor: str, count: int, columns: list[str], exprs: list[str], table: str) -> str:
    # Built from model metadata and integers only (no input): the planted rows of one table.
    cols = ", ".join(columns)
    select = ", ".join(exprs)
    if vendor == "postgresql":
        return f"INSERT INTO {table} ({cols}) SELECT {select} FROM generate_series(0::bigint, {count - 1}) AS s(i)"  # noqa: S608
    return (
        f"WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {count - 1}) "  # noqa: S608
        f"INSERT INTO {table} ({cols}) SELECT {select} FROM s"
    )


def _insert_series(model, count: int, template, varying: dict[str, tuple[str, list]]) -> None:
    """Insert ``count`` rows of ``model`` in one statement: the columns in ``varying`` from an SQL
    expression of the series index ``i`` (with its parameters), every other column as in ``template``."""
    from django.db import connection

    columns, exprs, params = [], [], []
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(connection.ops.quote_name(field.column))
        if field.column in varying:
            expr, expr_params = varying[field.column]
            exprs.append(re.sub(r"%(?!s)", "%%", expr))  # the modulo operator, not a placeholder
            params += expr_params
        else:
            exprs.append("%s")
            params.append(field.get_db_prep_save(getattr(template, field.attname), connection))
    sql = _series_sql(connection.vendor, count, columns, exprs, connection.ops.quote_name(model._meta.db_table))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _ago(seconds_expr: str, now: datetime) -> tuple[str, list]:
    """An SQL timestamp ``seconds_expr`` seconds before ``now`` (UTC)."""
    from django.db import connection

    if connection.vendor == "postgresql":
        return f"(%s::timestamptz - ({seconds_expr}) * interval '1 second')", [now]
    return f"datetime(%s, '-' || ({seconds_expr}) || ' seconds')", [now.strftime("%Y-%m-%d %H:%M:%S")]


def _case_null(condition: str, expr: tuple[str, list]) -> tuple[str, list]:
    return f"CASE WHEN {condition} THEN NULL ELSE {expr[0]} END", expr[1]


def _populate() -> dict:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from approvals.models import ChangeRequest, ChangeStatus
    from governance.actors import SYSTEM
    from governance.models import AuditAction, AuditChain, AuditEvent, Environment, Role, Team, Tenant
    from governance.services import grant_role
    from jobs.models import Job, Run, RunStatus

    existing = Tenant.objects.filter(slug=TENANT).first()
    if existing is not None:
        _plant_small_team(existing)
        return _facts(existing)
    started = time.perf_counter()
    now = timezone.now().replace(microsecond=0)
    tenant = Tenant.objects.create(slug=TENANT, name="Bench pages")
    teams = [Team.objects.create(tenant=tenant, slug=slug, name=slug) for slug in ("payments", "data", "ops")]
    envs = [
        Environment.objects.create(tenant=tenant, slug=slug, name=slug, order=i, required_approvals=min(i, 2))
        for i, slug in enumerate(("dev", "staging", "prod"))
    ]
    admin = get_user_model().objects.create_user("bench-admin", password="x")
    grant_role(admin, Role.TENANT_ADMIN, tenant=tenant, actor=SYSTEM)
    jobs = Job.objects.bulk_create(
        [
            Job(
                tenant=tenant,
                team=teams[i % 3],
                environment=envs[i % 3],
                name=f"{teams[i % 3].slug}.bench.job-{i:05d}",
                description="A bench job with a description of ordinary length, for the pages.",
                runbook="Re-run it; if it fails twice, page the on-call.",
                command=["/bin/echo", "hello"],
                cron="*/5 * * * *",
                next_fire_at=now + timedelta(seconds=i % 300),
                review_due_on=(now - timedelta(days=3)).date() if i % 500 == 0 else None,
            )
            for i in range(JOBS)
        ],
        batch_size=2000,
    )
    first = min(j.pk for j in jobs)
    assert max(j.pk for j in jobs) - first + 1 == JOBS, "job ids are not contiguous"
    definition = jobs[0].definition()
    # Runs: one every DAYS/RUNS, newest first, round-robin over the jobs; the newest 40 are active.
    step_ms = DAYS * 86400 * 1000 // max(RUNS, 1)
    back = f"(i * {step_ms} / 1000 + 60)"
    active = "i < 40"
    template = Run(
        job_id=first,
        tenant=tenant,
        scheduled_for=now,
        job_version=1,
        definition=definition,
        output="starting\nreconciled 1204 rows\ndone\n",
        output_bytes=38,
        worker="bench:1",
    )
    _insert_series(
        Run,
        RUNS,
        template,
        {
            "job_id": (f"({first} + i % {JOBS})", []),
            "scheduled_for": _ago(back, now),
            "created_at": _ago(back, now),
            "queued_at": _ago(back, now),
            "started_at": _case_null("i % 80 = 1", _ago(f"{back} - 1", now)),
            "finished_at": _case_null(active, _ago(f"{back} - 2 - i % 50", now)),
            "status": (
                f"CASE WHEN {active} AND i % 2 = 1 THEN 'running' WHEN {active} THEN 'queued' "
                "WHEN i % 20 = 7 THEN 'failed' WHEN i % 97 = 3 THEN 'timed_out' ELSE 'succeeded' END",
                [],
            ),
            "exit_code": (f"CASE WHEN {active} THEN NULL WHEN i % 20 = 7 THEN 1 ELSE 0 END", []),
            "trigger": ("CASE WHEN i % 50 = 5 THEN 'manual' ELSE 'schedule' END", []),
        },
    )
    # Fix the active ones up: running has started, queued has not.
    Run.objects.filter(tenant=tenant, status=RunStatus.QUEUED).update(started_at=None)
    # Audit events: one every DAYS/EVENTS, about the jobs; seq rises with time.
    step_ms = DAYS * 86400 * 1000 // max(EVENTS, 1)
    actions = [
        AuditAction.RUN_TRIGGERED,
        AuditAction.CHANGE_CREATED,
        AuditAction.CHANGE_APPROVED,
        AuditAction.CHANGE_APPLIED,
        AuditAction.JOB_PAUSED,
        AuditAction.LOGIN,
        AuditAction.RUN_CANCELLED,
        AuditAction.CHANGE_SUBMITTED,
    ]
    action_case = "CASE i % 8 " + " ".join(f"WHEN {k} THEN '{a.value}'" for k, a in enumerate(actions)) + " END"
    ev_template = AuditEvent(
        tenant=tenant,
        seq=1,
        created_at=now,
        actor=admin,
        actor_repr="bench-admin",
        action=AuditAction.RUN_TRIGGERED,
        object_type="jobs.job",
        object_id="1",
        object_repr="payments.bench.job",
        data={"reason": "bench"},
        prev_hash="0" * 64,
        hash="f" * 64,
    )
    base_seq = AuditEvent.objects.filter(tenant=tenant).order_by("-seq").values_list("seq", flat=True).first() or 0
    _insert_series(
        AuditEvent,
        EVENTS,
        ev_template,
        {
            "seq": (f"({base_seq + EVENTS} - i)", []),
            "created_at": _ago(f"(i * {step_ms} / 1000 + 30)", now),
            "action": (action_case, []),
            "object_id": (f"CAST(({first} + i % {JOBS}) AS TEXT)", []),
            "team_id": (f"CASE WHEN i % 3 = 0 THEN {teams[0].pk} WHEN i % 3 = 1 THEN {teams[1].pk} ELSE NULL END", []),
            "environment_id": (f"CASE WHEN i % 2 = 0 THEN {envs[2].pk} ELSE NULL END", []),
        },
    )
    chain, _ = AuditChain.objects.get_or_create(tenant=tenant)
    AuditChain.objects.filter(pk=chain.pk).update(
        last_seq=AuditEvent.objects.filter(tenant=tenant).order_by("-seq").values_list("seq", flat=True).first(),
        last_hash="f" * 64,
    )
    ChangeRequest.objects.bulk_create(
        [
            ChangeRequest(
                tenant=tenant,
                team=teams[i % 3],
                environment=envs[2],
                action="update",
                job_id=first + i,
                proposed={**definition, "timeout_seconds": 100 + i},
                author=admin,
                justification=f"bench {i}",
                status=[ChangeStatus.SUBMITTED, ChangeStatus.APPLIED, ChangeStatus.REJECTED][i % 3],
                required_approvals=2,
                rejection_reason="Not in this quarter." if i % 3 == 2 else "",
            )
            for i in range(2000)
        ],
        batch_size=1000,
    )
    _plant_small_team(tenant, analyze=False)
    with connection.cursor() as cursor:
        # As autovacuum would have by then: statistics, and PostgreSQL's visibility map (index-only scans).
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")
    print(
        f"  planted {JOBS:,} jobs, {Run.objects.filter(tenant=tenant).count():,} runs and "
        f"{AuditEvent.objects.filter(tenant=tenant).count():,} audit events ({connection.vendor}) "
        f"in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    return _facts(tenant)


INCIDENTS = 2000


def _plant_incidents(tenant) -> None:
    """2,000 incidents about the jobs (a tenth open, some acknowledged), once per database (a reused
    one planted before they were measured gets them too)."""
    from django.utils import timezone

    from jobs.models import Job
    from monitoring.models import Incident, IncidentState

    if Incident.objects.filter(tenant=tenant).exists():
        return
    now = timezone.now()
    jobs = list(Job.objects.filter(tenant=tenant).order_by("pk").values_list("pk", "team_id", "environment_id"))
    rows = []
    for i in range(INCIDENTS):
        job_id, team_id, environment_id = jobs[(i * 7) % len(jobs)]
        opened = now - timedelta(minutes=5 * i + 1)
        state = (
            IncidentState.RESOLVED
            if i >= INCIDENTS // 10
            else (IncidentState.ACKNOWLEDGED if i % 3 == 0 else IncidentState.TRIGGERED)
        )
        rows.append(
            Incident(
                tenant=tenant,
                team_id=team_id,
                environment_id=environment_id,
                job_id=job_id,
                fingerprint=f"run_failed:job:{job_id}:{i}",
                kind="run_failed",
                severity="high" if i % 4 else "critical",
                summary=f"Job {job_id} failed (exit 1)",
                state=state,
                opened_at=opened,
                last_alert_at=opened,
                acknowledged_at=opened if state != IncidentState.TRIGGERED else None,
                resolved_at=opened + timedelta(minutes=3) if state == IncidentState.RESOLVED else None,
            )
        )
    Incident.objects.bulk_create(rows, batch_size=1000)


def _plant_small_team(tenant, analyze: bool = True) -> None:
    """The small team (SMALL_JOBS jobs of 100 runs each over DAYS) and the team-scoped viewer; also
    into a database planted before they existed (BENCH_PAGES_REUSE)."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from governance.actors import SYSTEM
    from governance.models import Environment, Role, Team
    from governance.services import grant_role
    from jobs.models import Job, Run

    if Team.objects.filter(tenant=tenant, slug=SMALL_TEAM).exists():
        return
    now = timezone.now().replace(microsecond=0)
    team = Team.objects.create(tenant=tenant, slug=SMALL_TEAM, name=SMALL_TEAM)
    envs = list(Environment.objects.filter(tenant=tenant).order_by("order"))
    jobs = Job.objects.bulk_create(
        [
            Job(
                tenant=tenant,
                team=team,
                environment=envs[i % len(envs)],
                name=f"{SMALL_TEAM}.job-{i}",
                command=["/bin/echo", "hello"],
                cron="0 */7 * * *",
                next_fire_at=now + timedelta(hours=1),
            )
            for i in range(SMALL_JOBS)
        ]
    )
    first = min(j.pk for j in jobs)
    count = SMALL_JOBS * 100
    step_s = DAYS * 86400 // count
    template = Run(job_id=first, tenant=tenant, scheduled_for=now, job_version=1, definition=jobs[0].definition())
    back = f"(i * {step_s} + 37)"
    _insert_series(
        Run,
        count,
        template,
        {
            "job_id": (f"({first} + i % {SMALL_JOBS})", []),
            "scheduled_for": _ago(back, now),
            "created_at": _ago(back, now),
            "started_at": _ago(f"{back} - 1", now),
            "finished_at": _ago(f"{back} - 2", now),
            "status": ("CASE WHEN i % 10 = 3 THEN 'failed' ELSE 'succeeded' END", []),
            "trigger": ("CASE WHEN i % 4 = 1 THEN 'manual' ELSE 'schedule' END", []),
        },
    )
    viewer = get_user_model().objects.create_user(TEAM_VIEWER, password="x")
    grant_role(viewer, Role.VIEWER, tenant=tenant, team=Team.objects.get(tenant=tenant, slug="data"), actor=SYSTEM)
    if analyze:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE jobs_job")
    print(f"  planted team {SMALL_TEAM} ({SMALL_JOBS} jobs, {count} runs) and {TEAM_VIEWER}", flush=True)


def _facts(tenant) -> dict:
    from approvals.models import ChangeRequest, ChangeStatus
    from governance.models import AuditEvent, Team
    from governance.paging import CAP, cursor_of
    from jobs.models import Job, Run
    from monitoring.models import Incident, IncidentState

    _plant_incidents(tenant)

    job = Job.objects.filter(tenant=tenant).order_by("pk")[JOBS // 2]
    failed = Run.objects.filter(job=job, status="failed").order_by("-scheduled_for").values_list("pk", flat=True)
    run_id = failed.first() or Run.objects.filter(job=job).values_list("pk", flat=True).first()
    # The deepest page number the issue names (10,000 of 50 rows), or the last one of a smaller bench.
    deep = max(1, min(10_000, min(RUNS, EVENTS) // 50))
    # The API's last numbered page (the cap's), and a position about 900,000 rows deep (?before=).
    last_numbered = max(1, min(CAP, RUNS, EVENTS) // 50)
    runs = Run.objects.filter(tenant=tenant).order_by("-scheduled_for", "-id")
    events = AuditEvent.objects.filter(tenant=tenant).order_by("-created_at", "-id")
    run_cursor = cursor_of(runs[RUNS * 9 // 10], "scheduled_for")
    event_cursor = cursor_of(events[EVENTS * 9 // 10], "created_at")
    return {
        "job": job.pk,
        "run": run_id,
        "job_name": job.name,
        "deep": deep,
        "last_numbered": last_numbered,
        "run_cursor": run_cursor,
        "event_cursor": event_cursor,
        "team": Team.objects.filter(tenant=tenant).order_by("pk").values_list("pk", flat=True).first(),
        "incident": Incident.objects.filter(tenant=tenant, state=IncidentState.TRIGGERED)
        .order_by("-opened_at")
        .values_list("pk", flat=True)
        .first(),
        "change": ChangeRequest.objects.filter(tenant=tenant, status=ChangeStatus.SUBMITTED)
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first(),
    }


def _team_member():
    """``bench-team``: author and approver over team payments only (created on first use, so a
    reused database gains it too)."""
    from django.contrib.auth import get_user_model

    from governance.actors import SYSTEM
    from governance.models import Role, Team
    from governance.services import grant_role

    user, created = get_user_model().objects.get_or_create(username="bench-team")
    if created:
        team = Team.objects.get(tenant__slug=TENANT, slug="payments")
        for role in (Role.AUTHOR, Role.APPROVER):
            grant_role(user, role, tenant=team.tenant, team=team, actor=SYSTEM)
    return user


def _pages(facts: dict) -> list[tuple[str, ...]]:
    """(name, URL[, username]): the pages measured, signed in as bench-admin unless named."""
    since = (datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    job, run, deep = facts["job"], facts["run"], facts["deep"]
    return [
        # The UI: the navigation, the pages one click below, the slow ones of issue 20.
        ("dashboard", "/"),
        ("dashboard_team", "/", "bench-team"),
        ("now", "/now/"),
        ("jobs", "/jobs/"),
        ("jobs_page100", "/jobs/?page=100"),
        ("jobs_search", "/jobs/?q=job-0500"),
        ("job", f"/jobs/{job}/"),
        ("job_live", f"/jobs/{job}/live/"),
        ("run", f"/runs/{run}/"),
        ("runs", "/runs/"),
        ("runs_failed", f"/runs/?status=failed&since={since}"),
        ("runs_job", f"/runs/?job={job}"),
        ("runs_manual_prod", "/runs/?trigger=manual&environment=prod"),
        ("runs_env", "/runs/?environment=prod"),
        ("runs_team_sparse", f"/runs/?team={SMALL_TEAM}"),
        # A viewer narrowed to a team of a third of the jobs: every list filters through the job.
        ("runs_team_viewer", "/runs/", TEAM_VIEWER),
        ("changes", "/changes/?tab=all"),
        ("change", f"/changes/{facts['change']}/"),
        ("config", "/config/"),
        ("overdue", "/overdue/"),
        ("freezes", "/freezes/"),
        ("policies", "/policies/"),
        ("incidents", "/incidents/"),
        ("incident", f"/incidents/{facts['incident']}/"),
        ("team", f"/teams/{facts['team']}/"),
        ("alert_rules", "/alert-rules/"),
        ("notifications", "/notifications/"),
        ("audit", "/audit/"),
        ("audit_page10000", f"/audit/?page={deep}"),
        ("audit_object", f"/audit/?object=job:{job}"),
        ("audit_action", "/audit/?action=change.applied"),
        # The API's lists.
        ("api_jobs", "/api/v1/jobs/"),
        ("api_jobs_page100", "/api/v1/jobs/?page=100"),
        ("api_runs", "/api/v1/runs/"),
        ("api_runs_failed", f"/api/v1/runs/?status=failed&since={since}"),
        ("api_runs_job", f"/api/v1/runs/?job={job}"),
        ("api_runs_page200", f"/api/v1/runs/?page={facts['last_numbered']}"),
        ("api_runs_deep", f"/api/v1/runs/?before={quote(facts['run_cursor'])}"),
        ("api_runs_manual_prod", "/api/v1/runs/?trigger=manual&environment=prod"),
        ("api_runs_team_viewer", "/api/v1/runs/", TEAM_VIEWER),
        ("api_audit", "/api/v1/audit-events/"),
        ("api_audit_object", f"/api/v1/audit-events/?object=job:{job}"),
        ("api_audit_action", "/api/v1/audit-events/?action=change.applied"),
        ("api_audit_page200", f"/api/v1/audit-events/?page={facts['last_numbered']}"),
        ("api_audit_deep", f"/api/v1/audit-events/?before={quote(facts['event_cursor'])}"),
        ("api_changes", "/api/v1/change-requests/"),
    ]


def _measure(backend: str, facts: dict) -> list:
    from django.contrib.auth import get_user_model
    from django.db import connection, reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from bench.report import percentile

    tag = "pg" if backend == "pg" else "sqlite"
    _team_member()
    clients: dict[str, Client] = {}
    for username in ("bench-admin", TEAM_VIEWER, "bench-team"):
        clients[username] = Client(REMOTE_ADDR="127.0.0.1")
        clients[username].force_login(get_user_model().objects.get(username=username))
    client = clients["bench-admin"]
    # As governor/wsgi.py does once the app is loaded: what the setup allocated leaves the collector.
    gc.collect()
    gc.freeze()
    only = {p for p in os.environ.get("BENCH_PAGES_ONLY", "").split(",") if p}
    figures = []
    for name, url, *who in _pages(facts):
        if only and name not in only:
            continue
        client = clients[who[0] if who else "bench-admin"]
        for _ in range(2):
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code, response.content[:300])
        samples, cpu = [], []
        for _ in range(REQUESTS):
            start, start_cpu = time.perf_counter(), time.process_time()
            client.get(url)
            samples.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
        reset_queries()
        with CaptureQueriesContext(connection) as ctx:
            client.get(url)
        queries = len(ctx.captured_queries)
        p50, p95 = percentile(samples, 50), percentile(samples, 95)
        load = os.getloadavg()[0]
        note = f"{url} on {connection.vendor}: p50 {p50:.1f} ms, {queries} queries, load average {load:.1f}"
        cpu95 = percentile(cpu, 95)
        print(
            f"  {name:22} p50 {p50:7.1f}  p95 {p95:7.1f} ms  cpu p95 {cpu95:7.1f} ms  {queries:3} queries  {url}",
            flush=True,
        )
        figures.append((f"page_p95_ms_{tag}_{name}", p95, "ms", f"< {TARGET_MS}", note))
        # This process's CPU time alone: on a shared host, the part of the server time that does not
        # wait for a core (for SQLite all of the work; for PostgreSQL without the server's own).
        figures.append((f"page_cpu_p95_ms_{tag}_{name}", cpu95, "ms", "", "Python process CPU time, p95"))
        figures.append((f"page_queries_{tag}_{name}", queries, "queries", "constant", url))
    if backend == "pg" and (not only or "export" in only):
        figures += _export(clients["bench-admin"])
    return figures


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _export(client) -> list:
    """Stream the whole audit export (CSV) and watch this process's resident memory meanwhile."""
    peak = [_rss_mb()]
    before = peak[0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start, start_cpu = time.perf_counter(), time.process_time()
    response = client.get("/api/v1/audit-events/export/?format=csv")
    assert response.status_code == 200, response.status_code
    rows = 0
    for chunk in response.streaming_content:
        rows += chunk.count(b"\n")
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - start_cpu
    done.set()
    watcher.join()
    rows -= 1  # the header
    rate = rows / seconds
    print(
        f"  export: {rows:,} rows in {seconds:.1f} s = {rate:,.0f} rows/s ({cpu_seconds:.1f} s of CPU = "
        f"{rows / cpu_seconds:,.0f} rows per CPU second); RSS {before:.0f} -> {peak[0]:.0f} MB"
    )
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return [
        ("audit_export_rows_per_s_pg", rate, "rows/s", ">= 50000", f"{rows:,} events, CSV, PostgreSQL"),
        (
            "audit_export_rows_per_cpu_s_pg",
            rows / cpu_seconds,
            "rows/s",
            "",
            "rows per second of this process's CPU time (with the memory watcher), free of the host's load",
        ),
        (
            "audit_export_peak_mb_pg",
            peak[0] - before,
            "MB",
            "constant",
            f"growth of resident memory while streaming (RSS {before:.0f} -> {peak[0]:.0f} MB; max {maxrss:.0f})",
        ),
    ]


def child(backend: str) -> int:
    _setup(backend)
    facts = _populate()
    figures = _measure(backend, facts)
    Path(os.environ["BENCH_PAGES_OUT"]).write_text(json.dumps(figures))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.exit(child(sys.argv[2]))
    print("usage: python -m bench.pages --child sqlite|pg (or make bench / python -m bench pages)", file=sys.stderr)
    sys.exit(2)
