"""Which database node Governor is connected to, and whether it can write there."""

import json
import sys

from django.core.management.base import BaseCommand
from django.db import DatabaseError, connection

NODE_SQL = """
SELECT coalesce(host(inet_server_addr()), 'local socket'), inet_server_port(), version(),
       pg_is_in_recovery(), current_setting('transaction_read_only') = 'on',
       (SELECT timeline_id FROM pg_control_checkpoint()),
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text,
       CASE WHEN pg_is_in_recovery()
            THEN pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) END,
       CASE WHEN pg_is_in_recovery() THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END
"""

REPLICAS_SQL = """
SELECT coalesce(application_name, ''), coalesce(host(client_addr), 'local socket'), state, sync_state,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), extract(epoch FROM replay_lag)
FROM pg_stat_replication ORDER BY application_name, client_addr
"""


def inspect() -> dict:
    """The node's facts: a dict ready for JSON."""
    if connection.vendor != "postgresql":
        return {"vendor": connection.vendor, "node": str(connection.settings_dict["NAME"]), "writable": True}
    with connection.cursor() as cursor:
        cursor.execute(NODE_SQL)
        host, port, version, in_recovery, read_only, timeline, lsn, lag_bytes, lag_s = cursor.fetchone()
        replicas = []
        if not in_recovery:
            cursor.execute(REPLICAS_SQL)
            replicas = [
                {
                    "name": name,
                    "address": address,
                    "state": state,
                    "sync_state": sync_state,
                    "lag_bytes": None if lag is None else int(lag),
                    "replay_lag_seconds": None if seconds is None else float(seconds),
                }
                for name, address, state, sync_state, lag, seconds in cursor.fetchall()
            ]
    return {
        "vendor": "postgresql",
        "node": f"{host}:{port}",
        "version": version.split(" on ")[0],
        "in_recovery": in_recovery,
        "writable": not in_recovery and not read_only,
        "timeline": timeline,
        "lsn": lsn,
        # On a replica: WAL received but not yet replayed, and the age of the last replayed commit
        # (grows while the primary is idle, too).
        "replay_lag_bytes": None if lag_bytes is None else int(lag_bytes),
        "last_replay_age_seconds": None if lag_s is None else float(lag_s),
        "replicas": replicas,
    }


class Command(BaseCommand):
    help = (
        "Show the database node this process connects to (DATABASE_URL): address, primary or replica "
        "(in recovery), timeline, replication lag, and its replicas. Exits 1 when it cannot write there."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, **options):
        try:
            facts = inspect()
        except DatabaseError as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            facts = {"vendor": connection.vendor, "writable": False, "error": message}
        if options["json"]:
            self.stdout.write(json.dumps(facts, indent=2))
        elif "error" in facts:
            self.stdout.write(f"DATABASE_URL names no writable node: {facts['error']}")
        elif facts["vendor"] != "postgresql":
            self.stdout.write(f"{facts['vendor']} database {facts['node']}: writable")
        else:
            role = "replica (in recovery)" if facts["in_recovery"] else "primary"
            self.stdout.write(
                f"{facts['node']}: {role}, {'writable' if facts['writable'] else 'NOT writable'}, "
                f"timeline {facts['timeline']}, WAL at {facts['lsn']} ({facts['version']})"
            )
            if facts["in_recovery"]:
                self.stdout.write(
                    f"  replay lag: {facts['replay_lag_bytes']} bytes received and not yet replayed; "
                    f"last replayed commit {facts['last_replay_age_seconds']} s ago"
                )
            for replica in facts["replicas"]:
                self.stdout.write(
                    f"  replica {replica['name'] or '?'} at {replica['address']}: {replica['state']} "
                    f"({replica['sync_state']}), {replica['lag_bytes']} bytes behind, "
                    f"replay lag {replica['replay_lag_seconds']} s"
                )
        if not facts["writable"]:
            sys.exit(1)
