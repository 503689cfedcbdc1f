"""Verify every tenant's audit chain (HMAC under GOVERNOR_AUDIT_KEY) and its newest signed checkpoint;
exit 1 on the first broken link of any chain."""

import json
from dataclasses import asdict

from django.core.management.base import BaseCommand, CommandError

from governance.audit import checkpoint_path, read_checkpoints, verify_all


class Command(BaseCommand):
    help = (
        "Walk each tenant's audit chain, check every event's HMAC and that the chain still holds its newest "
        "signed checkpoint; report the first bad sequence (edited, deleted, re-hashed or truncated events)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print one JSON object (for machines).")
        parser.add_argument(
            "--checkpoint-dir",
            default=None,
            help="Where audit_checkpoint appends its signed checkpoints (default: GOVERNOR_AUDIT_CHECKPOINT_DIR).",
        )

    def handle(self, *args, **options):
        checkpoints, problems = read_checkpoints(options["checkpoint_dir"])
        reports = verify_all(checkpoints)
        broken = [r for r in reports if not r.ok]
        total = sum(r.checked for r in reports)
        failed = bool(broken or problems)
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "ok": not failed,
                        "events_checked": total,
                        "checkpoints": len(checkpoints),
                        "checkpoint_problems": problems,
                        "chains": [asdict(r) for r in reports],
                    }
                )
            )
        else:
            for problem in problems:
                self.stderr.write(f"BAD CHECKPOINT {problem}")
            for r in broken:
                where = f" at seq {r.broken_seq}" if r.broken_seq is not None else ""
                where += f" (event id {r.broken_id})" if r.broken_id is not None else ""
                self.stderr.write(f"BROKEN {r.tenant}{where}: {r.reason}")
            anchored = f"{len(checkpoints)} checkpoint(s) from {checkpoint_path(options['checkpoint_dir'])}"
            self.stdout.write(
                f"audit: {len(reports)} chain(s), {total} event(s) verified, {anchored}, {len(broken)} broken"
            )
        if failed:
            raise CommandError("audit chain verification failed", returncode=1)
