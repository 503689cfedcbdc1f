"""Vault (OpenBao) secrets: references validated against the tenant's own prefix, values read at
run start through an AppRole login and handed only to the process that needs them.

A job maps environment variable names to references ``vault:<mount>/<path>#<key>``,
e.g. ``{"DB_PASSWORD": "vault:secret/governor/acme/payments/db#password"}``. The
path must lie under ``<VAULT_TENANT_PREFIX>/<tenant slug>/``. Values are never
stored: only ``resolve_secrets`` returns them, and ``mask`` removes them from any
text before it is kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import hvac
import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from hvac import exceptions as vault_errors

log = logging.getLogger(__name__)

REFERENCE_RE = re.compile(
    r"^vault:(?P<mount>[a-z0-9][a-z0-9_-]{0,63})/(?P<path>[A-Za-z0-9_.\-/]{1,400})#(?P<key>[A-Za-z0-9_.\-]{1,128})$"
)
ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
# Names the executor sets itself or that change how the child process loads code.
RESERVED_ENV = {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "TZ", "SHELL", "IFS", "PYTHONPATH", "PYTHONHOME"}
RESERVED_ENV_PREFIXES = ("GOVERNOR_", "LD_", "DYLD_", "BASH_FUNC_")
MAX_SECRETS = 50
MASK = "********"
POLICY_NAME = "governor"
ROLE_NAME = "governor"


@dataclass(frozen=True)
class SecretRef:
    mount: str
    path: str
    key: str

    def __str__(self) -> str:
        return f"vault:{self.mount}/{self.path}#{self.key}"


class SecretError(Exception):
    """A secret could not be read; the run must not start. ``transient`` failures may be retried."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def tenant_prefix(tenant_slug: str) -> str:
    return f"{settings.VAULT_TENANT_PREFIX}/{tenant_slug}/"


def parse_reference(reference: str, tenant_slug: str) -> SecretRef:
    """Validate one reference against the tenant's prefix; raise ValueError with a readable message."""
    if not isinstance(reference, str):
        raise ValueError("A secret reference must be a string like 'vault:secret/governor/<tenant>/<path>#<key>'.")
    match = REFERENCE_RE.fullmatch(reference)
    if match is None:
        raise ValueError(
            f"{reference[:200]!r} is not a secret reference; use 'vault:<mount>/<path>#<key>', "
            f"e.g. 'vault:secret/{tenant_prefix(tenant_slug)}db#password'."
        )
    ref = SecretRef(match["mount"], match["path"], match["key"])
    if ref.mount not in settings.VAULT_MOUNTS:
        raise ValueError(f"Mount {ref.mount!r} is not allowed; use one of: {', '.join(settings.VAULT_MOUNTS)}.")
    segments = ref.path.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise ValueError("Secret paths may not contain empty, '.' or '..' segments.")
    prefix = tenant_prefix(tenant_slug)
    if not ref.path.startswith(prefix) or len(segments) <= len(prefix.strip("/").split("/")):
        raise ValueError(f"Secrets of this tenant must live under '{ref.mount}/{prefix}...'.")
    return ref


def clean_secret_map(value, tenant_slug: str) -> dict[str, str]:
    """Validate a job's ``secrets`` mapping (env var name -> reference); raise ValidationError({"secrets": [...]})."""
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise ValidationError({"secrets": ["Must map environment variable names to 'vault:...' references."]})
    errors = []
    if len(value) > MAX_SECRETS:
        errors.append(f"At most {MAX_SECRETS} secrets per job.")
    for name, reference in value.items():
        if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
            errors.append(f"{str(name)[:100]!r} is not an environment variable name (A-Z, 0-9, _).")
            continue
        if name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIXES):
            errors.append(f"{name}: this environment variable is reserved.")
            continue
        try:
            parse_reference(reference, tenant_slug)
        except ValueError as exc:
            errors.append(f"{name}: {exc}")
    if errors:
        raise ValidationError({"secrets": errors})
    return dict(value)


# --- the Vault client -------------------------------------------------------------------------

_lock = threading.Lock()
_client: hvac.Client | None = None
_token_expires_at = 0.0


def reset_client() -> None:
    """Forget the cached login (tests, configuration changes)."""
    global _client, _token_expires_at
    with _lock:
        _client, _token_expires_at = None, 0.0


def _approle_credentials() -> tuple[str, str]:
    role_id, secret_id = settings.VAULT_ROLE_ID, settings.VAULT_SECRET_ID
    if role_id and secret_id:
        return role_id, secret_id
    path = Path(settings.VAULT_APPROLE_FILE)
    if path.is_file():
        data = json.loads(path.read_text())
        return data["role_id"], data["secret_id"]
    raise SecretError(
        "Vault is not configured: set VAULT_ROLE_ID and VAULT_SECRET_ID (or run 'manage.py vault_setup')."
    )


