"""Settings come from the environment: zero configuration in development, loud refusals on
missing or malformed values, and a production mode that passes ``check --deploy`` cleanly.

Most of these start ``manage.py check`` in a subprocess with a controlled environment, because
settings are read once per process."""

from __future__ import annotations

import os
import secrets

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from governor.settings import database_from_url
from tests import procs


def clean_env(**values: str) -> dict[str, str]:
    """Only what a process needs to run, plus ``values``: no setting leaks in from this shell."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ}
    env["DJANGO_SETTINGS_MODULE"] = "governor.settings"
    env.update(values)
    return env


def production_env(**overrides: str) -> dict[str, str]:
    values = {
        "GOVERNOR_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": "postgres://governor:s3cret@db.internal:5432/governor",
        "ALLOWED_HOSTS": "governor.example.com",
        "GOVERNOR_AUDIT_KEY": secrets.token_hex(32),
    }
    values.update(overrides)
    return clean_env(**{name: value for name, value in values.items() if value is not None})


def check(env: dict[str, str], *args: str):
    return procs.run_manage("check", *args, env=env)


def test_development_needs_no_environment_at_all():
    result = check(clean_env())
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_passes_check_deploy_without_a_single_warning():
    result = check(production_env(), "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("SECRET_KEY", "SECRET_KEY must be set in production"),
        ("DATABASE_URL", "DATABASE_URL must be set in production"),
        ("ALLOWED_HOSTS", "ALLOWED_HOSTS must be set in production"),
        ("GOVERNOR_AUDIT_KEY", "GOVERNOR_AUDIT_KEY must be set in production"),
    ],
)
def test_production_refuses_to_start_without_a_required_setting(missing, message):
    result = check(production_env(**{missing: None}))
    assert result.returncode != 0
    assert message in result.stderr


def test_check_deploy_fails_on_a_weak_secret_key_in_production():
    result = check(production_env(SECRET_KEY="short"), "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "security.W009" in result.stdout + result.stderr


def test_check_deploy_fails_when_debug_is_switched_on_in_production():
    result = check(production_env(DEBUG="true"), "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "security.W018" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DEBUG", "maybe", "DEBUG must be a boolean (true/false), got 'maybe'"),
        ("GOVERNOR_WORKERS", "two", "GOVERNOR_WORKERS must be an integer, got 'two'"),
        ("GOVERNOR_ENV", "staging", "GOVERNOR_ENV must be 'development' or 'production'"),
        ("DATABASE_URL", "mysql://db/governor", "DATABASE_URL scheme 'mysql' is not supported"),
    ],
)
def test_a_malformed_value_stops_the_process_with_a_message_naming_it(name, value, message):
    result = check(clean_env(**{name: value}))
    assert result.returncode != 0
    assert message in result.stderr
    assert "ImproperlyConfigured" in result.stderr


def test_database_url_switches_to_postgresql_with_every_part_decoded():
    db = database_from_url("postgres://gov%40ops:p%2Fss%3Aw@db.internal:6432/governor?sslmode=require")
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]) == (
        "gov@ops",
        "p/ss:w",
        "db.internal",
        "6432",
        "governor",
    )
    assert db["OPTIONS"] == {"sslmode": "require"}
    # Workers and schedulers keep their connection instead of reconnecting per query.
    assert db["CONN_MAX_AGE"] > 0 and db["CONN_HEALTH_CHECKS"] is True


def test_database_url_can_name_several_postgresql_nodes_for_libpq_to_pick_the_writable_one():
    db = database_from_url(
        "postgresql://gov:pw@db-a.internal:5433,db-b.internal,[::1]:6432/governor?target_session_attrs=read-write"
    )
    assert (db["HOST"], db["PORT"]) == ("db-a.internal,db-b.internal,::1", "5433,5432,6432")
    assert (db["USER"], db["PASSWORD"], db["NAME"]) == ("gov", "pw", "governor")
    assert db["OPTIONS"] == {"target_session_attrs": "read-write"}
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL port 'x' is not a number"):
        database_from_url("postgresql://gov@db-a:5432,db-b:x/governor")


def test_database_url_can_name_an_sqlite_file(tmp_path):
    db = database_from_url(f"sqlite:///{tmp_path}/g.sqlite3")
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == f"{tmp_path}/g.sqlite3"
    with pytest.raises(ImproperlyConfigured, match="not supported"):
        database_from_url("oracle://x/y")


@pytest.mark.django_db
def test_the_database_in_use_is_tuned_for_several_processes():
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            # WAL: readers (web, workers) never wait for the one writer; busy_timeout: writers
            # queue for the lock instead of failing with "database is locked".
            assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert cursor.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    else:
        assert connection.vendor == "postgresql"
        assert settings.DATABASES["default"]["CONN_MAX_AGE"] > 0


@pytest.mark.parametrize("key", ["short", "same-as-secret"])
def test_production_refuses_a_weak_audit_key(key):
    env = production_env()
    env["GOVERNOR_AUDIT_KEY"] = env["SECRET_KEY"] if key == "same-as-secret" else key
    result = check(env)
    assert result.returncode != 0
    assert "GOVERNOR_AUDIT_KEY must be 32+ characters and differ from SECRET_KEY" in result.stderr


def production_values(**overrides: str) -> list[str]:
    code = (
        "from django.conf import settings as s; "
        "print(s.STORAGES['staticfiles']['BACKEND']); "
        "print(s.MIDDLEWARE[s.MIDDLEWARE.index('django.middleware.security.SecurityMiddleware') + 1]); "
        "print(getattr(s, 'SECURE_PROXY_SSL_HEADER', None)); "
        "print(s.GOVERNOR_WEB_WORKERS, s.GOVERNOR_WEB_THREADS)"
    )
    result = procs.run_manage("shell", "-v0", "-c", code, env=production_env(**overrides))
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_production_serves_the_hashed_static_build_and_trusts_no_proxy_header_unless_told():
    storage, after_security, proxy_header, web = production_values()
    assert storage == "whitenoise.storage.CompressedManifestStaticFilesStorage"
    assert after_security == "whitenoise.middleware.WhiteNoiseMiddleware"
    # A client's own X-Forwarded-Proto must not pass for HTTPS when no proxy strips it.
    assert proxy_header == "None"
    assert web == "2 4"
    told = production_values(GOVERNOR_TLS_PROXY_HEADER="X-Forwarded-Proto", GOVERNOR_WEB_WORKERS="3")
    assert told[2] == "('HTTP_X_FORWARDED_PROTO', 'https')" and told[3] == "3 4"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GOVERNOR_TLS_PROXY_HEADER", "X-Forwarded-Proto: https", "GOVERNOR_TLS_PROXY_HEADER must be a header name"),
        ("GOVERNOR_WEB_WORKERS", "0", "GOVERNOR_WEB_WORKERS and GOVERNOR_WEB_THREADS must be 1 or more"),
    ],
)
def test_a_bad_web_setting_stops_the_process_naming_it(name, value, message):
    result = check(production_env(**{name: value}))
    assert result.returncode != 0
    assert message in result.stderr
