#!/usr/bin/env bash
# Benchmark (not a test): 1,000,000 changes jsonl -> file sink, native format, one consumer, cdcd
# pinned to one core. Prints events/s and peak RSS (median of RUNS runs) and the ratio against
# bench/python_relay.py on the same file. Rates are given by wall-clock time and by CPU time
# (user + system): on a shared machine the second is the fairer "one core" figure.
# Usage: bench/jsonl_file_bench.sh [COUNT] [RUNS]
set -euo pipefail
count=${1:-1000000}
runs=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
work=$(mktemp -d /tmp/cdcd-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCDCD_TESTS=OFF >/dev/null
cmake --build "$build" --target cdcd >/dev/null

python3 "$root/bench/generate_changelog.py" --count "$count" --keys 20000 --output "$work/changes.jsonl"
size=$(stat -c %s "$work/changes.jsonl")
echo "input: $count changes, $((size / 1024 / 1024)) MiB"

cat >"$work/bench.yaml" <<YAML
sources:
  log: {type: jsonl, path: $work/changes.jsonl, follow: false}
sinks:
  out: {type: file, path: $work/out.jsonl, format: native, fsync: never}
checkpoints: {type: file, dir: $work/checkpoints, interval: 1s}
consumers:
  all: {source: log, sinks: [out], batch: {max_events: 2000, max_wait: 50ms}}
log: {level: warn}
YAML

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Runs a command pinned to core 0; sets wall, cpu (user+sys seconds) and rss (KiB).
measure() {
  /usr/bin/time -f "%e %U %S %M" -o "$work/time" taskset -c 0 "$@"
  read -r wall user sys rss <"$work/time"
  cpu=$(echo "$user + $sys" | bc -l)
}

cdcd_wall=() cdcd_cpu=() cdcd_rss=() python_wall=() python_cpu=()
for run in $(seq "$runs"); do
  rm -rf "$work/out.jsonl" "$work/checkpoints"
  measure "$build/cdcd" run --config "$work/bench.yaml"
  lines=$(wc -l <"$work/out.jsonl")
  [ "$lines" -eq "$count" ] || { echo "cdcd wrote $lines lines, expected $count" >&2; exit 1; }
  cdcd_wall+=("$(echo "$count / $wall" | bc -l)") cdcd_cpu+=("$(echo "$count / $cpu" | bc -l)")
  cdcd_rss+=("$rss")

  rm -f "$work/py.jsonl"
  measure python3 "$root/bench/python_relay.py" "$work/changes.jsonl" "$work/py.jsonl"
  python_wall+=("$(echo "$count / $wall" | bc -l)") python_cpu+=("$(echo "$count / $cpu" | bc -l)")
  printf 'run %d: cdcd %.0f events/s wall, %.0f per CPU-second, peak RSS %d KiB; python relay %.0f wall, %.0f per CPU-second\n' \
    "$run" "${cdcd_wall[-1]}" "${cdcd_cpu[-1]}" "${cdcd_rss[-1]}" "${python_wall[-1]}" "${python_cpu[-1]}"
done

m() { printf '%s\n' "$@" | median; }
cw=$(m "${cdcd_wall[@]}") cc=$(m "${cdcd_cpu[@]}") pw=$(m "${python_wall[@]}") pc=$(m "${python_cpu[@]}")
printf 'median cdcd: %.0f events/s wall-clock, %.0f events per CPU-second, peak RSS %.1f MiB\n' \
  "$cw" "$cc" "$(echo "$(m "${cdcd_rss[@]}") / 1024" | bc -l)"
printf 'median python relay: %.0f events/s wall-clock, %.0f events per CPU-second\n' "$pw" "$pc"
printf 'ratio cdcd / python relay: %.1fx wall-clock, %.1fx CPU\n' "$(echo "$cw / $pw" | bc -l)" \
  "$(echo "$cc / $pc" | bc -l)"
