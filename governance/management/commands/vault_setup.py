"""Create the AppRole, the run token role and the per-scope policies Governor uses to read secrets
(needs a root/admin token once)."""

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
        "Enable AppRole, write the 'governor' policy (mint run tokens only), the 'governor-run' token role "
        "and one read-only policy per tenant/environment(/team) prefix, and write the AppRole credentials to "
        "a private file. New tenants, environments and teams get their policy automatically when a policy "
        "token is configured (docs/operations.md); --policy-only re-applies the policies by hand."
    )

    def add_arguments(self, parser):
        parser.add_argument("--root-token", help="admin token (default: $VAULT_TOKEN); used only here")
        parser.add_argument("--output", default=str(settings.VAULT_APPROLE_FILE), help="credentials file (mode 0600)")
        parser.add_argument(
            "--policy-only",
            action="store_true",
            help="only rewrite Governor's policies for the current tenants, environments and teams (no new secret id)",
        )
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        token = options["root_token"] or settings.VAULT_TOKEN
        if not token:
            raise CommandError("Give an admin token with --root-token or VAULT_TOKEN.")
        slugs = sorted(Tenant.objects.values_list("slug", flat=True))
        scopes = secrets.current_scopes()
        root = hvac.Client(url=settings.VAULT_ADDR, token=token, timeout=settings.VAULT_TIMEOUT_SECONDS)
        if options["policy_only"]:
            try:
                secrets.sync_policies(root, scopes)
                secrets.setup_run_token_role(root)
            except Exception as exc:
                raise CommandError(
                    f"Vault policy update failed at {settings.VAULT_ADDR}: {secrets._translate(exc, 'policy update')}"
                ) from None
            self.stdout.write(f"vault_setup: policies cover {len(slugs)} tenant(s) in {len(scopes)} scope(s)")
            return
        try:
            credentials = secrets.setup_approle(root, scopes)
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
            "scopes": [str(scope) for scope in scopes],
            "credentials": str(path),
        }
        if options["json"]:
            self.stdout.write(json.dumps(summary))
        else:
            self.stdout.write(
                f"vault_setup: AppRole '{secrets.ROLE_NAME}' with policy '{secrets.POLICY_NAME}' for "
                f"{len(slugs)} tenant(s) in {len(scopes)} scope(s); credentials in {path}"
            )
