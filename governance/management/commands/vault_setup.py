"""Create the AppRole and read-only policy Governor uses to read tenants' secrets (needs a root/admin token once)."""

import json
import os
from pathlib import Path

import hvac
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from governance import secrets
from governance.models import Tenant


class Command(BaseCommand):
    help = (
        "Enable AppRole, write the 'governor' policy (read-only, each tenant's own prefix) and write the "
        "AppRole credentials to a private file. New tenants are added to the policy automatically when a "
        "policy token is configured (docs/operations.md); --policy-only re-applies it by hand."
    )

    def add_arguments(self, parser):
        parser.add_argument("--root-token", help="admin token (default: $VAULT_TOKEN); used only here")
        parser.add_argument("--tenant", action="append", default=[], help="extra tenant slug (repeatable)")
        parser.add_argument("--output", default=str(settings.VAULT_APPROLE_FILE), help="credentials file (mode 0600)")
        parser.add_argument(
            "--policy-only",
            action="store_true",
            help="only rewrite the 'governor' policy for the current tenants (no new secret id)",
        )
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        token = options["root_token"] or settings.VAULT_TOKEN
        if not token:
            raise CommandError("Give an admin token with --root-token or VAULT_TOKEN.")
        slugs = sorted(set(Tenant.objects.values_list("slug", flat=True)) | set(options["tenant"]))
        root = hvac.Client(url=settings.VAULT_ADDR, token=token, timeout=settings.VAULT_TIMEOUT_SECONDS)
        if options["policy_only"]:
            try:
                root.sys.create_or_update_policy(name=secrets.POLICY_NAME, policy=secrets.policy_for(slugs))
            except Exception as exc:
                raise CommandError(
                    f"Vault policy update failed at {settings.VAULT_ADDR}: {secrets._translate(exc, 'policy update')}"
                ) from None
            self.stdout.write(f"vault_setup: policy '{secrets.POLICY_NAME}' covers {len(slugs)} tenant(s)")
            return
        try:
            credentials = secrets.setup_approle(root, slugs)
        except Exception as exc:
            raise CommandError(
                f"Vault setup failed at {settings.VAULT_ADDR}: {secrets._translate(exc, 'setup')}"
            ) from None
        path = Path(options["output"])
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(credentials, out)
        secrets.reset_client()
        summary = {
            "addr": settings.VAULT_ADDR,
            "policy": secrets.POLICY_NAME,
            "tenants": slugs,
            "credentials": str(path),
        }
        if options["json"]:
            self.stdout.write(json.dumps(summary))
        else:
            self.stdout.write(
                f"vault_setup: AppRole '{secrets.ROLE_NAME}' with policy '{secrets.POLICY_NAME}' for "
                f"{len(slugs)} tenant(s); credentials in {path}"
            )
