"""Show what applying manifests would create, change and delete."""

import json

from django.core.management.base import BaseCommand

from manifests.loader import read_paths
from manifests.plan import make_plan

from ._manifest_cli import SHELL_OPERATOR, actor_named, add_common, render


class Command(BaseCommand):
    help = "Compare job manifests with the live jobs and print the changes (with diffs) an apply would make."

    def add_arguments(self, parser):
        add_common(parser, actor_required=False)

    def handle(self, *args, paths, actor, prune, **options):
        user = actor_named(actor)
        plan = make_plan(read_paths(paths), actor=user or SHELL_OPERATOR, prune=prune)
        if options["json"]:
            self.stdout.write(json.dumps(plan.as_dict(), indent=2))
        else:
            for line in render(plan):
                self.stdout.write(line)
            self.stdout.write(("Invalid manifests: " if plan.problems else "Plan: ") + plan.summary())
        if plan.problems:
            raise SystemExit(1)
