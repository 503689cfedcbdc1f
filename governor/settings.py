"""Governor settings.

Everything comes from environment variables read through the small typed
helpers below; with none set, the app runs in development mode on SQLite with
django-q2's ORM broker. Production (``GOVERNOR_ENV=production``) refuses to
start without ``SECRET_KEY`` and ``DATABASE_URL``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def database_from_url(url: str) -> dict:
    """Turn ``postgres://user:pw@host:port/name`` or ``sqlite:///path`` into a DATABASES entry."""
    parsed = urlparse(url)
    options = dict(parse_qsl(parsed.query))
    if parsed.scheme == "sqlite":
        # sqlite:///relative.db or sqlite:////absolute/path.db
        path = unquote(parsed.path[1:]) if parsed.path.startswith("/") else parsed.path
        return sqlite_database(path or str(BASE_DIR / "var" / "governor.sqlite3"))
    if parsed.scheme in {"postgres", "postgresql", "pgsql"}:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path.lstrip("/")),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            # libpq multi-host (``h1:p1,h2:p2`` with ``target_session_attrs=read-write`` in the
            # query): HOST and PORT become comma lists, which libpq tries in order.
            **_pg_hosts(parsed.netloc.rpartition("@")[2]),
            # Workers and the scheduler keep their connection: django-q2
            # otherwise reconnects on every broker operation.
            "CONN_MAX_AGE": env_int("DB_CONN_MAX_AGE", 600),
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": options,
        }
    raise ImproperlyConfigured(f"DATABASE_URL scheme {parsed.scheme!r} is not supported (use postgres:// or sqlite://)")


def _pg_hosts(netloc: str) -> dict:
    """HOST and PORT of ``host[:port][,host[:port]...]`` (IPv6 in brackets), as libpq's comma lists."""
    hosts, ports = [], []
    for item in netloc.split(","):
        host, port = item, ""
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest.lstrip(":")
        elif ":" in item:
            host, port = item.rsplit(":", 1)
        if port and not port.isdigit():
            raise ImproperlyConfigured(f"DATABASE_URL port {port!r} is not a number")
        hosts.append(unquote(host))
        ports.append(port)
    if len(hosts) == 1:
        return {"HOST": hosts[0], "PORT": ports[0]}
    # libpq: one port for all hosts, or one per host (an empty one means the default 5432).
    return {"HOST": ",".join(hosts), "PORT": ",".join(port or "5432" for port in ports)}


def sqlite_database(path: str) -> dict:
    directory = Path(path).parent
    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)
        # The data directory (var/) is also the way to the jobs' run root (GOVERNOR_RUN_ROOT):
        # sandboxes pass through it as their own uid, so it is 0711 (no listing), whatever the umask.
        directory.chmod(0o711)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        "OPTIONS": {
            # WAL lets the web server, scheduler and workers read while one writes;
            # IMMEDIATE transactions take the write lock up front so concurrent
            # writers wait (busy timeout) instead of failing on lock upgrade.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            # Seconds a writer waits for the write lock before "database is locked"; keep it
            # well below GOVERNOR_RUN_LEASE_SECONDS (docs/execution.md, supervision).
            "timeout": env_int("GOVERNOR_SQLITE_TIMEOUT_SECONDS", 30),
        },
        "CONN_MAX_AGE": 600,
        "TEST": {"NAME": str(BASE_DIR / "var" / "test-governor.sqlite3")},
    }


GOVERNOR_ENV = env_str("GOVERNOR_ENV", "development")
if GOVERNOR_ENV not in {"development", "production"}:
    raise ImproperlyConfigured("GOVERNOR_ENV must be 'development' or 'production'")
PRODUCTION = GOVERNOR_ENV == "production"

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set in production (GOVERNOR_ENV=production)")
    SECRET_KEY = "dev-insecure-governor-key-do-not-use-in-production-0123456789"

