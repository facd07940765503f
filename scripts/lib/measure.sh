# Measuring helpers for the benchmark scripts (sourced from the repository root): rate, the
# RESULT table, and run_measured.
rate() { python3 -c "print(int($1 / ($3 - $2)))"; }
declare -A RESULT

# Runs a command in the background and records its peak resident memory (VmHWM) in PEAK_KB.
run_measured() {
  "$@" &
  local pid=$! peak=0 hwm
  while kill -0 "$pid" 2>/dev/null; do
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ -n "$hwm" ] && [ "$hwm" -gt "$peak" ] && peak=$hwm
    sleep 0.1
  done
  wait "$pid"
  PEAK_KB=$peak
}
