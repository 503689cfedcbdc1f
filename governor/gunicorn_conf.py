"""gunicorn's configuration (``gunicorn -c python:governor.gunicorn_conf governor.wsgi``), from settings.

Processes, threads, address and timeout are Governor settings (GOVERNOR_WEB_*), so a bad value stops
the server with the same one-line message as any other setting.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governor.settings")

from django.conf import settings  # noqa: E402 - after the settings module is chosen

bind = [address.strip() for address in settings.GOVERNOR_WEB_BIND.split(",") if address.strip()]
workers = settings.GOVERNOR_WEB_WORKERS
threads = settings.GOVERNOR_WEB_THREADS
worker_class = "gthread"
timeout = settings.GOVERNOR_WEB_TIMEOUT
graceful_timeout = 30
# Load Django once in the master: a broken application stops the server before it forks.
preload_app = True
# Several servers may run on one host: no shared control socket under $HOME.
control_socket_disable = True
accesslog = "-"
errorlog = "-"
# The proxy in front terminates TLS; Django decides what to trust (GOVERNOR_TLS_PROXY_HEADER).
forwarded_allow_ips = "127.0.0.1"