DEBUG = env_bool("DEBUG", not PRODUCTION)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["*"])
if PRODUCTION and not ALLOWED_HOSTS:
    # Without it every request would be refused with a bare 400; say why at start instead.
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set in production (comma-separated host names)")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

DATABASE_URL = env_str("DATABASE_URL")
if PRODUCTION and not DATABASE_URL:
    raise ImproperlyConfigured("DATABASE_URL must be set in production (GOVERNOR_ENV=production)")
DATABASES = {
    "default": database_from_url(DATABASE_URL)
    if DATABASE_URL
    else sqlite_database(str(BASE_DIR / "var" / "governor.sqlite3"))
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "axes",
    "django_filters",
    "drf_spectacular",
    # Swagger UI's files as static files of our own: /api/docs/ needs no CDN (docs/api.md).
    "drf_spectacular_sidecar",
    "guardian",
    "simple_history",
    "django_q",
    "governance",
    "notifications",
    "jobs",
    "monitoring",
    "approvals",
    "manifests",
    "insights",
    "governor",
]

MIDDLEWARE = [
    # First: /healthz and /readyz answer before host checks, redirects, sessions and auth (probes
    # come by address, over plain HTTP from inside).
    "governor.health.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (collected, hashed, compressed) before anything else touches the request.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "governance.security.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "governance.security.DeniedAccessAuditMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    # Last, as django-axes requires: turns a locked-out login into a 429.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "governor.urls"
WSGI_APPLICATION = "governor.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTHENTICATION_BACKENDS = [
    # First, so a locked-out client is refused before any password is checked.
    "governance.security.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
    # user.has_perm(perm, obj) for jobs, runs, changes, teams...: governance.access decides (see the module).
    "governance.backends.AccessBackend",
    # Role permissions on Scope rows, where guardian stores the grants.
    "guardian.backends.ObjectPermissionBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

# guardian: no anonymous user row; access is decided by governance.access.
ANONYMOUS_USER_NAME = None
GUARDIAN_RAISE_403 = False

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("GOVERNOR_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
# Production serves the build `collectstatic` writes (hashed names, gzip/brotli copies, a manifest)
# through WhiteNoise with far-future cache headers; a missing build is refused at start (preflight).
# Development serves the source directories as they change.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = not PRODUCTION

# The web server (scripts/serve.sh, governor/gunicorn_conf.py): gunicorn processes and threads each.
GOVERNOR_WEB_BIND = env_str("GOVERNOR_WEB_BIND", "127.0.0.1:8000")
GOVERNOR_WEB_WORKERS = env_int("GOVERNOR_WEB_WORKERS", 2)
GOVERNOR_WEB_THREADS = env_int("GOVERNOR_WEB_THREADS", 4)
GOVERNOR_WEB_TIMEOUT = env_int("GOVERNOR_WEB_TIMEOUT", 60)
if GOVERNOR_WEB_WORKERS < 1 or GOVERNOR_WEB_THREADS < 1:
    raise ImproperlyConfigured("GOVERNOR_WEB_WORKERS and GOVERNOR_WEB_THREADS must be 1 or more")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "governance.authentication.HashedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "governance.paging.ApiPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DATETIME_FORMAT": "%Y-%m-%dT%H:%M:%S.%fZ",
    "EXCEPTION_HANDLER": "governance.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Governor API",
    "DESCRIPTION": "Governed job scheduling: jobs, change requests, runs and audit.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from drf-spectacular-sidecar's static files, never a CDN: the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Tags and operation ids from the resource name (jobs, runs, ...), not the version prefix.
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Several models have a "status" or "action"; name each choice set after its model.
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "jobs.models.JobStatus",
        "RunStatusEnum": "jobs.models.RunStatus",
        "ChangeStatusEnum": "approvals.models.ChangeStatus",
        "ChangeActionEnum": "approvals.models.ChangeAction",
        "ChangeTargetKindEnum": "approvals.models.TargetKind",
        "WindowPolicyEnum": "jobs.models.WindowPolicy",
        "AuditActionEnum": "governance.models.AuditAction",
        "AlertKindEnum": "jobs.models.AlertKind",
        "JobKindEnum": "jobs.models.JobKind",
        "ChangeWarningKindEnum": "approvals.warnings.WarningKind",
        # A job's criticality, a recovery rule's and an alert's severity share their four levels.
        "CriticalityEnum": "jobs.models.Criticality",
        "RecoveryActionKindEnum": "monitoring.models.RecoveryActionKind",
        "ChannelKindEnum": "notifications.models.ChannelKind",
        "NotificationStateEnum": "notifications.models.NotificationState",
        "IncidentStateEnum": "monitoring.models.IncidentState",
        "AlertRuleKindEnum": "monitoring.models.RuleKind",
        "AlertRuleScopeEnum": "monitoring.models.RuleScope",
    },
}

