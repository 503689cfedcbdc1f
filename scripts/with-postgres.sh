#!/usr/bin/env bash
# Start a throwaway PostgreSQL on loopback, run the given command with DATABASE_URL pointing
# at it, then stop and remove the server, whatever happens (exit, error, Ctrl-C, SIGTERM).
# Exits with the command's status. Usage: scripts/with-postgres.sh CMD...
set -euo pipefail
if [ $# -eq 0 ]; then
  echo "usage: $0 CMD..." >&2
  exit 2
fi
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
  echo "with-postgres: PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)" >&2
  exit 1
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/governor-pg.XXXXXX")
chmod 755 "$dir"
as_pg=()
if [ "$(id -u)" = "0" ]; then
  # PostgreSQL refuses to run as root.
  chown postgres:postgres "$dir"
  as_pg=(runuser -u postgres --)
fi
cleanup() {
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$dir/data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"${as_pg[@]}" "$pg_bin/initdb" -D "$dir/data" -U governor --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 || {
  cat "$dir/initdb.log" >&2
  exit 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A port picked as free can be taken before the server binds it: retry with another.
started=0
for attempt in 1 2 3; do
  port=${PGTEST_PORT:-$(free_port)}
  if "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null 2>&1; then
    started=1
    break
  fi
  [ -n "${PGTEST_PORT:-}" ] && break
done
if [ "$started" != 1 ]; then
  echo "with-postgres: the server did not start; its log:" >&2
  cat "$dir/server.log" >&2 || true
  exit 1
fi

export DATABASE_URL="postgres://governor@127.0.0.1:$port/governor"
"${as_pg[@]}" "$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U governor governor
echo "with-postgres: PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
set +e
"$@"
status=$?
set -e
exit "$status"
