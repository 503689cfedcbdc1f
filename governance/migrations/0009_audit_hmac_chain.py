"""Admin audit actions, and the audit chain re-keyed from plain SHA-256 to HMAC-SHA256 under
GOVERNOR_AUDIT_KEY.

Only a chain that verifies under the old plain SHA-256 is re-keyed: re-keying a chain that was
already edited would bless the edit, so such a chain is left as it is and ``verify_audit`` keeps
reporting it. The canonical form is frozen here (a copy of ``AuditEvent.canonical`` as of this
migration), so later changes to the model cannot change what this migration computes.
"""

import hashlib
import hmac
import json

from django.conf import settings
from django.db import migrations, models


def _canonical(event) -> bytes:
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


def _plain(event) -> str:
    return hashlib.sha256(_canonical(event)).hexdigest()


def _keyed(event) -> str:
    return hmac.new(settings.GOVERNOR_AUDIT_KEY.encode(), _canonical(event), hashlib.sha256).hexdigest()


def _rehash(apps, old, new):
    AuditChain = apps.get_model("governance", "AuditChain")
    AuditEvent = apps.get_model("governance", "AuditEvent")
    for chain in AuditChain.objects.all():
        events = list(AuditEvent.objects.filter(tenant_id=chain.tenant_id).order_by("seq"))
        previous, intact = "", len(events) == chain.last_seq
        for expected, event in enumerate(events, start=1):
            if event.seq != expected or event.prev_hash != previous or old(event) != event.hash:
                intact = False
                break
            previous = event.hash
        if not intact or previous != chain.last_hash:
            print(f"\n  audit chain of tenant {chain.tenant_id or 'platform'} does not verify: left as it is")
            continue
        previous = ""
        for event in events:
            event.prev_hash = previous
            event.hash = previous = new(event)
        AuditEvent.objects.bulk_update(events, ["prev_hash", "hash"], batch_size=1000)
        AuditChain.objects.filter(pk=chain.pk).update(last_hash=previous)


def rekey(apps, schema_editor):
    _rehash(apps, _plain, _keyed)


def unkey(apps, schema_editor):
    _rehash(apps, _keyed, _plain)


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0008_tenant_naming_pattern_re2"),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="action",
            field=models.CharField(
                choices=[
                    ("auth.login", "Login"),
                    ("auth.login_failed", "Failed login"),
                    ("auth.logout", "Logout"),
                    ("access.denied", "Access denied"),
                    ("role.granted", "Role granted"),
                    ("role.revoked", "Role revoked"),
                    ("change.created", "Change proposed"),
                    ("change.submitted", "Change submitted"),
                    ("change.approved", "Change approved"),
                    ("change.rejected", "Change rejected"),
                    ("change.withdrawn", "Change withdrawn"),
                    ("change.applied", "Change applied"),
                    ("change.failed", "Change failed to apply"),
                    ("change.edited", "Change edited"),
                    ("change.rebased", "Change rebased"),
                    ("change.expired", "Change expired"),
                    ("change.commented", "Change commented"),
                    ("change.held", "Change held (apply time or freeze)"),
                    ("change.post_reviewed", "Emergency change reviewed after the fact"),
                    ("policy.changed", "Approval policy changed"),
                    ("config.changed", "Maintenance window, holiday calendar or pool changed"),
                    ("freeze.created", "Freeze window created"),
                    ("job.recertified", "Job recertified"),
                    ("job.sunset_warning", "Job nears its sunset date"),
                    ("job.sunset", "Job disabled at its sunset date"),
                    ("job.created", "Job created"),
                    ("job.updated", "Job updated"),
                    ("job.deleted", "Job deleted"),
                    ("job.paused", "Job paused"),
                    ("job.resumed", "Job resumed"),
                    ("run.triggered", "Run triggered"),
                    ("run.cancelled", "Run cancelled"),
                    ("run.rerun", "Run rerun by an operator"),
                    ("run.marked_succeeded", "Run marked succeeded by an operator"),
                    ("secret.read", "Secret read"),
                    ("token.issued", "API token issued"),
                    ("token.revoked", "API token revoked"),
                    ("service_account.created", "Service account created"),
                    ("audit.exported", "Audit exported"),
                    ("vault.policy_applied", "Vault policy updated for the tenants"),
                    ("vault.policy_failed", "Vault policy could not be updated"),
                    ("admin.created", "Created in the Django admin"),
                    ("admin.changed", "Changed in the Django admin"),
                    ("admin.deleted", "Deleted in the Django admin"),
                ],
                max_length=40,
            ),
        ),
        migrations.RunPython(rekey, unkey, elidable=False),
    ]
