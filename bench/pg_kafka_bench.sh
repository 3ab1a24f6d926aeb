#!/usr/bin/env bash
# Benchmark (not a test): PostgreSQL 15 -> cdcd -> file and Kafka (librdkafka's mock cluster),
# against pg_recvlogical decoding the same WAL from its own slot in the same run.
#
# 1. Throughput, for two shapes of load: ROWS single-row transactions, and ROWS rows in
#    transactions of 100. The load is written first; then, ROUNDS times, pg_recvlogical (pgoutput
#    to /dev/null), cdcd -> file (native), cdcd -> Kafka (native) and cdcd -> Kafka (debezium)
#    each decode it from their own slot. Prints per round and as medians: changes/s, the ratio to
#    pg_recvlogical, CPU-seconds per million changes of each cdcd thread (and of the walsender
#    serving it), and cdcd's peak RSS. Every run's output is counted: file lines, or the topic's
#    messages read back with kcat.
# 2. Latency at a steady 5,000 transactions/s (pgbench --rate): commit -> received by an
#    independent Kafka consumer (python3-confluent-kafka) of cdcd's topic. That includes the
#    consumer's fetch, so it bounds commit -> delivery report from above.
#
# Usage: bench/pg_kafka_bench.sh [ROWS] [ROUNDS] [LATENCY_SECONDS]   (defaults: 500000, 3, 20)
# ROWS=0 runs the latency measurement alone.
# LATENCY_MAX_WAIT (default 5ms) is the latency run's batch max_wait, LATENCY_LINGER_MS its
# producer's linger.ms (default: librdkafka's, 5).
# BATCH_EXTRA is appended to every run's batch settings (e.g. ", send_when_caught_up: false").
# BUILD_DIR selects the build directory (configured and built if needed).
set -euo pipefail
rows=${1:-500000}
rounds=${2:-3}
latency_seconds=${3:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build-bench-kafka}
work=$(mktemp -d /tmp/cdcd-pgkafka.XXXXXX)
chmod 755 "$work"
cdcd_pid=""
source "$root/bench/lib/postgres.sh"
source "$root/bench/lib/kafka_mock.sh"
cleanup() {
  [ -n "$cdcd_pid" ] && kill "$cdcd_pid" 2>/dev/null && wait "$cdcd_pid" 2>/dev/null || true
  stop_mock_cluster
  stop_postgres
  rm -rf "$work"
}
trap cleanup EXIT

command -v kcat >/dev/null || { echo "kcat is required (apt-get install kcat)" >&2; exit 2; }
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCDCD_TESTS=ON \
  -DCDCD_BENCH=ON >/dev/null
cmake --build "$build" --target cdcd kafka_mock_cluster -- -j2 >/dev/null

metrics_port=$(free_port)
partitions=6
start_postgres
start_mock_cluster
psql_ -c "CREATE TABLE bench (id bigint PRIMARY KEY, v text NOT NULL, n int NOT NULL);
          CREATE TABLE lat (id bigserial PRIMARY KEY, v int);
          CREATE PUBLICATION pub FOR TABLE bench, lat;"

sink_config() {  # kind (file | native | debezium), destination (file path or topic), [kafka settings]
  case $1 in
    file) echo "out: {type: file, path: $2, format: native, fsync: never}" ;;
    *) echo "out: {type: kafka, brokers: \"$bootstrap\", topic: $2, format: $1${3:-}}" ;;
  esac
}

write_config() {  # slot, sink kind, destination, batch max_wait, [extra sink settings]
  cat >"$work/cdcd.yaml" <<YAML
sources:
  pg: {type: postgres, dsn: "$dsn", slot: $1, publication: pub, create_slot: true, status_interval: 1s}
sinks:
  $(sink_config "$2" "$3" "${5:-}")
checkpoints: {type: file, dir: $work/checkpoints-$1, interval: ${CHECKPOINT_INTERVAL:-1s}}
consumers:
  all: {source: pg, sinks: [out], batch: {max_events: 2000, max_wait: $4${BATCH_EXTRA:-}}}
metrics: {listen: "127.0.0.1:$metrics_port"}
log: {level: warn}
YAML
}

# CPU seconds (user + system) of each thread of a process, summed by thread name, as
# "name=seconds" words; librdkafka's broker threads are summed into one rdk:broker.
thread_cpu() {  # pid
  local ticks
  ticks=$(getconf CLK_TCK)
  for stat in /proc/"$1"/task/*/stat; do
    # The name is in parentheses and may hold spaces: read the fields after the last ')'.
    sed -E 's/^[0-9]+ \((.*)\) (.*)$/\1\t\2/' "$stat"
  done | awk -F'\t' -v ticks="$ticks" '{
      name = $1; sub(/^rdk:broker.*/, "rdk:broker", name); sub(/^rdk:main.*/, "rdk:main", name)
      split($2, f, " "); cpu[name] += (f[12] + f[13]) / ticks }
    END { for (n in cpu) printf "%s=%.3f ", n, cpu[n] }'
}

