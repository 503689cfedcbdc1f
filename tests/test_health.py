"""/healthz and /readyz (governor/health.py) and ``manage.py preflight``, in process, on the pass's database.

/healthz touches nothing; /readyz runs one constant query and one round trip per configured dependency,
and answers 503 with a JSON body naming each failed check and its setting (never where it lives). Both
answer without a session, by address, over plain HTTP, before the HTTPS redirect."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from governor import health
from tests import procs
from tests.vault import free_port


@pytest.fixture
def probe_client(settings):
    # A production-like front: only the public name is allowed, plain HTTP is redirected.
    settings.ALLOWED_HOSTS = ["governor.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    return Client(HTTP_HOST="10.0.0.7:8000")


def test_healthz_answers_without_the_database_a_session_or_an_allowed_host(probe_client):
    # No django_db mark: any query would raise.
    response = probe_client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert not response.cookies and response["Cache-Control"] == "no-store"
    # Any other path from that address is still refused as a bad host.
    assert probe_client.get("/login/").status_code == 400


@pytest.mark.django_db
def test_readyz_is_ready_with_one_query(probe_client, django_assert_num_queries):
    with django_assert_num_queries(1):
        response = probe_client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "broker": "ok", "vault": "ok", "static": "ok"},
    }
    assert not response.cookies


@pytest.mark.django_db
def test_readyz_names_a_redis_broker_that_refuses_connections(probe_client, settings):
    port = free_port()  # nothing listens there
    settings.GOVERNOR_Q_BROKER = "redis"
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    response = probe_client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["failed"] == ["broker"]
    assert body["checks"]["database"] == "ok"
    # Probes are unauthenticated: the body names the setting and the reason, the log says where.
    assert body["errors"] == {"broker": "REDIS_URL: Redis refused the connection"}
    assert str(port) not in json.dumps(body)


@pytest.mark.django_db
def test_readyz_checks_vault_only_when_configured(probe_client, settings, bao_server):
    settings.VAULT_CONFIGURED = True
    settings.VAULT_ADDR = bao_server.addr
    assert probe_client.get("/readyz").json()["checks"]["vault"] == "ok"
    settings.VAULT_ADDR = f"http://127.0.0.1:{free_port()}"
    response = probe_client.get("/readyz")
    assert response.status_code == 503 and response.json()["failed"] == ["vault"]
    assert response.json()["errors"] == {"vault": "VAULT_ADDR: Vault is unreachable"}
    settings.VAULT_CONFIGURED = False
    assert probe_client.get("/readyz").status_code == 200


@pytest.mark.django_db
def test_readyz_names_a_missing_static_build_in_production(probe_client, settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }
    settings.STATIC_ROOT = str(tmp_path)
    response = probe_client.get("/readyz")
    assert response.status_code == 503 and response.json()["failed"] == ["static"]
    assert response.json()["errors"]["static"] == (
        "STATIC_ROOT: no static build (staticfiles.json missing): run manage.py collectstatic"
    )
    (tmp_path / "staticfiles.json").write_text('{"paths": {}, "version": "1.1"}')
    assert probe_client.get("/readyz").status_code == 200


def test_probes_are_routed_and_only_answer_reads(probe_client):
    from django.urls import reverse

    assert (reverse("healthz"), reverse("readyz")) == ("/healthz", "/readyz")
    # A POST is no probe: it goes through the normal stack (here: refused as a bad host).
    assert probe_client.post("/healthz").status_code == 400
    assert {"/healthz": health.healthz, "/readyz": health.readyz} == health.PROBES


@pytest.mark.django_db(transaction=True)
def test_preflight_passes_on_the_database_in_use_and_names_a_refusing_redis():
    ok = procs.run_manage("preflight", env=procs.django_env(GOVERNOR_Q_BROKER="orm"), timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "preflight: database, broker, static ok" in ok.stdout
    port = free_port()
    bad = procs.run_manage(
        "preflight",
        env=procs.django_env(REDIS_URL=f"redis://127.0.0.1:{port}/0", GOVERNOR_Q_BROKER="redis"),
        timeout=120,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        f"Governor refuses to start: REDIS_URL: Redis refused the connection: Error 111 connecting to "
        f"127.0.0.1:{port}. Connection refused. (127.0.0.1:{port})"
    ]
