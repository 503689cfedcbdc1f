from django.db import migrations


def mark_policy_changes(apps, schema_editor):
    # Requests made before target_kind existed: policy changes were told apart by their action only.
    ChangeRequest = apps.get_model("approvals", "ChangeRequest")
    ChangeRequest.objects.filter(action="policy").update(target_kind="policy")


class Migration(migrations.Migration):
    dependencies = [("approvals", "0005_change_request_target_kind")]

    operations = [migrations.RunPython(mark_policy_changes, migrations.RunPython.noop)]