# Runs cdcd from a slot until its sink acknowledged `events` changes. Writes "SECONDS RSS_KIB
# WALSENDER_CPU WALSENDER_SEGMENTS THREAD_CPU..." to $work/run.
cdcd_run() {  # slot, sink kind, destination, number of row events
  local slot=$1 kind=$2 destination=$3 events=$4 start end
  write_config "$slot" "$kind" "$destination" 50ms
  sample_walsender "$slot"
  start=$(now)
  "$build/cdcd" run --config "$work/cdcd.yaml" 2>"$work/cdcd-$slot.log" &
  cdcd_pid=$!
  end=$(wait_for_events "$cdcd_pid" "$events") || { cat "$work/cdcd-$slot.log" >&2; exit 1; }
  local rss threads walsender
  rss=$(awk '/^VmHWM/ {print $2}' "/proc/$cdcd_pid/status")
  threads=$(thread_cpu "$cdcd_pid")
  walsender=$(walsender_seconds "$slot")
  kill -TERM "$cdcd_pid"
  wait "$cdcd_pid" || true
  cdcd_pid=""
  echo "$(echo "$end - $start" | bc -l) $rss $walsender $threads" >"$work/run"
}

check_delivered() {  # sink kind, destination, number of row events
  local delivered
  if [ "$1" = file ]; then
    delivered=$(wc -l <"$2")
  else
    delivered=$(topic_count "$2" "$partitions")
  fi
  [ "$delivered" -eq "$3" ] || { echo "cdcd -> $1 delivered $delivered changes, expected $3" >&2; exit 1; }
}

per_million() { echo "$1 * 1000000 / $2" | bc -l; }

measure() {  # workload name, number of row events, load SQL
  local name=$1 events=$2 load=$3 round kind
  local kinds=(file native debezium)
  for round in $(seq "$rounds"); do
    psql_ -c "SELECT pg_create_logical_replication_slot('recv_${name}_$round', 'pgoutput')" >/dev/null
    for kind in "${kinds[@]}"; do
      psql_ -c "SELECT pg_create_logical_replication_slot('${kind}_${name}_$round', 'pgoutput')" >/dev/null
    done
  done
  local start end endpos
  start=$(now)
  psql_ -c "$load"
  end=$(now)
  endpos=$(psql_ -Atc "SELECT pg_current_wal_insert_lsn()")
  printf '%s: wrote %d row changes in %.1f s\n' "$name" "$events" "$(echo "$end - $start" | bc -l)"
  declare -A rates
  local seconds recv_cpu rss walsender segments threads destination
  for round in $(seq "$rounds"); do
    read -r seconds recv_cpu walsender segments <<<"$(recvlogical_run "recv_${name}_$round" "$endpos")"
    rates[recv]+="$(echo "$events / $seconds" | bc -l) "
    printf '  round %d: pg_recvlogical %.0f changes/s; CPU-s per million: walsender %.2f, pg_recvlogical %.2f; walsender TCP segments per change %.2f\n' \
      "$round" "$(echo "$events / $seconds" | bc -l)" "$(per_million "$walsender" "$events")" \
      "$(per_million "$recv_cpu" "$events")" "$(echo "$segments / $events" | bc -l)"
    for kind in "${kinds[@]}"; do
      if [ "$kind" = file ]; then
        destination="$work/out-$kind-$name-$round.jsonl"
      else
        destination="bench.$kind.$name.$round"
        mock create_topic "$destination" "$partitions" 3
      fi
      cdcd_run "${kind}_${name}_$round" "$kind" "$destination" "$events"
      check_delivered "$kind" "$destination" "$events"
      rm -f "$work/out-$kind-$name-$round.jsonl"
      read -r seconds rss walsender segments threads <"$work/run"
      rates[$kind]+="$(echo "$events / $seconds" | bc -l) "
      local breakdown="" word
      for word in $threads; do
        breakdown+=" ${word%%=*} $(printf '%.2f' "$(per_million "${word#*=}" "$events")")"
      done
      printf '    cdcd -> %-8s %.0f changes/s, ratio %.2f, peak RSS %.1f MiB; CPU-s per million: walsender %.2f,%s; walsender TCP segments per change %.2f\n' \
        "$kind" "$(echo "$events / $seconds" | bc -l)" \
        "$(echo "$events / $seconds / ($(echo "${rates[recv]}" | awk '{print $NF}'))" | bc -l)" \
        "$(echo "$rss / 1024" | bc -l)" "$(per_million "$walsender" "$events")" "$breakdown" \
        "$(echo "$segments / $events" | bc -l)"
    done
  done
  local recv_median
  recv_median=$(printf '%s\n' ${rates[recv]} | median)
  printf '%s median: pg_recvlogical %.0f changes/s' "$name" "$recv_median"
  for kind in "${kinds[@]}"; do
    local median_rate
    median_rate=$(printf '%s\n' ${rates[$kind]} | median)
    printf '; cdcd -> %s %.0f (%.2f)' "$kind" "$median_rate" "$(echo "$median_rate / $recv_median" | bc -l)"
  done
  printf '\n'
  for round in $(seq "$rounds"); do
    psql_ -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
              WHERE slot_name LIKE '%\_${name}\_$round'" >/dev/null
  done
}

