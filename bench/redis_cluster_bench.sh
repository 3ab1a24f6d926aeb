#!/usr/bin/env bash
# Benchmark (not a test): COUNT changes jsonl -> Redis sink invalidating 2 keys per change, into a
# 3-master Redis Cluster (cluster: true) and into one standalone redis-server, in the same run.
# Prints both rates and their ratio, with and without the fence; medians of RUNS runs.
# Usage: bench/redis_cluster_bench.sh [COUNT] [RUNS]   (BUILD_DIR defaults to ./build)
set -euo pipefail
count=${1:-1000000}
runs=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
work=$(mktemp -d /tmp/cdcd-redis-cluster-bench.XXXXXX)
free_port() {  # a free port whose cluster bus port (+10000) is valid too
  python3 -c 'import socket
while True:
    s=socket.socket(); s.bind(("127.0.0.1",0)); p=s.getsockname()[1]; s.close()
    if p <= 55535: print(p); break'
}
start_redis() {  # $1: port, $2...: extra options
  local port=$1; shift
  mkdir -p "$work/$port"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work/$port" \
    --daemonize yes --pidfile "$work/$port/redis.pid" --logfile "$work/$port/redis.log" "$@"
  until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
}
ports=("$(free_port)" "$(free_port)" "$(free_port)")
standalone=$(free_port)
cleanup() {
  for p in "${ports[@]}" "$standalone"; do kill "$(cat "$work/$p/redis.pid" 2>/dev/null)" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
for p in "${ports[@]}"; do
  start_redis "$p" --cluster-enabled yes --cluster-config-file "$work/$p/nodes.conf"
done
start_redis "$standalone"
redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >/dev/null
until [ "$(for p in "${ports[@]}"; do redis-cli -p "$p" cluster info | grep -c 'cluster_state:ok'; done | paste -sd+ | bc)" = 3 ]; do
  sleep 0.2
done

ninja -C "$build" -j2 cdcd >/dev/null
python3 "$root/bench/generate_changelog.py" --count "$count" --keys 20000 --output "$work/changes.jsonl"

config() {  # $1: port, $2: cluster true|false, $3: extra sink options
  cat >"$work/bench.yaml" <<YAML
sources:
  log: {type: jsonl, path: $work/changes.jsonl, follow: false}
sinks:
  cache:
    type: redis
    url: redis://127.0.0.1:$1
    cluster: $2
    keys: {"*": ["{table}:{key.id}", "{table}:row:{key.id}"]}
    $3
checkpoints: {type: file, dir: $work/checkpoints, interval: 1s}
consumers:
  all: {source: log, sinks: [cache], batch: {max_events: 2000, max_wait: 50ms}}
log: {level: warn}
YAML
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rate() {  # runs cdcd on the config; prints changes/s
  rm -rf "$work/checkpoints"
  /usr/bin/time -f "%e" -o "$work/time" "$build/cdcd" run --config "$work/bench.yaml"
  echo "$count / $(cat "$work/time")" | bc -l
}
for variant in plain fenced; do
  extra=""; [ "$variant" = fenced ] && extra="fence: {ttl: 10m}"
  cluster_rates=() single_rates=()
  for run in $(seq "$runs"); do
    config "${ports[0]}" true "$extra"; cluster_rate=$(rate)
    config "$standalone" false "$extra"; single_rate=$(rate)
    cluster_rates+=("$cluster_rate") single_rates+=("$single_rate")
    printf '%s run %d: cluster %.0f changes/s, standalone %.0f changes/s\n' \
      "$variant" "$run" "$cluster_rate" "$single_rate"
  done
  mc=$(printf '%s\n' "${cluster_rates[@]}" | median); ms=$(printf '%s\n' "${single_rates[@]}" | median)
  printf 'median %s: 3-master cluster %.0f changes/s, standalone %.0f changes/s, ratio %.2f\n' \
    "$variant" "$mc" "$ms" "$(echo "$mc / $ms" | bc -l)"
done
