"""Vault (OpenBao) secrets: references validated against the job's own tenant, environment (and,
where the tenant says so, team) prefix; values read at run start with a short-lived token that
Vault lets read only that prefix, and handed only to the process that needs them.

A job maps environment variable names to references ``vault:<mount>/<path>#<key>``, e.g.
``{"DB_PASSWORD": "vault:secret/governor/acme/dev/db#password"}``. The path must lie under
``<VAULT_TENANT_PREFIX>/<tenant>/<environment>/`` (``.../<environment>/<team>/`` when the tenant
has ``secrets_by_team``). Values are never stored: only ``resolve_secrets`` returns them, and
``mask`` removes them from any text before it is kept.

Vault enforces the same layout (docs/operations.md): Governor's AppRole may only create tokens
through the ``governor-run`` token role, each run gets a child token holding the one policy of its
scope (``governor-run.<tenant>.<environment>[.<team>]``), and those policies are kept in step with
the database by a token that may only write them.
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
# The token role through which the AppRole mints one child token per run, and the names of the
# per-scope policies those tokens may hold (slugs never contain dots, so names cannot collide).
RUN_TOKEN_ROLE = "governor-run"
RUN_POLICY_PREFIX = "governor-run."
# A run token lives long enough for its reads, and no longer: it is never renewed, and each read
# uses up one of its uses.
RUN_TOKEN_TTL_SECONDS = 60


@dataclass(frozen=True)
class SecretRef:
    mount: str
    path: str
    key: str

    def __str__(self) -> str:
        return f"vault:{self.mount}/{self.path}#{self.key}"


@dataclass(frozen=True)
class SecretScope:
    """Whose secrets a job may read: its tenant and environment, and its team when the tenant
    scopes secrets by team. The same slugs name the prefix and the Vault policy."""

    tenant: str
    environment: str
    team: str | None = None

    @classmethod
    def of(cls, tenant, environment, team) -> SecretScope:
        """The scope of a job of ``team`` in ``environment`` (models of one tenant)."""
        return cls(tenant.slug, environment.slug, team.slug if tenant.secrets_by_team else None)

    @property
    def parts(self) -> list[str]:
        return [self.tenant, self.environment] + ([self.team] if self.team else [])

    @property
    def prefix(self) -> str:
        return f"{settings.VAULT_TENANT_PREFIX}/{'/'.join(self.parts)}/"

    @property
    def policy_name(self) -> str:
        return RUN_POLICY_PREFIX + ".".join(self.parts)

    def __str__(self) -> str:
        return "/".join(self.parts)


class SecretError(Exception):
    """A secret could not be read; the run must not start. ``transient`` failures may be retried."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def allowed_prefix(scope: SecretScope, mount: str | None = None) -> str:
    """What an author reads in a message: 'secret/governor/acme/dev/...'."""
    return f"{mount or settings.VAULT_MOUNTS[0]}/{scope.prefix}..."


def parse_reference(reference: str, scope: SecretScope) -> SecretRef:
    """Validate one reference against the job's scope prefix; raise ValueError with a readable message."""
    if not isinstance(reference, str):
        raise ValueError(f"A secret reference must be a string like 'vault:{allowed_prefix(scope)[:-3]}<path>#<key>'.")
    match = REFERENCE_RE.fullmatch(reference)
    if match is None:
        raise ValueError(
            f"{reference[:200]!r} is not a secret reference; use 'vault:<mount>/<path>#<key>', "
            f"e.g. 'vault:{allowed_prefix(scope)[:-3]}db#password'."
        )
    ref = SecretRef(match["mount"], match["path"], match["key"])
    if ref.mount not in settings.VAULT_MOUNTS:
        raise ValueError(f"Mount {ref.mount!r} is not allowed; use one of: {', '.join(settings.VAULT_MOUNTS)}.")
    segments = ref.path.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise ValueError("Secret paths may not contain empty, '.' or '..' segments.")
    prefix = scope.prefix
    if not ref.path.startswith(prefix) or len(segments) <= len(prefix.strip("/").split("/")):
        raise ValueError(f"Secrets of {scope} jobs must live under '{allowed_prefix(scope, ref.mount)}'.")
    return ref


