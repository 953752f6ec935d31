# step NAME LIMIT_S COMMAND...: run COMMAND under a time limit, its output in $STEP_LOGS/NAME.log,
# one line "NAME  ok|failed (exit N)|TIMED OUT  SECONDS  LOG" appended to $SUMMARY.
# A failed or hung step is recorded and the next one still runs.
step() {
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "=== $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" > "$STEP_LOGS/$name.log" 2>&1
  local rc=$?
  local verdict=ok; [ $rc -eq 124 ] || [ $rc -eq 137 ] && verdict="TIMED OUT"; [ $rc -ne 0 ] && [ "$verdict" = ok ] && verdict="failed (exit $rc)"
  printf '%-8s %-18s %4ss  %s\n' "$name" "$verdict" "$((SECONDS - start))" "$STEP_LOGS/$name.log" | tee -a "$SUMMARY"
  tail -n 5 "$STEP_LOGS/$name.log"
}
