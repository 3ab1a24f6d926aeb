#!/usr/bin/env bash
# Benchmark (not a test): COUNT changes jsonl -> Redis sink invalidating 2 keys per change
# ("{table}:{key.id}" and "{table}:row:{key.id}"), against `redis-cli --pipe` sending the same
# UNLINK commands to the same redis-server in the same run. Prints both rates, their ratio, with and
# without the fence, and cdcd's peak RSS; medians of RUNS runs.
# Usage: bench/redis_bench.sh [COUNT] [RUNS]   (BUILD_DIR defaults to ./build)
set -euo pipefail
count=${1:-1000000}
runs=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
work=$(mktemp -d /tmp/cdcd-redis-bench.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  --daemonize yes --pidfile "$work/redis.pid" --logfile "$work/redis.log"
trap 'kill "$(cat "$work/redis.pid")" 2>/dev/null; rm -rf "$work"' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done

ninja -C "$build" -j2 cdcd >/dev/null

python3 "$root/bench/generate_changelog.py" --count "$count" --keys 20000 --output "$work/changes.jsonl"
# The same UNLINKs as RESP, for redis-cli --pipe.
python3 - "$work/changes.jsonl" "$work/unlink.resp" <<'PY'
import json, sys
with open(sys.argv[1]) as src, open(sys.argv[2], "wb") as out:
    for line in src:
        c = json.loads(line)
        table = c["entity"].rsplit(".", 1)[-1]
        key = c["key"]["id"]
        args = [b"UNLINK", f"{table}:{key}".encode(), f"{table}:row:{key}".encode()]
        out.write(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
PY

config() {  # $1: extra sink options
  cat >"$work/bench.yaml" <<YAML
sources:
  log: {type: jsonl, path: $work/changes.jsonl, follow: false}
sinks:
  cache:
    type: redis
    url: redis://127.0.0.1:$port
    keys: {"*": ["{table}:{key.id}", "{table}:row:{key.id}"]}
    $1
checkpoints: {type: file, dir: $work/checkpoints, interval: 1s}
consumers:
  all: {source: log, sinks: [cache], batch: {max_events: 2000, max_wait: 50ms}}
log: {level: warn}
YAML
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
measure() {  # sets wall (s) and rss (KiB)
  /usr/bin/time -f "%e %M" -o "$work/time" "$@"
  read -r wall rss <"$work/time"
}

for variant in plain fenced; do
  if [ "$variant" = fenced ]; then config "fence: {ttl: 10m}"; else config ""; fi
  cdcd_rates=() pipe_rates=() ratios=() rsss=()
  for run in $(seq "$runs"); do
    rm -rf "$work/checkpoints"
    measure "$build/cdcd" run --config "$work/bench.yaml"
    cdcd_rate=$(echo "$count / $wall" | bc -l); rss=$rss
    measure sh -c "redis-cli -p $port --pipe < $work/unlink.resp > $work/pipe.out"
    grep -q "errors: 0, replies: $count" "$work/pipe.out" || { cat "$work/pipe.out" >&2; exit 1; }
    pipe_rate=$(echo "$count / $wall" | bc -l)
    cdcd_rates+=("$cdcd_rate") pipe_rates+=("$pipe_rate") rsss+=("$rss")
    ratios+=("$(echo "$cdcd_rate / $pipe_rate" | bc -l)")
    printf '%s run %d: cdcd %.0f changes/s (peak RSS %d KiB), redis-cli --pipe %.0f changes/s, ratio %.2f\n' \
      "$variant" "$run" "$cdcd_rate" "$rss" "$pipe_rate" "${ratios[-1]}"
  done
  m() { printf '%s\n' "$@" | median; }
  printf 'median %s: cdcd %.0f changes/s (%.0f keys/s), redis-cli --pipe %.0f changes/s, ratio %.2f, cdcd peak RSS %.1f MiB\n' \
    "$variant" "$(m "${cdcd_rates[@]}")" "$(echo "2 * $(m "${cdcd_rates[@]}")" | bc -l)" \
    "$(m "${pipe_rates[@]}")" "$(m "${ratios[@]}")" "$(echo "$(m "${rsss[@]}") / 1024" | bc -l)"
done
