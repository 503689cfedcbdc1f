"""Apply manifests: change requests for every difference, applied at once where ungoverned."""

import json

from django.core.management.base import BaseCommand

from manifests.loader import read_paths
from manifests.plan import ApplyError, apply_plan, make_plan

from ._manifest_cli import actor_named, add_common, render


class Command(BaseCommand):
    help = (
        "Make the live jobs match the manifests: ungoverned environments change at once, governed ones get "
        "change requests (carrying the commit and pipeline) to review. Applying the same manifests twice does nothing."
    )

    def add_arguments(self, parser):
        add_common(parser, actor_required=True)
        parser.add_argument("--commit", default="", help="Commit SHA of the manifests (recorded on each request).")
        parser.add_argument("--pipeline-url", default="", help="URL of the pipeline run (recorded on each request).")
        parser.add_argument("--ticket", default="", help="Ticket reference for the change requests.")
        parser.add_argument("--message", default="", help="Justification text put before the generated one.")

    def handle(self, *args, paths, actor, prune, commit, pipeline_url, ticket, message, **options):
        user = actor_named(actor)
        plan = make_plan(read_paths(paths), actor=user, prune=prune, for_apply=True)
        problems = plan.problems
        done = []
        if not problems:
            try:
                done = apply_plan(
                    plan, actor=user, commit=commit, pipeline_url=pipeline_url, ticket=ticket, message=message
                )
            except ApplyError as exc:
                problems = exc.problems
        if options["json"]:
            result = plan.as_dict()
            result["ok"] = not problems
            result["errors"] = [p.as_dict() for p in problems]
            result["applied"] = [c.as_dict() for c in done]
            self.stdout.write(json.dumps(result, indent=2))
        else:
            if problems:
                for problem in problems:
                    self.stdout.write(str(problem))
            else:
                for line in render(plan):
                    if line.startswith("= "):
                        self.stdout.write(line)
                for change in done:
                    self.stdout.write(describe(change))
            applied = sum(1 for c in done if c.change_request and c.change_request.status == "applied")
            opened = sum(1 for c in done if c.change_request and c.change_request.status != "applied")
            waiting = sum(1 for c in done if c.waiting_for)
            if problems:
                self.stdout.write(f"Nothing applied: {len(problems)} error(s).")
            else:
                self.stdout.write(
                    f"Apply: {applied} applied, {opened} change request(s) opened for review, {waiting} waiting; "
                    + plan.summary()
                )
        if problems:
            raise SystemExit(1)


def describe(change) -> str:
    from manifests.plan import change_url

    cr = change.change_request
    where = f"{change.tenant}/{change.environment.slug}"
    if change.waiting_for:
        return (
            f"waiting: {change.action} {change.name} in {where} depends on {change.waiting_for}, "
            "which awaits review; apply again once it is applied"
        )
    if cr.status == "applied":
        return f"{change.action}d {change.name} in {where} (CR-{cr.pk}, now v{cr.applied_version})"
    return f"opened CR-{cr.pk} to {change.action} {change.name} in {where}: {change_url(cr)}"
