"""WSGI entry point."""

import gc
import os

from django.core.wsgi import get_wsgi_application

# Everything Governor creates (the SQLite database and its WAL, run directories, credentials)
# is private to its user: jobs and other local users read none of it.
os.umask(0o077)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governor.settings")
application = get_wsgi_application()

# What loading the app allocated (modules, models, settings) lives as long as the process: moved out
# of the collector's sight, a full collection no longer walks it. Without this, every few requests of a
# page that allocates much (the job page) paid about 85 ms for one (docs/operations.md, "Performance:
# pages"). gunicorn preloads the app (governor/gunicorn_conf.py), so its workers fork frozen.
gc.collect()
gc.freeze()
