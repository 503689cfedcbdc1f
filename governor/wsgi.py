"""WSGI entry point."""

import os

from django.core.wsgi import get_wsgi_application

# Everything Governor creates (the SQLite database and its WAL, run directories, credentials)
# is private to its user: jobs and other local users read none of it.
os.umask(0o077)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governor.settings")
application = get_wsgi_application()
