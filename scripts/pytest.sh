#!/usr/bin/env bash
# pytest, with exit status 5 ("no tests collected") turned into a clear failure: a suite run
# that finds nothing means a broken selection or collection, never a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
"${BIN:-.venv/bin}/pytest" "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests for: $*" >&2
  exit 1
fi
exit "$status"