# django-q2: the ORM broker on the default database by default, Redis by GOVERNOR_Q_BROKER=redis
# (or REDIS_URL alone, as before).
Q_CLUSTER = {
    "name": "governor",
    "workers": env_int("GOVERNOR_WORKERS", 2),
    "recycle": 500,
    # Governor's executor enforces each job's own timeout; this is only a backstop.
    "timeout": env_int("GOVERNOR_TASK_TIMEOUT", 24 * 3600),
    # The ORM broker redelivers an unacknowledged task after this; the run claim makes that harmless.
    "retry": env_int("GOVERNOR_TASK_RETRY", env_int("GOVERNOR_TASK_TIMEOUT", 24 * 3600) + 60),
    # A run is claimed with a conditional update, so a redelivered task is harmless;
    # still, never let django-q2 retry by itself: retries are Governor's policy.
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
    # How long the ORM broker's pusher sleeps on an empty queue: the queue wait of a run due
    # below capacity is about half of it (a blocking pop on Redis does not poll).
    "poll": env_int("GOVERNOR_Q_POLL_MS", 50) / 1000,
    "label": "Task queue",
}
REDIS_URL = env_str("REDIS_URL")
# "orm" (at-least-once: an unacknowledged task is redelivered after "retry") or "redis"
# (at-most-once: a task popped by a worker that dies is gone). Either way the run claim
# decides, and the lease sweep finds the run a dead worker held.
GOVERNOR_Q_BROKER = env_str("GOVERNOR_Q_BROKER", "redis" if REDIS_URL else "orm").strip().lower()
if GOVERNOR_Q_BROKER == "redis":
    if not REDIS_URL:
        raise ImproperlyConfigured("GOVERNOR_Q_BROKER=redis needs REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
    Q_CLUSTER["redis"] = REDIS_URL
elif GOVERNOR_Q_BROKER == "orm":
    Q_CLUSTER["orm"] = "default"
else:
    raise ImproperlyConfigured(f"GOVERNOR_Q_BROKER must be 'orm' or 'redis', got {GOVERNOR_Q_BROKER!r}")

# Scheduler
GOVERNOR_SCHEDULER_MAX_SLEEP = float(env_int("GOVERNOR_SCHEDULER_MAX_SLEEP_MS", 1000)) / 1000
# A follower scheduler takes over this long after the leader dies.
GOVERNOR_SCHEDULER_LEASE_SECONDS = float(env_int("GOVERNOR_SCHEDULER_LEASE_MS", 15000)) / 1000
# catchup=skip still runs a slot reached this late (a slow tick, a leader handover).
GOVERNOR_MISFIRE_GRACE_SECONDS = float(env_int("GOVERNOR_MISFIRE_GRACE_SECONDS", 60))
# Queue reconciler (docs/scheduling.md): a run queued this long with no live queue message and no
# claim is enqueued again; after GOVERNOR_REQUEUE_MAX such re-enqueues it is left to an operator with
# an alert, and stops counting as active for its job's concurrency policy.
GOVERNOR_REQUEUE_AFTER_SECONDS = float(env_int("GOVERNOR_REQUEUE_AFTER_MS", 20000)) / 1000
GOVERNOR_REQUEUE_MAX = env_int("GOVERNOR_REQUEUE_MAX", 3)
# Backpressure: past this many queued runs of a tenant (0: no bound; a tenant's execution policy
# may override it), runs of jobs below GOVERNOR_BACKPRESSURE_PRIORITY are deferred.
GOVERNOR_QUEUE_DEPTH_LIMIT = env_int("GOVERNOR_QUEUE_DEPTH_LIMIT", 10000)
GOVERNOR_BACKPRESSURE_PRIORITY = env_int("GOVERNOR_BACKPRESSURE_PRIORITY", 5)
GOVERNOR_OUTPUT_HEAD_BYTES = env_int("GOVERNOR_OUTPUT_HEAD_BYTES", 32 * 1024)
GOVERNOR_OUTPUT_TAIL_BYTES = env_int("GOVERNOR_OUTPUT_TAIL_BYTES", 32 * 1024)
GOVERNOR_RUN_ROOT = env_str("GOVERNOR_RUN_ROOT", str(BASE_DIR / "var" / "runs"))
# Run history archives (manage.py archive_runs): one zstd JSON Lines file and a manifest per tenant and month.
GOVERNOR_ARCHIVE_DIR = env_str("GOVERNOR_ARCHIVE_DIR", str(BASE_DIR / "var" / "archive"))
# Execution: the sandbox jobs run in (jobs/sandbox.py), their default limits and the worker lease.
# Each run is given a uid of its own from this range, above the system and the usual subuid
# ranges (useradd hands out 100000-600100000; systemd-nspawn 524288-1879048191).
GOVERNOR_SANDBOX_UIDS = env_str("GOVERNOR_SANDBOX_UIDS", "1879048192-1879113727")
try:
    from governance.envparse import parse_uid_range

    parse_uid_range(GOVERNOR_SANDBOX_UIDS)
except ValueError as exc:
    raise ImproperlyConfigured(f"GOVERNOR_SANDBOX_UIDS {exc}") from None
GOVERNOR_BWRAP = env_str("GOVERNOR_BWRAP", "/usr/bin/bwrap")
# Host directories jobs may read besides /usr (e.g. /opt/acme for allow-listed programs there).
GOVERNOR_SANDBOX_READ_ONLY = [os.path.abspath(path) for path in env_list("GOVERNOR_SANDBOX_READ_ONLY", [])]
GOVERNOR_DEFAULT_ALLOWED_EXECUTABLES = env_list(
    "GOVERNOR_DEFAULT_ALLOWED_EXECUTABLES", ["/bin/*", "/usr/bin/*", "/usr/local/bin/*", "/opt/*"]
)
GOVERNOR_DEFAULT_LIMITS = {
    "cpu_seconds": env_int("GOVERNOR_LIMIT_CPU_SECONDS", 3600),
    "memory_mb": env_int("GOVERNOR_LIMIT_MEMORY_MB", 4096),
    "file_size_mb": env_int("GOVERNOR_LIMIT_FILE_SIZE_MB", 1024),
    "processes": env_int("GOVERNOR_LIMIT_PROCESSES", 256),
    "open_files": env_int("GOVERNOR_LIMIT_OPEN_FILES", 1024),
}
GOVERNOR_RUN_LEASE_SECONDS = env_int("GOVERNOR_RUN_LEASE_SECONDS", 30)
# How long a worker whose job has finished keeps trying to record its result while the database
# is unreachable (0.1 s doubling to 1 s between tries) before it leaves the run to the lease sweep.
GOVERNOR_RECORD_RETRY_SECONDS = float(env_int("GOVERNOR_RECORD_RETRY_SECONDS", 300))
# A run whose secrets Vault cannot give (sealed, unreachable) never started: it is retried up to
# this many attempts in all (or the job's own max_attempts, if higher), the first wait drawn up
# to this many seconds and doubling, before it fails and alerts.
GOVERNOR_SECRETS_MAX_ATTEMPTS = env_int("GOVERNOR_SECRETS_MAX_ATTEMPTS", 3)
GOVERNOR_SECRETS_BACKOFF_SECONDS = float(env_int("GOVERNOR_SECRETS_BACKOFF_SECONDS", 10))
GOVERNOR_PUBLIC_URL = env_str("GOVERNOR_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
GOVERNOR_DEMO_PASSWORD = env_str("GOVERNOR_DEMO_PASSWORD", "governor-demo")

# Change control and job lifecycle
GOVERNOR_CHANGE_EXPIRY_HOURS = env_int("GOVERNOR_CHANGE_EXPIRY_HOURS", 14 * 24)
# Insights (docs/insights.md): a cached result older than this is recomputed when a page asks.
GOVERNOR_INSIGHTS_MAX_AGE_HOURS = env_int("GOVERNOR_INSIGHTS_MAX_AGE_HOURS", 26)
GOVERNOR_REVIEW_PERIOD_DAYS = env_int("GOVERNOR_REVIEW_PERIOD_DAYS", 365)
GOVERNOR_SUNSET_WARNING_DAYS = env_int("GOVERNOR_SUNSET_WARNING_DAYS", 14)
# Jobs as code: the largest manifest request body (or all files one CLI command reads) and the most
# jobs (one per job and environment it lists) one validate, plan or apply handles; beyond: refused.
GOVERNOR_MANIFEST_MAX_BYTES = env_int("GOVERNOR_MANIFEST_MAX_BYTES", 5 * 1024 * 1024)
GOVERNOR_MANIFEST_MAX_JOBS = env_int("GOVERNOR_MANIFEST_MAX_JOBS", 2000)


def env_networks(name: str, default: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for item in env_list(name, default):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ImproperlyConfigured(f"{name} must list CIDRs (e.g. 10.0.0.0/8), got {item!r}") from None
    return networks


# /metrics (docs/operations.md, Metrics): scraped from these networks without a token (loopback by
# default; "none" allows no address), or from anywhere with "Authorization: Bearer <GOVERNOR_METRICS_TOKEN>".
GOVERNOR_METRICS_ALLOW = (
    []
    if env_str("GOVERNOR_METRICS_ALLOW").strip().lower() == "none"
    else env_networks("GOVERNOR_METRICS_ALLOW", ["127.0.0.0/8", "::1/128"])
)
GOVERNOR_METRICS_TOKEN = env_str("GOVERNOR_METRICS_TOKEN")
if GOVERNOR_METRICS_TOKEN and len(GOVERNOR_METRICS_TOKEN) < 32:
    raise ImproperlyConfigured("GOVERNOR_METRICS_TOKEN must be at least 32 characters (e.g. openssl rand -hex 32)")
# Finished runs and durations cover this window; the duration histogram keeps the jobs with most runs.
GOVERNOR_METRICS_WINDOW_SECONDS = env_int("GOVERNOR_METRICS_WINDOW_SECONDS", 86400)
GOVERNOR_METRICS_MAX_JOBS = env_int("GOVERNOR_METRICS_MAX_JOBS", 500)
if GOVERNOR_METRICS_WINDOW_SECONDS < 60 or GOVERNOR_METRICS_MAX_JOBS < 0:
    raise ImproperlyConfigured("GOVERNOR_METRICS_WINDOW_SECONDS must be >= 60 and GOVERNOR_METRICS_MAX_JOBS >= 0")

# Email (docs/notifications.md): Django's mail framework; the console backend when no host is set.
EMAIL_HOST = env_str("EMAIL_HOST")
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL are exclusive: STARTTLS or implicit TLS, not both")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "governor@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# Notification delivery by the monitor (docs/notifications.md).
GOVERNOR_NOTIFY_TIMEOUT_SECONDS = env_int("GOVERNOR_NOTIFY_TIMEOUT_SECONDS", 10)
GOVERNOR_NOTIFY_WORKERS = env_int("GOVERNOR_NOTIFY_WORKERS", 4)
GOVERNOR_NOTIFY_BATCH = env_int("GOVERNOR_NOTIFY_BATCH", 50)
GOVERNOR_NOTIFY_MAX_ATTEMPTS = env_int("GOVERNOR_NOTIFY_MAX_ATTEMPTS", 8)
GOVERNOR_NOTIFY_BACKOFF_SECONDS = env_int("GOVERNOR_NOTIFY_BACKOFF_SECONDS", 30)
GOVERNOR_NOTIFY_BACKOFF_CAP_SECONDS = env_int("GOVERNOR_NOTIFY_BACKOFF_CAP_SECONDS", 3600)
# The right-hand side of every notification's Message-ID: the same on every host, so a copy sent again
# after a crash carries the same id.
GOVERNOR_NOTIFY_MESSAGE_ID_DOMAIN = env_str("GOVERNOR_NOTIFY_MESSAGE_ID_DOMAIN", "governor.invalid")
if (
    min(
        GOVERNOR_NOTIFY_TIMEOUT_SECONDS,
        GOVERNOR_NOTIFY_WORKERS,
        GOVERNOR_NOTIFY_BATCH,
        GOVERNOR_NOTIFY_MAX_ATTEMPTS,
        GOVERNOR_NOTIFY_BACKOFF_SECONDS,
    )
    < 1
    or GOVERNOR_NOTIFY_BACKOFF_CAP_SECONDS < GOVERNOR_NOTIFY_BACKOFF_SECONDS
):
    raise ImproperlyConfigured(
        "GOVERNOR_NOTIFY_* must be at least 1, and GOVERNOR_NOTIFY_BACKOFF_CAP_SECONDS at least the backoff"
    )

# Vault (OpenBao in development and tests)
VAULT_ADDR = env_str("VAULT_ADDR", "http://127.0.0.1:8200")
# /readyz checks Vault only when an address was given (not the development default).
VAULT_CONFIGURED = bool(os.environ.get("VAULT_ADDR"))
# An admin token used only by ``manage.py vault_setup``; the app itself logs in with AppRole.
VAULT_TOKEN = env_str("VAULT_TOKEN")
# A token allowed only to read and write the 'governor' policy (docs/operations.md): with it, creating
# a tenant updates the policy on commit, and the scheduler reconciles it. Defaults to VAULT_TOKEN.
VAULT_POLICY_TOKEN = env_str("VAULT_POLICY_TOKEN")
# How often the scheduler checks that the policy covers every tenant (0: never).
VAULT_POLICY_RECONCILE_SECONDS = env_int("VAULT_POLICY_RECONCILE_SECONDS", 300)
VAULT_ROLE_ID = env_str("VAULT_ROLE_ID")
VAULT_SECRET_ID = env_str("VAULT_SECRET_ID")
# Written by vault_setup (mode 0600) and read when the two variables above are unset.
VAULT_APPROLE_FILE = env_str("VAULT_APPROLE_FILE", str(BASE_DIR / "var" / "vault-approle.json"))
VAULT_MOUNTS = env_list("VAULT_MOUNTS", ["secret"])
VAULT_TENANT_PREFIX = env_str("VAULT_TENANT_PREFIX", "governor")
VAULT_TIMEOUT_SECONDS = env_int("VAULT_TIMEOUT_SECONDS", 5)
VAULT_TOKEN_TTL_SECONDS = env_int("VAULT_TOKEN_TTL_SECONDS", 900)

# Security: strict in production, relaxed for local HTTP development.
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Login throttling (django-axes): lock a username from one address after repeated failures.
AXES_FAILURE_LIMIT = env_int("GOVERNOR_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("GOVERNOR_LOGIN_LOCKOUT_MINUTES", 15))
# Username and address together: an attacker elsewhere cannot lock a real user out.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False
# API tokens (governance.tokens): days until expiry by default, and the longest allowed.
GOVERNOR_TOKEN_DAYS = env_int("GOVERNOR_TOKEN_DAYS", 30)
GOVERNOR_TOKEN_MAX_DAYS = env_int("GOVERNOR_TOKEN_MAX_DAYS", 365)
# Content security policy (governance.security): our own origin only, no inline script, no framing.
GOVERNOR_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
# Swagger UI (our own static files, its bootstrap a script of its own) styles itself inline;
# only /api/docs/ gets this. Scripts stay 'self' only.
GOVERNOR_CSP_API_DOCS = {
    **GOVERNOR_CSP,
    "style-src": ["'self'", "'unsafe-inline'"],
}
# SIEM forwarding (manage.py forward_audit): syslog+tcp://host:port and/or http(s) URLs.
GOVERNOR_SIEM_DESTINATIONS = env_list("GOVERNOR_SIEM_DESTINATIONS", [])
GOVERNOR_SIEM_TIMEOUT_SECONDS = env_int("GOVERNOR_SIEM_TIMEOUT_SECONDS", 10)
GOVERNOR_SIEM_HOSTNAME = env_str("GOVERNOR_SIEM_HOSTNAME")
# Audit chain (governance.audit): each event is an HMAC-SHA256 under this key, which must not live in
# the database, so a database writer cannot re-hash a rewritten chain. Development derives it from
# SECRET_KEY under its own label (the dev SECRET_KEY is public: so is that chain's key).
GOVERNOR_AUDIT_KEY = env_str("GOVERNOR_AUDIT_KEY")
if not GOVERNOR_AUDIT_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured(
            "GOVERNOR_AUDIT_KEY must be set in production (32+ random characters, e.g. `openssl rand -hex 32`)"
        )
    GOVERNOR_AUDIT_KEY = hmac.new(SECRET_KEY.encode(), b"governor/audit-chain/v1", hashlib.sha256).hexdigest()
elif PRODUCTION and (len(GOVERNOR_AUDIT_KEY) < 32 or GOVERNOR_AUDIT_KEY == SECRET_KEY):
    raise ImproperlyConfigured("GOVERNOR_AUDIT_KEY must be 32+ characters and differ from SECRET_KEY")
# Signed checkpoints of each chain's head (manage.py audit_checkpoint), appended outside the database.
GOVERNOR_AUDIT_CHECKPOINT_DIR = env_str("GOVERNOR_AUDIT_CHECKPOINT_DIR", str(BASE_DIR / "var" / "audit-checkpoints"))
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    # Probes reach /healthz and /readyz over plain HTTP from inside (the middleware answers first;
    # this keeps them unredirected should the order change).
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# Only behind a TLS-terminating proxy that sets (and strips from clients) this header may it say
# the request came over HTTPS: GOVERNOR_TLS_PROXY_HEADER=X-Forwarded-Proto. Unset: nothing is trusted.
GOVERNOR_TLS_PROXY_HEADER = env_str("GOVERNOR_TLS_PROXY_HEADER").strip()
if GOVERNOR_TLS_PROXY_HEADER:
    if not all(part.isalnum() for part in GOVERNOR_TLS_PROXY_HEADER.split("-")):
        raise ImproperlyConfigured(
            f"GOVERNOR_TLS_PROXY_HEADER must be a header name such as X-Forwarded-Proto, got {GOVERNOR_TLS_PROXY_HEADER!r}"
        )
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + GOVERNOR_TLS_PROXY_HEADER.upper().replace("-", "_"), "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "utc": {
            "()": "governance.logging.UTCFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        }
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "utc"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
