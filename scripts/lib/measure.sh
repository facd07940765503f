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

# SAMPLES[name]: one value per round (add NAME VALUE); write_samples FILE EXTRA_JSON writes the
# medians and every sample to FILE and sets MEDIAN[name].
declare -A SAMPLES MEDIAN
add() { SAMPLES[$1]="${SAMPLES[$1]:-} $2"; }
last() { echo "${SAMPLES[$1]}" | awk '{print $NF}'; }
write_samples() {
  local file=$1 extra=$2 key
  for key in "${!SAMPLES[@]}"; do echo "$key${SAMPLES[$key]}"; done | python3 -c "
import json, statistics, sys
samples = {}
for line in sys.stdin:
    name, *values = line.split()
    samples[name] = [float(value) for value in values]
medians = {name: round(statistics.median(values), 2) for name, values in samples.items()}
document = dict(json.loads('{' + sys.argv[1] + '}'), medians=medians, samples=samples)
json.dump(document, open(sys.argv[2], 'w'), indent=1, sort_keys=True)
for name, value in sorted(medians.items()):
    print(name, value)" "$extra" "$file" > "$WORK/medians"
  while read -r key value; do MEDIAN[$key]=$value; done < "$WORK/medians"
}
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
# peak_mib PID: the process's peak resident memory so far, in MiB.
peak_mib() { awk '/VmHWM/ {printf "%d", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo 0; }

# Lag under live load, from a heartbeat: HEARTBEAT_COMMAND writes the source's clock (unix
# microseconds) into a replicated row every 100 ms while SAMPLE_COMMAND reads, on the target,
# that row and the clock (same machine, same clock): the difference is how old the newest change
# visible on the target is, at most 100 ms more than the lag. lag_run SECONDS prints the
# samples' p50, p99 and maximum in seconds and sets LAG_P50, LAG_P99, LAG_MAX.
lag_run() {
  local deadline=$(( ${EPOCHREALTIME/./} + $1 * 1000000 ))
  ( while (( ${EPOCHREALTIME/./} < deadline )); do heartbeat_command; sleep 0.1; done ) &
  local writer=$!
  : > "$WORK/lag.samples"
  sleep 1
  while (( ${EPOCHREALTIME/./} < deadline )); do
    sample_command >> "$WORK/lag.samples" || true
    sleep 0.05
  done
  wait "$writer" || true
  read -r LAG_P50 LAG_P99 LAG_MAX < <(python3 -c "
lags = sorted(max(0, int(now) - int(beat)) / 1e6 for beat, now in (line.split() for line in open('$WORK/lag.samples') if len(line.split()) == 2))
p = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))]
print(f'{p(0.5):.2f} {p(0.99):.2f} {lags[-1]:.2f}')")
  echo "   lag over $(wc -l < "$WORK/lag.samples") samples: p50 $LAG_P50 s, p99 $LAG_P99 s, max $LAG_MAX s"
}
