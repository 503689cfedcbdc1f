#!/usr/bin/env python
"""Django's command-line utility for Governor."""

import os
import sys

# Everything Governor creates (the SQLite database and its WAL, run directories, credentials)
# is private to its user: jobs and other local users read none of it.
os.umask(0o077)

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governor.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
