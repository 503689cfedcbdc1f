"""`manage.py verify_audit` detects any edit or deletion made directly in the database."""

import hashlib
import hmac
import json
import os
import stat
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from governance import audit
from governance.models import AuditAction, AuditChain, AuditEvent


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


# --- a database writer without the audit key cannot rewrite the chain ------------------------


def _canonical(event) -> bytes:
    # What an attacker reads in the source: the fields each event's hash covers.
    payload = {
        "tenant": event.tenant_id,
        "seq": event.seq,
        "created_at": event.created_at.isoformat(),
        "actor": event.actor_id,
        "actor_repr": event.actor_repr,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "object_repr": event.object_repr,
        "team": event.team_id,
        "environment": event.environment_id,
        "data": event.data,
        "ip": event.ip,
        "prev_hash": event.prev_hash,
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()


def _plain_sha256(event) -> str:
    return hashlib.sha256(_canonical(event)).hexdigest()


def _guessed_key(event) -> str:
    return hmac.new(b"a key that is not GOVERNOR_AUDIT_KEY", _canonical(event), hashlib.sha256).hexdigest()


def _delete_renumber_rehash(cast, victim_seq, digest):
    """Delete one event, renumber the later ones and re-hash them and the chain head, as a DB writer can."""
    events = _acme_events(cast)
    _sql("DELETE FROM governance_auditevent WHERE id = %s", [events[victim_seq - 1].pk])
    previous = events[victim_seq - 2].hash if victim_seq > 1 else ""
    for event in events[victim_seq:]:
        event.seq -= 1
        event.prev_hash = previous
        event.hash = previous = digest(event)
        _sql(
            "UPDATE governance_auditevent SET seq = %s, prev_hash = %s, hash = %s WHERE id = %s",
            [event.seq, event.prev_hash, event.hash, event.pk],
        )
    AuditChain.objects.filter(tenant=cast.acme).update(last_seq=len(events) - 1, last_hash=previous)


@pytest.mark.parametrize("digest", [_plain_sha256, _guessed_key], ids=["plain-sha256", "wrong-key"])
def test_deleting_renumbering_and_rehashing_without_the_key_is_detected(trail, digest):
    _delete_renumber_rehash(trail, 3, digest)
    code, out, err = _verify()
    assert code == 1
    assert "BROKEN acme at seq 3" in err and "HMAC does not match" in err
    assert "globex" not in err
    code, out, _ = _verify("--json")
    acme = next(c for c in json.loads(out)["chains"] if c["tenant"] == "acme")
    assert acme["ok"] is False and acme["broken_seq"] == 3


@pytest.fixture
def checkpoints(tmp_path):
    directory = tmp_path / "checkpoints"

    def write(*extra):
        out = StringIO()
        call_command("audit_checkpoint", "--checkpoint-dir", str(directory), *extra, stdout=out, stderr=StringIO())
        return out.getvalue()

    write.directory = directory
    write.file = directory / "checkpoints.jsonl"
    return write


def test_a_checkpoint_is_a_signed_line_appended_to_a_private_file(trail, checkpoints):
    checkpoints()
    audit.record(AuditAction.RUN_TRIGGERED, actor=trail.operator, tenant=trail.acme, data={"n": 5})
    checkpoints()
    lines = [json.loads(line) for line in checkpoints.file.read_text().splitlines()]
    acme = [line for line in lines if line["tenant_slug"] == "acme"]
    head = len(_acme_events(trail))
    assert [line["seq"] for line in acme] == [head - 1, head]
    assert acme[-1]["hash"] == _acme_events(trail)[-1].hash
    assert {"tenant", "seq", "hash", "at", "signature"} <= set(acme[-1])
    assert stat.S_IMODE(os.stat(checkpoints.file).st_mode) == 0o600
    code, out, err = _verify("--checkpoint-dir", str(checkpoints.directory))
    assert code == 0 and "checkpoint(s)" in out and not err


def test_truncating_the_tail_after_a_checkpoint_is_detected(trail, checkpoints):
    checkpoints()
    events = _acme_events(trail)
    for event in events[-3:]:
        _sql("DELETE FROM governance_auditevent WHERE id = %s", [event.pk])
    kept = events[-4]
    AuditChain.objects.filter(tenant=trail.acme).update(last_seq=kept.seq, last_hash=kept.hash)
    assert _verify()[0] == 0  # the key alone cannot see a chain cut short at its end
    code, _, err = _verify("--checkpoint-dir", str(checkpoints.directory))
    assert code == 1
    assert f"BROKEN acme at seq {kept.seq + 1}" in err and "truncated" in err


def test_an_edited_event_before_the_checkpoint_is_detected(trail, checkpoints):
    checkpoints()
    victim = _acme_events(trail)[1]
    _sql("UPDATE governance_auditevent SET actor_repr = %s WHERE id = %s", ["someone-else", victim.pk])
    code, _, err = _verify("--checkpoint-dir", str(checkpoints.directory))
    assert code == 1 and f"BROKEN acme at seq {victim.seq}" in err


def test_an_edited_checkpoint_line_is_reported(trail, checkpoints):
    checkpoints()
    head = len(_acme_events(trail))
    text = checkpoints.file.read_text().replace(f'"seq": {head}', '"seq": 3')
    checkpoints.file.write_text(text)
    code, _, err = _verify("--checkpoint-dir", str(checkpoints.directory))
    assert code == 1 and "bad signature on the checkpoint of acme at seq 3" in err


def test_no_checkpoint_is_written_for_a_broken_chain(trail, checkpoints):
    victim = _acme_events(trail)[0]
    _sql("UPDATE governance_auditevent SET data = %s WHERE id = %s", ['{"n": 99}', victim.pk])
    with pytest.raises(CommandError):
        checkpoints()
    slugs = [json.loads(line)["tenant_slug"] for line in checkpoints.file.read_text().splitlines()]
    assert "globex" in slugs and "acme" not in slugs


def test_an_event_lying_past_the_chain_head_is_reported(trail):
    events = _acme_events(trail)
    AuditChain.objects.filter(tenant=trail.acme).update(last_seq=events[-2].seq, last_hash=events[-2].hash)
    code, _, err = _verify()
    assert code == 1 and f"BROKEN acme at seq {events[-1].seq}" in err and "past the chain head" in err