def _login() -> hvac.Client:
    global _client, _token_expires_at
    role_id, secret_id = _approle_credentials()
    client = hvac.Client(url=settings.VAULT_ADDR, timeout=settings.VAULT_TIMEOUT_SECONDS)
    try:
        response = client.auth.approle.login(role_id=role_id, secret_id=secret_id)
    except (vault_errors.InvalidRequest, vault_errors.Forbidden, vault_errors.Unauthorized):
        raise SecretError(
            "Vault denied the AppRole login: the role or secret id is invalid, expired or revoked."
        ) from None
    except Exception as exc:
        raise _translate(exc, "AppRole login") from None
    lease = response["auth"].get("lease_duration") or 0
    # Renew a little early so a read never races the expiry.
    _token_expires_at = time.monotonic() + max(0, lease - 5) if lease else float("inf")
    _client = client
    return client


def _authenticated_client(*, fresh: bool = False) -> hvac.Client:
    with _lock:
        if fresh or _client is None or time.monotonic() >= _token_expires_at:
            return _login()
        return _client


def _translate(exc: Exception, what: str) -> SecretError:
    """Turn client errors into a clear reason that never contains a value (only what was attempted)."""
    if isinstance(exc, SecretError):
        return exc
    if isinstance(exc, vault_errors.VaultDown):
        return SecretError(f"Vault is sealed or down ({what}); the run was not started.", transient=True)
    if isinstance(exc, requests.exceptions.RequestException):
        return SecretError(
            f"Vault is unreachable at {settings.VAULT_ADDR} ({what}: {exc.__class__.__name__}); the run was not started.",
            transient=True,
        )
    if isinstance(exc, vault_errors.Forbidden):
        return SecretError(f"Vault denied {what} (permission denied, or the token expired or was revoked).")
    if isinstance(exc, vault_errors.InvalidPath):
        return SecretError(f"Vault has no secret for {what}.")
    if isinstance(exc, vault_errors.InvalidRequest):
        return SecretError(f"Vault refused {what} as invalid.")
    if isinstance(exc, vault_errors.RateLimitExceeded | vault_errors.InternalServerError | vault_errors.BadGateway):
        return SecretError(f"Vault failed temporarily ({what}); the run was not started.", transient=True)
    return SecretError(f"Vault error during {what}: {exc.__class__.__name__}.")


def _read(client: hvac.Client, ref: SecretRef) -> dict:
    response = client.secrets.kv.v2.read_secret_version(
        path=ref.path, mount_point=ref.mount, raise_on_deleted_version=True
    )
    return response["data"]["data"] or {}


def resolve_secrets(refs: dict[str, str], tenant, *, obj=None) -> dict[str, str]:
    """Read every referenced value (env var name -> value) or raise SecretError; nothing partial.

    Each read is audited (the reference only, never the value) in the tenant's chain.
    """
    from . import audit
    from .models import AuditAction

    if not refs:
        return {}
    parsed: dict[str, SecretRef] = {}
    for name, reference in refs.items():
        try:
            parsed[name] = parse_reference(reference, tenant.slug)
        except ValueError as exc:
            # Re-checked here: a reference that was valid at approval may not be after a tenant rename.
            raise SecretError(f"{name}: {exc}") from None
    values: dict[str, str] = {}
    client = _authenticated_client()
    for name, ref in parsed.items():
        what = f"reading {ref}"
        try:
            try:
                data = _read(client, ref)
            except vault_errors.Forbidden:
                # The token may have expired or been revoked since login: log in again once.
                client = _authenticated_client(fresh=True)
                data = _read(client, ref)
        except Exception as exc:
            raise _translate(exc, what) from None
        if ref.key not in data:
            raise SecretError(f"Vault secret {ref.mount}/{ref.path} has no key {ref.key!r}.")
        value = data[ref.key]
        if not isinstance(value, str):
            value = json.dumps(value)
        if value == "":
            raise SecretError(f"Vault secret {ref} is empty; refusing to run with an empty value.")
        values[name] = value
    for name, ref in parsed.items():
        audit.record(
            AuditAction.SECRET_READ,
            obj=obj,
            tenant=tenant.pk,
            actor_repr="worker",
            data={"reference": str(ref), "env": name},
        )
    return values


