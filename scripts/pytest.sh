#!/usr/bin/env bash
# pytest, with exit status 5 ("no tests collected") made explicit: a pass that finds nothing means a
# broken selection or collection, so it fails loudly, unless ALLOW_NO_TESTS=1 says an empty pass is
# expected (the PostgreSQL pass of a selection that only matches browser tests).
set -uo pipefail
cd "$(dirname "$0")/.."
"${BIN:-.venv/bin}/pytest" "$@"
status=$?
if [ "$status" -eq 5 ]; then
  if [ "${ALLOW_NO_TESTS:-0}" = 1 ]; then
    echo "pytest: this pass selected no tests (allowed: the selection was narrowed)"
    exit 0
  fi
  echo "pytest: no tests collected for: $*; failing rather than passing an empty run" >&2
  exit 1
fi
exit "$status"
