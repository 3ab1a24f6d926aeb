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
# The fence script as cdcd loads it (sinks/redis/fence.cc), for the fenced reference.
fence_sha=$(redis-cli -p "$port" SCRIPT LOAD \
  "$(sed -n '/R"lua(/,/)lua"/p' "$root/sinks/redis/fence.cc" | sed '1s/.*R"lua(//; $d')")
# The same UNLINKs as RESP, for redis-cli --pipe; and the same fenced invalidations (EVALSHA of
# the fence script), to show what Redis itself can do with the fence.
python3 - "$work/changes.jsonl" "$work/unlink.resp" "$work/fenced.resp" "$fence_sha" <<'PY'
import json, sys
def resp(args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
with open(sys.argv[1]) as src, open(sys.argv[2], "wb") as out, open(sys.argv[3], "wb") as fenced:
    for line in src:
        c = json.loads(line)
        table = c["entity"].rsplit(".", 1)[-1]
        key = c["key"]["id"]
        keys = [f"{table}:{key}".encode(), f"{table}:row:{key}".encode()]
        out.write(resp([b"UNLINK"] + keys))
        position = b"%020d%010d" % (c["lsn"], c.get("seq", 0))
        fenced.write(resp([b"EVALSHA", sys.argv[4].encode(), b"4"] +
                          [x for k in keys for x in (k, b"cdcd:fence:{" + k + b"}")] +
                          [position, b"600000", b"UNLINK"]))
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
  cdcd_rates=() pipe_rates=() ratios=() rsss=() same_rates=()
  for run in $(seq "$runs"); do
    rm -rf "$work/checkpoints"
    redis-cli -p "$port" FLUSHALL >/dev/null  # fences left by a run would make the next one cheaper
    measure "$build/cdcd" run --config "$work/bench.yaml"
    # Kept before the next measure overwrites wall and rss (they used to report redis-cli's RSS).
    cdcd_rate=$(echo "$count / $wall" | bc -l); cdcd_rss=$rss
    measure sh -c "redis-cli -p $port --pipe < $work/unlink.resp > $work/pipe.out"
    grep -q "errors: 0, replies: $count" "$work/pipe.out" || { cat "$work/pipe.out" >&2; exit 1; }
    pipe_rate=$(echo "$count / $wall" | bc -l)
    cdcd_rates+=("$cdcd_rate") pipe_rates+=("$pipe_rate") rsss+=("$cdcd_rss")
    ratios+=("$(echo "$cdcd_rate / $pipe_rate" | bc -l)")
    printf '%s run %d: cdcd %.0f changes/s (peak RSS %d KiB), redis-cli --pipe %.0f changes/s, ratio %.2f\n' \
      "$variant" "$run" "$cdcd_rate" "$cdcd_rss" "$pipe_rate" "${ratios[-1]}"
    if [ "$variant" = fenced ]; then
      redis-cli -p "$port" FLUSHALL >/dev/null
      redis-cli -p "$port" SCRIPT LOAD "$(sed -n '/R"lua(/,/)lua"/p' "$root/sinks/redis/fence.cc" | sed '1s/.*R"lua(//; $d')" >/dev/null
      measure sh -c "redis-cli -p $port --pipe < $work/fenced.resp > $work/pipe.out"
      grep -q "errors: 0, replies: $count" "$work/pipe.out" || { cat "$work/pipe.out" >&2; exit 1; }
      same_rates+=("$(echo "$count / $wall" | bc -l)")
      printf '  redis-cli --pipe of the same EVALSHAs: %.0f changes/s (cdcd / that: %.2f)\n' \
        "${same_rates[-1]}" "$(echo "$cdcd_rate / ${same_rates[-1]}" | bc -l)"
    fi
  done
  m() { printf '%s\n' "$@" | median; }
  printf 'median %s: cdcd %.0f changes/s (%.0f keys/s), redis-cli --pipe %.0f changes/s, ratio %.2f, cdcd peak RSS %.1f MiB\n' \
    "$variant" "$(m "${cdcd_rates[@]}")" "$(echo "2 * $(m "${cdcd_rates[@]}")" | bc -l)" \
    "$(m "${pipe_rates[@]}")" "$(m "${ratios[@]}")" "$(echo "$(m "${rsss[@]}") / 1024" | bc -l)"
  if [ "$variant" = fenced ]; then
    printf 'median fenced reference: redis-cli --pipe of the same EVALSHAs %.0f changes/s\n' \
      "$(m "${same_rates[@]}")"
  fi
done
