#!/usr/bin/env bash
# Install the Debian packages Governor needs, when missing and when we are root.
# Usage: scripts/system-deps.sh run|test
#   run:  what `make run` needs (a Python with venv support; bubblewrap, util-linux and tini for the job sandbox)
#   test: plus PostgreSQL, Redis and Chromium for the test suite
set -euo pipefail
profile=${1:-test}
need=()
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
# Every command job runs in bubblewrap, entered through util-linux setpriv + prlimit, with tini
# as its pid 1 (jobs/sandbox.py); a worker without them refuses runs.
[ -x /usr/bin/bwrap ] || need+=(bubblewrap)
[ -x /usr/bin/tini ] || need+=(tini)
# GNU time measures the job's own resource usage (jobs/sandbox.py TIME); without it, no max RSS.
[ -x /usr/bin/time ] || need+=(time)
{ [ -x /usr/bin/setpriv ] && [ -x /usr/bin/prlimit ]; } || need+=(util-linux)
if [ "$profile" = test ]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
fi
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "system-deps: missing ${need[*]}; install them (sudo apt-get install ${need[*]}) or run as root" >&2
  exit 1
fi
echo "system-deps: installing ${need[*]}"
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
