#!/usr/bin/env bash
# `make run`: a dev OpenBao, the web server, the scheduler and the django-q2 workers as one
# process group. Ctrl-C or SIGTERM stops them all; if any of them dies, the others are stopped too.
# Ports: GOVERNOR_PORT (web, 8000), GOVERNOR_VAULT_PORT (OpenBao, 8200); bind address GOVERNOR_HOST.
set -uo pipefail
cd "$(dirname "$0")/.."
# Logs, the SQLite database and its WAL, credentials: private to Governor's user.
umask 077

BIN=${BIN:-.venv/bin}
HOST=${GOVERNOR_HOST:-127.0.0.1}
PORT=${GOVERNOR_PORT:-8000}
VAULT_PORT=${GOVERNOR_VAULT_PORT:-8200}
LOG_DIR=${GOVERNOR_LOG_DIR:-var/log}
STOP_GRACE=${GOVERNOR_STOP_GRACE:-15}

export DJANGO_SETTINGS_MODULE=governor.settings
# The demo runs as it would be served: Governor's own error pages, not Django's technical ones
# (which list every URL pattern), and no per-query memory growth in the long-lived workers.
# runserver --insecure still serves the static files (CSS, Swagger UI) with DEBUG off.
export DEBUG=${DEBUG:-false}
export PYTHONUNBUFFERED=1
export VAULT_ADDR="http://127.0.0.1:$VAULT_PORT"
# The dev server's root token; the server keeps everything in memory and forgets it on exit.
export VAULT_TOKEN=${GOVERNOR_DEV_VAULT_TOKEN:-governor-dev-root}

mkdir -p "$LOG_DIR"

port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

for p in "$PORT" "$VAULT_PORT"; do
  if port_busy "$p"; then
    echo "make run: port $p is already in use; stop what uses it or set GOVERNOR_PORT / GOVERNOR_VAULT_PORT" >&2
    exit 1
  fi
done

PROG="make run"
STOP_NEWLINE=1
# shellcheck source=lib/process-group.sh
source scripts/lib/process-group.sh

trap 'stop_all 0' INT TERM HUP

wait_http() {
  # wait_http NAME URL SECONDS: poll until the URL answers (any HTTP status).
  local name=$1 url=$2 timeout=$3
  local deadline=$((SECONDS + timeout))
  until "$BIN/python" - "$url" <<'EOF' 2>/dev/null; do
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=1)
except urllib.error.HTTPError:
    pass
EOF
    if [ $SECONDS -ge $deadline ]; then
      echo "make run: $name did not come up within ${timeout}s; see $LOG_DIR/$name.log" >&2
      tail -n 20 "$LOG_DIR/$name.log" >&2
      stop_all 1
    fi
    sleep 0.3
  done
}

# Expiring old change requests and applying due ones is periodic work: the cluster's own
# scheduler runs it every minute (idempotent registration; safe on several nodes).
"$BIN/python" manage.py register_schedules -v0 || exit 1

start vault "$BIN/bao" server -dev -dev-root-token-id="$VAULT_TOKEN" -dev-listen-address="127.0.0.1:$VAULT_PORT"
wait_http vault "$VAULT_ADDR/v1/sys/health" 30
# The dev server forgets everything on exit: give Governor its AppRole again on every start.
if "$BIN/python" manage.py help vault_setup >/dev/null 2>&1; then
  "$BIN/python" manage.py vault_setup || stop_all 1
fi

start web "$BIN/python" manage.py runserver "$HOST:$PORT" --noreload --insecure
start scheduler "$BIN/python" manage.py run_scheduler
start worker "$BIN/python" manage.py run_workers
start monitor "$BIN/python" manage.py run_monitor
wait_http web "http://127.0.0.1:$PORT/login/" 60

cat <<EOF

  Governor is running: http://$HOST:$PORT/
    API         http://$HOST:$PORT/api/v1/   (schema /api/schema/, docs /api/docs/)
    Admin       http://$HOST:$PORT/admin/   (superuser: admin)
    OpenBao     $VAULT_ADDR (dev server, root token $VAULT_TOKEN, in memory)

  Demo logins (password: ${GOVERNOR_DEMO_PASSWORD:-governor-demo}):
    acme-author                     proposes jobs and changes (acme)
    acme-approver, acme-approver2   review changes; prod needs both
    acme-operator                   triggers, pauses, resumes, cancels runs
    acme-viewer                     reads everything in acme
    acme-admin                      tenant admin of acme
    globex-admin, globex-author, globex-approver   the other tenant: sees nothing of acme
    admin                           platform superuser, for the Django admin

  Logs: $LOG_DIR/{web,scheduler,worker,monitor,vault}.log   (tail -f $LOG_DIR/*.log)
  Ctrl-C stops everything.

EOF
if [ "$(id -u)" != 0 ]; then
  echo "  Warning: not running as root, so the workers cannot start a job's sandbox (a uid of its own"
  echo "  per run): every command run fails with 'Sandbox unavailable' (docs/runbooks.md). HTTP jobs run."
  echo
fi

supervise