def clean_secret_map(value, scope: SecretScope) -> dict[str, str]:
    """Validate a job's ``secrets`` mapping (env var name -> reference).

    Raise ValidationError whose keys name the field: ``secrets`` for the mapping and its names,
    ``secrets.<NAME>`` for one reference."""
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise ValidationError({"secrets": ["Must map environment variable names to 'vault:...' references."]})
    errors: dict[str, list[str]] = {}
    if len(value) > MAX_SECRETS:
        errors.setdefault("secrets", []).append(f"At most {MAX_SECRETS} secrets per job.")
    for name, reference in value.items():
        if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
            errors.setdefault("secrets", []).append(
                f"{str(name)[:100]!r} is not an environment variable name (A-Z, 0-9, _)."
            )
            continue
        if name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIXES):
            errors[f"secrets.{name}"] = ["This environment variable is reserved."]
            continue
        try:
            parse_reference(reference, scope)
        except ValueError as exc:
            errors[f"secrets.{name}"] = [str(exc)]
    if errors:
        raise ValidationError(errors)
    return dict(value)


def rebase_references(refs, source: SecretScope, target: SecretScope) -> dict:
    """The same secrets one environment on (promotion): a reference under ``source``'s prefix names
    the same relative path under ``target``'s; any other is kept, for validation to name it."""
    if not isinstance(refs, dict):
        return refs
    rebased = {}
    for name, reference in refs.items():
        match = REFERENCE_RE.fullmatch(reference) if isinstance(reference, str) else None
        if match and match["path"].startswith(source.prefix):
            path = target.prefix + match["path"][len(source.prefix) :]
            reference = str(SecretRef(match["mount"], path, match["key"]))
        rebased[name] = reference
    return rebased


def reference_problems(refs, scope: SecretScope) -> list[dict[str, str]]:
    """Every reference of a stored job that its scope no longer allows (for the migration check):
    field, reference, allowed prefix and the reason."""
    if not isinstance(refs, dict):
        return [
            {
                "field": "secrets",
                "reference": str(refs)[:200],
                "allowed": allowed_prefix(scope),
                "error": "not a mapping",
            }
        ]
    problems = []
    for name, reference in refs.items():
        try:
            parse_reference(reference, scope)
        except ValueError as exc:
            problems.append(
                {
                    "field": f"secrets.{name}",
                    "reference": str(reference)[:400],
                    "allowed": allowed_prefix(scope),
                    "error": str(exc),
                }
            )
    return problems


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


def run_client(scope: SecretScope, *, uses: int) -> hvac.Client:
    """A client holding a fresh child token that Vault lets read only ``scope``'s prefix.

    The AppRole token itself reads nothing: it may only create tokens through the
    ``governor-run`` role, whose tokens may only hold ``governor-run.*`` policies. The child
    token lives RUN_TOKEN_TTL_SECONDS, is never renewable and allows ``uses`` requests.
    """

    def mint(client: hvac.Client) -> dict:
        return client.auth.token.create(
            policies=[scope.policy_name],
            role_name=RUN_TOKEN_ROLE,
            ttl=f"{RUN_TOKEN_TTL_SECONDS}s",
            explicit_max_ttl=f"{RUN_TOKEN_TTL_SECONDS}s",
            num_uses=uses,
            renewable=False,
            no_default_policy=True,
            meta={"scope": str(scope)},
        )

    what = f"creating a run token for {scope}"
    try:
        try:
            created = mint(_authenticated_client())
        except vault_errors.Forbidden:
            # The AppRole token may have expired or been revoked since login: log in again once.
            created = mint(_authenticated_client(fresh=True))
    except Exception as exc:
        raise _translate(exc, what) from None
    return hvac.Client(
        url=settings.VAULT_ADDR, token=created["auth"]["client_token"], timeout=settings.VAULT_TIMEOUT_SECONDS
    )


def read_values(client: hvac.Client, parsed: dict[str, SecretRef]) -> dict[str, str]:
    """Read each reference with ``client`` (env var name -> value), or raise SecretError.

    No check of its own: what the token may read is Vault's decision (``run_client``)."""
    values: dict[str, str] = {}
    for name, ref in parsed.items():
        try:
            data = _read(client, ref)
        except vault_errors.Forbidden:
            raise SecretError(
                f"Vault denied reading {ref} (permission denied: the run's token reads only its own "
                "prefix, or the token expired or was revoked)."
            ) from None
        except Exception as exc:
            raise _translate(exc, f"reading {ref}") from None
        if ref.key not in data:
            raise SecretError(f"Vault secret {ref.mount}/{ref.path} has no key {ref.key!r}.")
        value = data[ref.key]
        if not isinstance(value, str):
            value = json.dumps(value)
        if value == "":
            raise SecretError(f"Vault secret {ref} is empty; refusing to run with an empty value.")
        values[name] = value
    return values


