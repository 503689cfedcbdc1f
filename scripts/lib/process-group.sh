# Sourced by scripts/run-dev.sh (`make run`) and scripts/serve.sh (`make serve`): the parts of Governor
# run as one process group; SIGTERM or Ctrl-C stops them all, and if one dies the rest are stopped too.
# The caller sets LOG_DIR, STOP_GRACE and PROG (the name its messages begin with), and may set
# STOP_NEWLINE=1 to print an empty line before "Stopping" (after the terminal's ^C).

names=()
pids=()
stopping=0

# start NAME CMD...: run CMD in the background, its output in $LOG_DIR/NAME.log.
start() {
  local name=$1
  shift
  # Each child leads its own process group: Ctrl-C at the terminal reaches only make and the
  # script, so every child gets exactly one SIGTERM from stop_all (django-q2 hangs on two).
  setsid "$@" >"$LOG_DIR/$name.log" 2>&1 &
  names+=("$name")
  pids+=("$!")
}

# stop_all [CODE]: SIGTERM to every part, SIGKILL to its group after STOP_GRACE seconds, exit CODE.
stop_all() {
  local code=${1:-0}
  [ "$stopping" = 1 ] && return
  stopping=1
  trap '' INT TERM
  if [ "${STOP_NEWLINE:-0}" = 1 ]; then
    echo
  fi
  echo "Stopping: ${names[*]}"
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null
  done
  local deadline=$((SECONDS + STOP_GRACE))
  for i in "${!pids[@]}"; do
    while kill -0 "${pids[$i]}" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
      sleep 0.2
    done
    if kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "  ${names[$i]} did not stop within ${STOP_GRACE}s; killing it"
      kill -KILL -- "-${pids[$i]}" 2>/dev/null
    fi
    wait "${pids[$i]}" 2>/dev/null
  done
  echo "Stopped."
  exit "$code"
}

# supervise: return only through stop_all. Returns when any child exits (or a trapped signal
# arrives): one dead part means a broken whole, so stop the rest instead of limping on.
supervise() {
  while true; do
    wait -n "${pids[@]}"
    for i in "${!pids[@]}"; do
      if ! kill -0 "${pids[$i]}" 2>/dev/null; then
        echo "$PROG: ${names[$i]} exited; last lines of $LOG_DIR/${names[$i]}.log:" >&2
        tail -n 20 "$LOG_DIR/${names[$i]}.log" >&2
        stop_all 1
      fi
    done
  done
}