def mask(text: str, values) -> str:
    """Replace every occurrence of every secret value in ``text`` (longest first, so overlaps mask fully)."""
    if not text:
        return text
    for value in sorted({v for v in values if v}, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return text


# --- setup (root token, once) ---------------------------------------------------------------


def policy_for(tenant_slugs, mounts=None) -> str:
    """Read-only access to each tenant's prefix on each allowed KV v2 mount, and nothing else."""
    mounts = mounts or settings.VAULT_MOUNTS
    blocks = []
    for mount in mounts:
        for slug in sorted(set(tenant_slugs)):
            blocks.append(f'path "{mount}/data/{tenant_prefix(slug)}*" {{\n  capabilities = ["read"]\n}}\n')
    return "\n".join(blocks) or '# no tenants yet\npath "sys/nothing" {\n  capabilities = ["deny"]\n}\n'


POLICY_ADMIN_NAME = "governor-policy-admin"
# What VAULT_POLICY_TOKEN needs, and nothing more: read and write the one 'governor' policy.
POLICY_ADMIN_POLICY = f"""path "sys/policies/acl/{POLICY_NAME}" {{
  capabilities = ["read", "create", "update"]
}}

path "sys/policy/{POLICY_NAME}" {{
  capabilities = ["read", "create", "update"]
}}
"""


def setup_approle(root: hvac.Client, tenant_slugs) -> dict[str, str]:
    """Create or update the AppRole and its policy with a root/admin token; return role and secret ids."""
    if "approle/" not in root.sys.list_auth_methods()["data"]:
        root.sys.enable_auth_method("approle")
    for mount in settings.VAULT_MOUNTS:
        if f"{mount}/" not in root.sys.list_mounted_secrets_engines()["data"]:
            root.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    root.sys.create_or_update_policy(name=POLICY_NAME, policy=policy_for(tenant_slugs))
    root.sys.create_or_update_policy(name=POLICY_ADMIN_NAME, policy=POLICY_ADMIN_POLICY)
    root.auth.approle.create_or_update_approle(
        role_name=ROLE_NAME,
        token_policies=[POLICY_NAME],
        token_ttl=f"{settings.VAULT_TOKEN_TTL_SECONDS}s",
        token_max_ttl=f"{settings.VAULT_TOKEN_TTL_SECONDS * 4}s",
        secret_id_ttl="0",
        token_no_default_policy=True,
    )
    role_id = root.auth.approle.read_role_id(role_name=ROLE_NAME)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id(role_name=ROLE_NAME)["data"]["secret_id"]
    return {"role_id": role_id, "secret_id": secret_id}


# --- keeping the policy in step with the tenants (a policy-admin token, never the AppRole) ----------

_last_failure = ""


def policy_token() -> str:
    return settings.VAULT_POLICY_TOKEN or settings.VAULT_TOKEN


def _current_policy(client: hvac.Client) -> str | None:
    try:
        return client.sys.read_acl_policy(name=POLICY_NAME)["data"]["policy"]
    except vault_errors.InvalidPath:
        return None
    except vault_errors.Forbidden:
        # A token allowed to write but not to read the policy: write it every time.
        return None


def reconcile_policy(*, reason: str, tenant_id: int | None = None) -> str:
    """Make Vault's ``governor`` policy cover exactly the tenants in the database.

    Answers "written", "unchanged", "unconfigured" (no policy token in this process) or "failed".
    Never raises and is never called inside a transaction (tenant creation runs it on commit, the
    scheduler periodically): a failure is logged as an error and audited, in the new tenant's chain
    when a tenant creation asked for it, and the scheduler's next reconcile tries again.
    """
    from . import audit
    from .models import AuditAction, Tenant

    global _last_failure
    token = policy_token()
    if not token:
        log.warning(
            "Vault policy not updated (%s): no VAULT_POLICY_TOKEN in this process; the scheduler reconciles it "
            "if it holds one, otherwise run 'manage.py vault_setup --policy-only'",
            reason,
        )
        return "unconfigured"
    slugs = sorted(Tenant.objects.values_list("slug", flat=True))
    wanted = policy_for(slugs)
    client = hvac.Client(url=settings.VAULT_ADDR, token=token, timeout=settings.VAULT_TIMEOUT_SECONDS)
    try:
        with contextlib.suppress(Exception):
            # A periodic policy token stays valid as long as it is renewed; the reconcile is its heartbeat.
            client.auth.token.renew_self()
        if _current_policy(client) == wanted:
            _last_failure = ""
            return "unchanged"
        client.sys.create_or_update_policy(name=POLICY_NAME, policy=wanted)
    except Exception as exc:
        error = str(_translate(exc, f"writing the '{POLICY_NAME}' policy")).replace("; the run was not started", "")
        log.error("Vault policy NOT updated (%s): %s; new tenants cannot read their secrets until it is", reason, error)
        # One event per tenant creation, and one per new kind of failure of the periodic reconcile.
        if tenant_id is not None or error != _last_failure:
            audit.record(
                AuditAction.VAULT_POLICY_FAILED,
                tenant=tenant_id,
                data={"reason": reason, "error": error, "tenants": len(slugs)},
            )
        _last_failure = error
        return "failed"
    _last_failure = ""
    log.info("Vault policy '%s' now covers %d tenant(s) (%s)", POLICY_NAME, len(slugs), reason)
    # A count, not the slugs: a tenant's chain must not name the other tenants.
    audit.record(AuditAction.VAULT_POLICY_APPLIED, tenant=tenant_id, data={"reason": reason, "tenants": len(slugs)})
    return "written"
