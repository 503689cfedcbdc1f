"""Append a signed checkpoint of every audit chain's head to a file outside the database."""

import json

from django.core.management.base import BaseCommand, CommandError

from governance.audit import checkpoint_path, write_checkpoints


class Command(BaseCommand):
    help = (
        "Verify each audit chain from its last checkpoint on, then append {tenant, seq, hash, at, signature} "
        "for its head to GOVERNOR_AUDIT_CHECKPOINT_DIR/checkpoints.jsonl (run it from a timer; see docs/operations.md)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--checkpoint-dir", default=None, help="Default: GOVERNOR_AUDIT_CHECKPOINT_DIR.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object (for machines).")

    def handle(self, *args, **options):
        written, broken = write_checkpoints(options["checkpoint_dir"])
        path = checkpoint_path(options["checkpoint_dir"])
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "file": str(path),
                        "written": [{"tenant": p.tenant, "seq": p.seq, "hash": p.hash} for p in written],
                        "broken": [{"tenant": r.tenant, "seq": r.broken_seq, "reason": r.reason} for r in broken],
                    }
                )
            )
        else:
            for r in broken:
                where = f" at seq {r.broken_seq}" if r.broken_seq is not None else ""
                self.stderr.write(f"BROKEN {r.tenant}{where}: {r.reason} (no checkpoint written)")
            self.stdout.write(
                f"audit_checkpoint: {len(written)} chain head(s) appended to {path}, {len(broken)} broken"
            )
        if broken:
            raise CommandError("audit chain verification failed", returncode=1)