# ROWS=0 skips the throughput runs (the latency run alone).
[ "$rows" -gt 0 ] && measure single "$rows" "
  DO \$\$ BEGIN
    FOR i IN 1..$rows LOOP
      INSERT INTO bench VALUES (i, 'row ' || i, 0); COMMIT;
    END LOOP;
  END \$\$;"

psql_ -c "TRUNCATE bench" >/dev/null
[ "$rows" -gt 0 ] && measure batched "$rows" "
  DO \$\$ BEGIN
    FOR t IN 0..$((rows / 100 - 1)) LOOP
      INSERT INTO bench SELECT i, 'row ' || i, 0 FROM generate_series(t * 100 + 1, t * 100 + 100) i;
      COMMIT;
    END LOOP;
  END \$\$;"

# --- Latency at a steady 5,000 transactions/s ---------------------------------------------------
mock create_topic bench.latency "$partitions" 3
linger=""
[ -n "${LATENCY_LINGER_MS:-}" ] && linger=", properties: {linger.ms: \"$LATENCY_LINGER_MS\"}"
write_config cdcd_latency native bench.latency "${LATENCY_MAX_WAIT:-5ms}" "$linger"
"$build/cdcd" run --config "$work/cdcd.yaml" 2>"$work/cdcd-latency.log" &
cdcd_pid=$!
until [ "$(psql_ -Atc "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cdcd_latency' AND active")" = 1 ]; do
  kill -0 "$cdcd_pid" 2>/dev/null || { cat "$work/cdcd-latency.log" >&2; exit 1; }
  sleep 0.1
done
"$python" - "$bootstrap" "$((latency_seconds + 5))" >"$work/latency.txt" <<'PY' &
import json, sys, time
from confluent_kafka import Consumer
consumer = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "latency",
                     "auto.offset.reset": "earliest", "fetch.wait.max.ms": 1,
                     "fetch.error.backoff.ms": 1, "enable.auto.commit": False})
consumer.subscribe(["bench.latency"])
latencies, end = [], time.time() + float(sys.argv[2])
while time.time() < end:
    # poll() returns as soon as a message is there (consume() waits to fill its batch).
    message = consumer.poll(0.05)
    if message is not None and message.error() is None:
        latencies.append(time.time() * 1000 - json.loads(message.value())["timestamp"] / 1000)
consumer.close()
latencies.sort()
q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))]
print("%d %.2f %.2f %.2f" % (len(latencies), q(0.50), q(0.99), latencies[-1]))
PY
reader=$!
sleep 3  # the consumer joins its group and is assigned the partitions
echo 'INSERT INTO lat (v) VALUES (1);' >"$work/lat.sql"
# With synchronous_commit off, a commit reaches the walsender only when the WAL writer flushes it
# (every wal_writer_delay, 200ms): the latency run uses the default, on (fsync stays off).
cpu_ticks() { awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
read -r steal_before total_before <<<"$(cpu_ticks)"
PGOPTIONS="-c synchronous_commit=on" pgbench -n -h 127.0.0.1 -p "$port" -U postgres -c 4 -j 2 \
  -R 5000 -T "$latency_seconds" -f "$work/lat.sql" postgres >"$work/pgbench.txt" 2>&1
read -r steal_after total_after <<<"$(cpu_ticks)"
wait "$reader"
read -r count p50 p99 max <"$work/latency.txt"
tps=$(awk '/^tps/ {printf "%.0f", $3}' "$work/pgbench.txt")
# On a virtual machine, time the host gave to others (steal) shows up as latency here.
printf 'latency at %s txn/s (%d changes): commit -> Kafka consumer p50 %s ms, p99 %s ms, max %s ms; CPU steal %.1f%%\n' \
  "$tps" "$count" "$p50" "$p99" "$max" \
  "$(echo "100 * ($steal_after - $steal_before) / ($total_after - $total_before)" | bc -l)"
# cdcd's own view: commit -> the sink's delivery report, from its histogram (interpolated within
# buckets, as Prometheus' histogram_quantile does).
curl -s "http://127.0.0.1:$metrics_port/metrics" | "$python" -c '
import re, sys
buckets = sorted((float(le), float(count)) for le, count in re.findall(
    r"^cdcd_sink_commit_to_ack_seconds_bucket\{[^}]*le=\"([^\"]+)\"\} (\S+)", sys.stdin.read(), re.M))
total = buckets[-1][1]
def quantile(q):
    rank, lower, below = q * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            return (lower + (upper - lower) * (rank - below) / max(count - below, 1)) * 1000
        lower, below = upper, count
print("commit -> Kafka delivery report (cdcd_sink_commit_to_ack_seconds, %d changes): p50 %.1f ms, p99 %.1f ms"
      % (total, quantile(0.5), quantile(0.99)))'