def resolve_secrets(refs: dict[str, str], tenant, *, environment, team, obj=None) -> dict[str, str]:
    """Read every referenced value (env var name -> value) or raise SecretError; nothing partial.

    Each reference is checked against the job's scope again (a reference valid at approval may
    not be after a tenant switches to team scoping, or a reference from before scoping by
    environment), then read with a token limited to that scope. Each read is audited (the
    reference only, never the value) in the tenant's chain.
    """
    from . import audit
    from .models import AuditAction

    if not refs:
        return {}
    scope = SecretScope.of(tenant, environment, team)
    parsed: dict[str, SecretRef] = {}
    for name, reference in refs.items():
        try:
            parsed[name] = parse_reference(reference, scope)
        except ValueError as exc:
            raise SecretError(f"secrets.{name}: {exc} Nothing was read; fix the job's reference.") from None
    values = read_values(run_client(scope, uses=len(parsed)), parsed)
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

# The AppRole's own policy: mint run tokens through the run token role, nothing else (it reads no
# secret itself, so a bug that skips our check still meets Vault's per-scope policy).
APPROLE_POLICY = f"""path "auth/token/create/{RUN_TOKEN_ROLE}" {{
  capabilities = ["update"]
}}
"""


def scope_policy(scope: SecretScope, mounts=None) -> str:
    """Read-only access to one scope's prefix on each allowed KV v2 mount, and nothing else."""
    return "\n".join(
        f'path "{mount}/data/{scope.prefix}*" {{\n  capabilities = ["read"]\n}}\n'
        for mount in (mounts or settings.VAULT_MOUNTS)
    )


def current_scopes() -> list[SecretScope]:
    """Every scope a job can have today: each tenant's environments, times its teams where the
    tenant scopes secrets by team."""
    from .models import Environment, Team, Tenant

    teams: dict[int, list[str]] = {}
    for tenant_id, slug in Team.objects.values_list("tenant_id", "slug"):
        teams.setdefault(tenant_id, []).append(slug)
    by_team = dict(Tenant.objects.values_list("pk", "secrets_by_team"))
    scopes: list[SecretScope] = []
    for tenant_id, tenant_slug, env_slug in Environment.objects.values_list("tenant_id", "tenant__slug", "slug"):
        if by_team.get(tenant_id):
            scopes.extend(SecretScope(tenant_slug, env_slug, team) for team in teams.get(tenant_id, []))
        else:
            scopes.append(SecretScope(tenant_slug, env_slug))
    return sorted(scopes, key=lambda scope: scope.parts)


def wanted_policies(scopes) -> dict[str, str]:
    """Every policy Governor keeps in Vault: the AppRole's and one per scope."""
    return {POLICY_NAME: APPROLE_POLICY, **{scope.policy_name: scope_policy(scope) for scope in scopes}}


POLICY_ADMIN_NAME = "governor-policy-admin"
# What VAULT_POLICY_TOKEN needs, and nothing more: the 'governor' policy and the per-scope
# 'governor-run.*' policies (listed to remove those of deleted environments and teams).
POLICY_ADMIN_POLICY = f"""path "sys/policies/acl/{POLICY_NAME}" {{
  capabilities = ["read", "create", "update"]
}}

path "sys/policy/{POLICY_NAME}" {{
  capabilities = ["read", "create", "update"]
}}

path "sys/policies/acl/{RUN_POLICY_PREFIX}*" {{
  capabilities = ["read", "create", "update", "delete"]
}}

path "sys/policies/acl" {{
  capabilities = ["list"]
}}
"""


def setup_run_token_role(root: hvac.Client) -> None:
    """The token role run tokens are minted through (an admin token: token roles need sudo)."""
    # Children of the AppRole token (revoked with it), never renewable, holding only a scope policy.
    root.adapter.post(
        f"/v1/auth/token/roles/{RUN_TOKEN_ROLE}",
        json={
            "allowed_policies_glob": [f"{RUN_POLICY_PREFIX}*"],
            "disallowed_policies": ["root", POLICY_NAME, POLICY_ADMIN_NAME],
            "orphan": False,
            "renewable": False,
            "token_explicit_max_ttl": f"{RUN_TOKEN_TTL_SECONDS}s",
            "token_no_default_policy": True,
            "token_type": "service",
        },
    )


