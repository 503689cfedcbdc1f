#!/usr/bin/env bash
# `make serve`: the production profile on one host, mirroring the systemd units of docs/operations.md.
# Checks first, starts nothing until every check passes (one line naming the setting, exit 1):
#   static build (collectstatic into STATIC_ROOT), `manage.py preflight` (a writable
#   DATABASE_URL node, Redis answering when REDIS_URL is set, the static manifest), migrations.
# Then, as one process group: gunicorn (GOVERNOR_WEB_WORKERS x GOVERNOR_WEB_THREADS on
# GOVERNOR_WEB_BIND) with WhiteNoise, GOVERNOR_SCHEDULERS `run_scheduler` and GOVERNOR_WORKER_CLUSTERS
# `run_workers`. SIGTERM or Ctrl-C stops them all; if one dies, the rest are stopped too.
# Vault/OpenBao, PostgreSQL and Redis are not started here: they are services of their own.
set -uo pipefail
cd "$(dirname "$0")/.."
umask 077

BIN=${BIN:-.venv/bin}
LOG_DIR=${GOVERNOR_LOG_DIR:-var/log}
STOP_GRACE=${GOVERNOR_STOP_GRACE:-30}
SCHEDULERS=${GOVERNOR_SCHEDULERS:-1}
CLUSTERS=${GOVERNOR_WORKER_CLUSTERS:-1}
# One node runs the migrations of a release (GOVERNOR_SERVE_MIGRATE=0 on the others); a read-only
# image built with its static files sets GOVERNOR_SERVE_COLLECTSTATIC=0.
MIGRATE=${GOVERNOR_SERVE_MIGRATE:-1}
COLLECTSTATIC=${GOVERNOR_SERVE_COLLECTSTATIC:-1}

export GOVERNOR_ENV=${GOVERNOR_ENV:-production}
export DJANGO_SETTINGS_MODULE=governor.settings
export PYTHONUNBUFFERED=1

for name in SCHEDULERS CLUSTERS; do
  if ! [[ ${!name} =~ ^[0-9]+$ ]]; then
    echo "Governor refuses to start: GOVERNOR_${name/CLUSTERS/WORKER_CLUSTERS} must be a whole number, got '${!name}'" >&2
    exit 1
  fi
done

mkdir -p "$LOG_DIR"

# step NAME CMD...: run a check or preparation to completion; on failure print its refusal lines
# (or the last line of its output: a setting's ImproperlyConfigured) and exit with its status.
step() {
  local name=$1
  shift
  "$@" >"$LOG_DIR/$name.log" 2>&1
  local status=$?
  if [ "$status" -ne 0 ]; then
    if ! grep -h "^Governor refuses to start: " "$LOG_DIR/$name.log" >&2; then
      echo "Governor refuses to start: $name failed: $(grep -v '^\s*$' "$LOG_DIR/$name.log" | tail -n 1)" >&2
    fi
    exit "$status"
  fi
}

if [ "$COLLECTSTATIC" = 1 ]; then
  step collectstatic "$BIN/python" manage.py collectstatic --noinput -v0
fi
step preflight "$BIN/python" manage.py preflight
if [ "$MIGRATE" = 1 ]; then
  step migrate "$BIN/python" manage.py migrate --noinput -v0
fi
# The periodic change-control sweep (idempotent registration; safe on several nodes).
step schedules "$BIN/python" manage.py register_schedules -v0

PROG="serve"
# shellcheck source=lib/process-group.sh
source scripts/lib/process-group.sh

trap 'stop_all 0' INT TERM HUP

started_at=$SECONDS
start web "$BIN/gunicorn" -c python:governor.gunicorn_conf governor.wsgi:application
for n in $(seq 1 "$SCHEDULERS"); do
  start "scheduler-$n" "$BIN/python" manage.py run_scheduler
done
for n in $(seq 1 "$CLUSTERS"); do
  start "workers-$n" "$BIN/python" manage.py run_workers
done
# Rule evaluation, escalation and notification delivery (one is enough; several are safe).
start monitor "$BIN/python" manage.py run_monitor

# The web server is up when /healthz answers on its first address.
BIND=$("$BIN/python" -c "from governor import gunicorn_conf; print(gunicorn_conf.bind[0])" 2>/dev/null)
case "$BIND" in
  unix:*) PROBE="" ;;
  *) PROBE="http://$BIND/healthz" ;;
esac
deadline=$((SECONDS + ${GOVERNOR_START_TIMEOUT:-60}))
while [ -n "$PROBE" ]; do
  if "$BIN/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" "$PROBE" 2>/dev/null; then
    break
  fi
  if ! kill -0 "${pids[0]}" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
    echo "Governor refuses to start: the web server did not answer $PROBE; last lines of $LOG_DIR/web.log:" >&2
    tail -n 20 "$LOG_DIR/web.log" >&2
    stop_all 1
  fi
  sleep 0.2
done

echo "Governor is serving on $BIND (${names[*]}; up in $((SECONDS - started_at))s). Logs: $LOG_DIR/"

supervise
