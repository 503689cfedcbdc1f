"""Requests rejected before reasons were required get one when the migration adds the rule."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("approvals", "0006_policy_changes_target_kind")]
AFTER = [("approvals", "0008_c17_review_rejection_needs_reason")]


def _migrate(targets):
    """Migrate approvals to ``targets``; the models as they are then (other apps at their newest)."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    others = [node for node in executor.loader.graph.leaf_nodes() if node[0] != "approvals"]
    return executor.loader.project_state([*others, *targets]).apps


@pytest.mark.django_db(transaction=True)
def test_the_rejecting_reviews_comment_becomes_the_reason_and_a_silent_one_gets_a_note():
    apps = _migrate(BEFORE)
    try:
        tenant = apps.get_model("governance", "Tenant").objects.create(slug="old", name="Old")
        team = apps.get_model("governance", "Team").objects.create(tenant=tenant, slug="pay", name="Pay")
        env = apps.get_model("governance", "Environment").objects.create(
            tenant=tenant, slug="prod", name="Prod", order=2, required_approvals=1
        )
        user_model = apps.get_model("auth", "User")
        author = user_model.objects.create(username="old-author")
        reviewer = user_model.objects.create(username="old-reviewer")
        change_model = apps.get_model("approvals", "ChangeRequest")
        fields = {"tenant": tenant, "team": team, "environment": env, "author": author, "action": "create"}
        explained = change_model.objects.create(justification="a", status="rejected", **fields)
        silent = change_model.objects.create(justification="b", status="rejected", **fields)
        open_one = change_model.objects.create(justification="c", status="submitted", **fields)
        apps.get_model("approvals", "Review").objects.create(
            change_request=explained,
            revision=1,
            reviewer=reviewer,
            change_author=author,
            decision="reject",
            comment="Wrong prefix.",
        )
        apps = _migrate(AFTER)
        change_model = apps.get_model("approvals", "ChangeRequest")
        reasons = dict(change_model.objects.values_list("pk", "rejection_reason"))
        assert reasons[explained.pk] == "Wrong prefix."
        assert reasons[silent.pk].startswith("No reason was recorded")
        assert reasons[open_one.pk] == ""
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
