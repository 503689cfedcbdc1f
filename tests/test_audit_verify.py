"""`manage.py verify_audit` detects any edit or deletion made directly in the database."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from governance import audit
from governance.models import AuditAction, AuditEvent


def _verify(*args):
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


@pytest.fixture
def trail(cast):
    for i in range(5):
        audit.record(AuditAction.RUN_TRIGGERED, actor=cast.operator, tenant=cast.acme, data={"n": i})
    audit.record(AuditAction.RUN_TRIGGERED, actor=cast.globex_admin, tenant=cast.globex, data={"n": 0})
    return cast


def _acme_events(cast):
    return list(AuditEvent.objects.filter(tenant=cast.acme).order_by("seq"))


def _sql(statement, params):
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def test_an_untouched_trail_verifies_and_exits_zero(trail):
    code, out, err = _verify()
    assert code == 0
    assert "0 broken" in out and not err


def test_json_output_lists_every_chain(trail):
    code, out, _ = _verify("--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    assert {c["tenant"] for c in report["chains"]} >= {"acme", "globex"}
    assert report["events_checked"] == AuditEvent.objects.count()


def test_editing_a_data_field_in_sql_is_reported_with_its_seq(trail):
    victim = _acme_events(trail)[2]
    _sql("UPDATE governance_auditevent SET data = %s WHERE id = %s", ['{"n": 99}', victim.pk])
    code, out, err = _verify()
    assert code == 1
    assert f"acme at seq {victim.seq}" in err
    assert "content changed" in err


def test_editing_the_actor_name_is_reported(trail):
    victim = _acme_events(trail)[-1]
    _sql("UPDATE governance_auditevent SET actor_repr = %s WHERE id = %s", ["someone-else", victim.pk])
    code, _, err = _verify()
    assert code == 1 and "content changed" in err


def test_deleting_a_middle_event_is_reported_as_a_gap(trail):
    events = _acme_events(trail)
    victim = events[len(events) // 2]
    _sql("DELETE FROM governance_auditevent WHERE id = %s", [victim.pk])
    code, out, err = _verify("--json")
    report = json.loads(out)
    acme = next(c for c in report["chains"] if c["tenant"] == "acme")
    assert code == 1 and report["ok"] is False
    assert acme["broken_seq"] == victim.seq + 1
    assert "deleted" in acme["reason"]
    globex = next(c for c in report["chains"] if c["tenant"] == "globex")
    assert globex["ok"] is True


def test_deleting_the_last_event_is_reported(trail):
    victim = _acme_events(trail)[-1]
    _sql("DELETE FROM governance_auditevent WHERE id = %s", [victim.pk])
    code, _, err = _verify()
    assert code == 1
    assert "deleted at the end" in err


def test_rewriting_an_event_and_recomputing_its_hash_breaks_the_next_link(trail):
    events = _acme_events(trail)
    victim = events[1]
    victim.data = {"n": 1000}
    forged = victim.compute_hash()
    _sql("UPDATE governance_auditevent SET data = %s, hash = %s WHERE id = %s", ['{"n": 1000}', forged, victim.pk])
    code, _, err = _verify()
    assert code == 1
    assert f"seq {events[2].seq}" in err and "link broken" in err


def test_rewriting_the_last_event_with_a_fresh_hash_is_caught_by_the_chain_head(trail):
    victim = _acme_events(trail)[-1]
    victim.data = {"n": 1000}
    forged = victim.compute_hash()
    _sql("UPDATE governance_auditevent SET data = %s, hash = %s WHERE id = %s", ['{"n": 1000}', forged, victim.pk])
    code, _, err = _verify()
    assert code == 1 and "chain head hash" in err


def test_the_command_exits_non_zero_as_a_process(trail, tmp_path):
    """The exit status an operator's cron job sees (not just an exception in-process)."""
    victim = _acme_events(trail)[0]
    _sql("DELETE FROM governance_auditevent WHERE id = %s", [victim.pk])
    from django.core.management import ManagementUtility

    with pytest.raises(SystemExit) as exit_info:
        ManagementUtility(["manage.py", "verify_audit"]).execute()
    assert exit_info.value.code == 1