def setup_approle(root: hvac.Client, scopes=()) -> dict[str, str]:
    """Create or update the AppRole, the run token role and the policies with a root/admin token;
    return role and secret ids."""
    if "approle/" not in root.sys.list_auth_methods()["data"]:
        root.sys.enable_auth_method("approle")
    for mount in settings.VAULT_MOUNTS:
        if f"{mount}/" not in root.sys.list_mounted_secrets_engines()["data"]:
            root.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    root.sys.create_or_update_policy(name=POLICY_ADMIN_NAME, policy=POLICY_ADMIN_POLICY)
    sync_policies(root, scopes)
    setup_run_token_role(root)
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


def _current_policy(client: hvac.Client, name: str) -> str | None:
    try:
        return client.sys.read_acl_policy(name=name)["data"]["policy"]
    except vault_errors.InvalidPath:
        return None
    except vault_errors.Forbidden:
        # A token allowed to write but not to read the policy: write it every time.
        return None


def sync_policies(client: hvac.Client, scopes) -> int:
    """Make Vault hold exactly Governor's policies for ``scopes``: write those that differ, delete
    the ``governor-run.*`` policies of scopes that are gone. Return how many were changed."""
    wanted = wanted_policies(scopes)
    changed = 0
    for name, text in wanted.items():
        if _current_policy(client, name) != text:
            client.sys.create_or_update_acl_policy(name=name, policy=text)
            changed += 1
    try:
        existing = client.sys.list_acl_policies()["data"]["keys"]
    except vault_errors.InvalidPath:
        existing = []
    for name in existing:
        if name.startswith(RUN_POLICY_PREFIX) and name not in wanted:
            client.sys.delete_acl_policy(name=name)
            changed += 1
    return changed


# --- keeping the policies in step with the tenants (a policy-admin token, never the AppRole) --------

_last_failure = ""


def policy_token() -> str:
    return settings.VAULT_POLICY_TOKEN or settings.VAULT_TOKEN


def reconcile_policy(*, reason: str, tenant_id: int | None = None) -> str:
    """Make Vault's policies cover exactly the tenants, environments and teams in the database.

    Answers "written", "unchanged", "unconfigured" (no policy token in this process) or "failed".
    Never raises and is never called inside a transaction (creating a tenant, environment or team
    runs it on commit, the scheduler periodically): a failure is logged as an error and audited, in
    the tenant's chain when a creation asked for it, and the scheduler's next reconcile tries again.
    """
    from . import audit
    from .models import AuditAction, Tenant

    global _last_failure
    token = policy_token()
    if not token:
        # Expected in web processes and in seed_demo (before Vault is up): the scheduler, which holds
        # the policy token, reconciles periodically, so this is not worth a warning in every process.
        log.info(
            "Vault policy not updated (%s): no VAULT_POLICY_TOKEN in this process; the scheduler reconciles it "
            "if it holds one, otherwise run 'manage.py vault_setup --policy-only'",
            reason,
        )
        return "unconfigured"
    tenants = Tenant.objects.count()
    scopes = current_scopes()
    client = hvac.Client(url=settings.VAULT_ADDR, token=token, timeout=settings.VAULT_TIMEOUT_SECONDS)
    try:
        with contextlib.suppress(Exception):
            # A periodic policy token stays valid as long as it is renewed; the reconcile is its heartbeat.
            client.auth.token.renew_self()
        changed = sync_policies(client, scopes)
    except Exception as exc:
        error = str(_translate(exc, "writing Governor's Vault policies")).replace("; the run was not started", "")
        log.error("Vault policy NOT updated (%s): %s; new scopes cannot read their secrets until it is", reason, error)
        # One event per creation, and one per new kind of failure of the periodic reconcile.
        if tenant_id is not None or error != _last_failure:
            audit.record(
                AuditAction.VAULT_POLICY_FAILED,
                tenant=tenant_id,
                data={"reason": reason, "error": error, "tenants": tenants},
            )
        _last_failure = error
        return "failed"
    _last_failure = ""
    if not changed:
        return "unchanged"
    log.info("Vault policies now cover %d tenant(s), %d scope(s) (%s)", tenants, len(scopes), reason)
    # Counts, not slugs: a tenant's chain must not name the other tenants.
    audit.record(
        AuditAction.VAULT_POLICY_APPLIED,
        tenant=tenant_id,
        data={"reason": reason, "tenants": tenants, "scopes": len(scopes)},
    )
    return "written"
