"""Backup, restore and replication of definitions on real PostgreSQL servers (issue 20, item 4):
``manage.py dbcheck`` on a primary, its streaming replica and a multi-host DATABASE_URL; a pg_dump
restored into a fresh server verifies and counts the same; manifests exported from one region's
database and applied to another leave nothing to plan."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import pytest

from tests import pgnodes, procs

pytestmark = pytest.mark.ha

COUNTED = ["governance_auditevent", "jobs_job", "jobs_run", "approvals_changerequest", "auth_user", "governance_team"]


def env(url: str, **extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "GOVERNOR_Q_BROKER"}}
    environ.update(DJANGO_SETTINGS_MODULE="governor.settings", DATABASE_URL=url, PYTHONUNBUFFERED="1", **extra)
    return environ


def manage(url: str, *args: str, timeout: float = 180, check: bool = True):
    done = procs.run_manage(*args, env=env(url), timeout=timeout)
    if check:
        assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def base():
    if not shutil.which("runuser") and os.getuid() == 0:
        pytest.skip("needs runuser to start PostgreSQL as postgres")
    path = pgnodes.workdir()
    (path / "archive").mkdir()
    if os.getuid() == 0:
        shutil.chown(path / "archive", "postgres", "postgres")
    nodes: list[pgnodes.Node] = []
    yield path, nodes
    for node in nodes:
        node.stop()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def primary(base, seeded_postgres):
    path, nodes = base
    _seeded_base, seeded = seeded_postgres
    node = pgnodes.copy_of(seeded, path, "primary", archive=path / "archive").start()
    nodes.append(node)
    return node


def counts(node: pgnodes.Node) -> dict[str, int]:
    return {table: int(node.psql(f"SELECT count(*) FROM {table}")) for table in COUNTED}


def test_dbcheck_tells_the_primary_from_its_replica_and_a_multi_host_url_finds_the_writable_one(base, primary):
    path, nodes = base
    replica = primary.replica("replica")
    nodes.append(replica)
    primary.psql("CREATE TABLE IF NOT EXISTS ha_marker (n int); INSERT INTO ha_marker VALUES (1)")
    procs.wait_until(lambda: replica.psql("SELECT to_regclass('ha_marker') IS NOT NULL") == "t", 20, "replay")

    on_primary = manage(primary.url(), "dbcheck", "--json")
    facts = json.loads(on_primary.stdout)
    assert facts["node"] == primary.address and facts["writable"] and not facts["in_recovery"]
    assert facts["timeline"] == 1
    assert [r["state"] for r in facts["replicas"]] == ["streaming"]

    on_replica = manage(replica.url(), "dbcheck", "--json", check=False)
    assert on_replica.returncode == 1
    facts = json.loads(on_replica.stdout)
    assert facts["node"] == replica.address and facts["in_recovery"] and not facts["writable"]
    assert facts["replay_lag_bytes"] == 0
    human = manage(replica.url(), "dbcheck", check=False)
    assert human.returncode == 1 and f"{replica.address}: replica (in recovery), NOT writable" in human.stdout

    # The replica listed first: libpq skips it for the writable primary.
    multi = (
        f"postgresql://{pgnodes.USER}@{replica.address},{primary.address}/{pgnodes.DB}?target_session_attrs=read-write"
    )
    facts = json.loads(manage(multi, "dbcheck", "--json").stdout)
    assert facts["node"] == primary.address and facts["writable"]

    # A URL that names no writable node: exit 1, one line saying so.
    only_replica = f"postgresql://{pgnodes.USER}@{replica.address}/{pgnodes.DB}?target_session_attrs=read-write"
    refused = manage(only_replica, "dbcheck", check=False)
    assert refused.returncode == 1
    assert (
        refused.stdout.startswith("DATABASE_URL names no writable node:") and "session is read-only" in refused.stdout
    )
    replica.stop()
    nodes.remove(replica)


def test_a_pg_dump_restored_into_a_fresh_server_verifies_and_counts_the_same(base, primary, tmp_path):
    path, nodes = base
    # Some history to carry over: runs and their audit events.
    manage(
        primary.url(),
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model\n"
        "from jobs.models import Job\n"
        "from jobs.services import trigger_run\n"
        "op = get_user_model().objects.get(username='acme-operator')\n"
        "for job in Job.objects.filter(environment__slug='dev', team__tenant__slug='acme')[:3]:\n"
        "    trigger_run(job, actor=op, reason='before the backup')\n",
    )
    before = counts(primary)
    assert before["jobs_run"] >= 1 and before["governance_auditevent"] > 0
    dump = path / "governor.dump"
    began = time.monotonic()
    pgnodes.tool(
        "pg_dump", "-h", "127.0.0.1", "-p", str(primary.port), "-U", pgnodes.USER, "-Fc", "-f", str(dump), pgnodes.DB
    )
    fresh = pgnodes.Node(path, "restored").initdb().start()
    nodes.append(fresh)
    pgnodes.tool(
        "pg_restore", "-h", "127.0.0.1", "-p", str(fresh.port), "-U", pgnodes.USER,
        "--create", "--exit-on-error", "-d", "postgres", str(dump),
    )  # fmt: skip
    took = time.monotonic() - began
    assert counts(fresh) == before
    verified = manage(fresh.url(), "verify_audit", "--json", "--checkpoint-dir", str(tmp_path))
    report = json.loads(verified.stdout)
    assert report["ok"] and report["events_checked"] == before["governance_auditevent"]
    # The restored server takes writes (sequences came along: no duplicate key).
    manage(
        fresh.url(),
        "shell",
        "-c",
        "from governance.models import Tenant; Tenant.objects.create(slug='after', name='After restore')",
    )
    print(f"pg_dump + restore of {before} took {took:.1f} s", file=sys.stderr)
    fresh.stop()
    nodes.remove(fresh)


def test_definitions_exported_from_one_region_and_applied_to_another_leave_nothing_to_plan(base, primary, tmp_path):
    # The second region: its own database, set up as the first one was (here: a copy of it, on the same server).
    pgnodes.tool(
        "createdb", "-h", "127.0.0.1", "-p", str(primary.port), "-U", pgnodes.USER, "-T", pgnodes.DB, "governor_eu"
    )
    eu = primary.url().rsplit("/", 1)[0] + "/governor_eu"
    # The first region moves on: a new job and a changed one, through change control (dev: no review).
    manage(
        primary.url(),
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model\n"
        "from approvals.services import propose_change\n"
        "from governance.models import Environment, Team\n"
        "from jobs.models import Job\n"
        "author = get_user_model().objects.get(username='acme-author')\n"
        "team = Team.objects.get(tenant__slug='acme', slug='payments')\n"
        "dev = Environment.objects.get(tenant__slug='acme', slug='dev')\n"
        "definition = {'name': 'payments.region.sync', 'description': 'Only in the first region so far.',\n"
        "    'runbook': 'Re-run it.', 'criticality': 'low', 'command': ['/bin/true'], 'cron': '15 3 * * *',\n"
        "    'timezone': 'UTC', 'timeout_seconds': 60}\n"
        "cr = propose_change(actor=author, action='create', team=team, environment=dev, definition=definition,\n"
        "    justification='region replication test')\n"
        "assert cr.status == 'applied', cr.status\n",
    )
    exported = tmp_path / "acme.yaml"
    manage(primary.url(), "export_manifests", "--tenant", "acme", "--output", str(exported))
    assert "payments.region.sync" in exported.read_text()

    before = json.loads(manage(eu, "plan", "--json", str(exported), check=False).stdout)
    assert [c["name"] for c in before["changes"]] == ["payments.region.sync"]
    assert before["summary"]["create"] == 1
    applied = manage(eu, "apply", str(exported), "--actor", "acme-author", "--json")
    assert json.loads(applied.stdout)["ok"]
    after = json.loads(manage(eu, "plan", "--json", str(exported)).stdout)
    assert after["changes"] == [] and after["ok"]
    # Both regions now export the same bytes.
    again = tmp_path / "acme-eu.yaml"
    manage(eu, "export_manifests", "--tenant", "acme", "--output", str(again))
    assert again.read_text() == exported.read_text()


def test_a_base_backup_plus_archived_wal_restores_up_to_the_last_archived_commit(base, primary, tmp_path):
    path, nodes = base
    restored = pgnodes.Node(path, "pitr")
    # The base backup (as a nightly job would take it), then more history after it.
    pgnodes.tool(
        "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", pgnodes.USER,
        "-D", str(restored.data), "-X", "stream", "-c", "fast",
    )  # fmt: skip
    at_backup = counts(primary)
    manage(
        primary.url(),
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model\n"
        "from jobs.models import Job\n"
        "from jobs.services import trigger_run\n"
        "op = get_user_model().objects.get(username='acme-operator')\n"
        "for job in Job.objects.filter(environment__slug='dev', team__tenant__slug='acme')[:2]:\n"
        "    trigger_run(job, actor=op, reason='after the base backup')\n",
    )
    after = counts(primary)
    assert after["jobs_run"] > at_backup["jobs_run"]
    # Close the current WAL segment so the archive holds every commit so far.
    segment = primary.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    primary.psql("SELECT pg_switch_wal()")
    procs.wait_until(
        lambda: primary.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= segment,
        30,
        "the WAL segment to be archived",
    )
    # Restore: the base backup, replaying the archive to its end, then a primary of its own.
    with open(restored.data / "postgresql.auto.conf", "a") as conf:
        conf.write(f"restore_command = 'cp {path / 'archive'}/%f %p'\narchive_mode = off\n")
    (restored.data / "recovery.signal").touch()
    if os.getuid() == 0:
        for item in [restored.data / "postgresql.auto.conf", restored.data / "recovery.signal"]:
            shutil.chown(item, "postgres", "postgres")
    began = time.monotonic()
    restored.start()
    nodes.append(restored)
    procs.wait_until(lambda: restored.psql("SELECT pg_is_in_recovery()") == "f", 60, "the end of recovery")
    took = time.monotonic() - began
    assert counts(restored) == after
    report = json.loads(manage(restored.url(), "verify_audit", "--json", "--checkpoint-dir", str(tmp_path)).stdout)
    assert report["ok"] and report["events_checked"] == after["governance_auditevent"]
    facts = json.loads(manage(restored.url(), "dbcheck", "--json").stdout)
    assert facts["writable"] and facts["timeline"] == 2
    print(f"base backup + WAL archive replayed and promoted in {took:.1f} s", file=sys.stderr)
    restored.stop()
    nodes.remove(restored)
