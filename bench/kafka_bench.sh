#!/usr/bin/env bash
# Benchmark (not a test): COUNT changes jsonl -> Kafka (librdkafka's mock cluster, 3 brokers) in
# native format through cdcd, compared in the same run with `kcat -P -l` producing the same
# messages (same key, same value bytes) to the same cluster with the same producer settings.
# Prints both rates, the ratio, cdcd's peak RSS and the CPU time each spends per change (user +
# system, all threads; steadier than rates on a shared machine), medians of RUNS runs. Also measures the Kafka
# sink alone (bench/kafka_sink_bench.cc: batches parsed beforehand, no source or pipeline), to tell
# the sink's cost from the rest of cdcd's.
# Usage: bench/kafka_bench.sh [COUNT] [RUNS]      (BUILD_DIR overrides the build directory)
# FORMAT=debezium (default native) makes cdcd write the `debezium` format, DEBEZIUM_SCHEMAS=true
# its {schema, payload} form, DEBEZIUM_TRANSACTIONS=true adds transaction metadata (BEGIN/END records
# on <source>.transaction and the transaction block); kcat still sends the native lines and the sink-alone figure stays
# native. SKIP_BUILD=1 uses BUILD_DIR as it is (e.g. to compare two builds of the same type).
set -euo pipefail
count=${1:-1000000}
runs=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build-bench-kafka}
work=$(mktemp -d /tmp/cdcd-kafka-bench.XXXXXX)
source "$root/bench/lib/kafka_mock.sh"
cleanup() {
  stop_mock_cluster
  rm -rf "$work"
}
trap cleanup EXIT

command -v kcat >/dev/null || { echo "kcat is required (apt-get install kcat)" >&2; exit 2; }
format=${FORMAT:-native}
debezium_schemas=${DEBEZIUM_SCHEMAS:-false}
debezium_transactions=${DEBEZIUM_TRANSACTIONS:-false}
if [ -z "${SKIP_BUILD:-}" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCDCD_TESTS=ON \
    -DCDCD_BENCH=ON >/dev/null
  cmake --build "$build" --target cdcd kafka_mock_cluster kafka_sink_bench -- -j2 >/dev/null
fi

python3 "$root/bench/generate_changelog.py" --count "$count" --keys 20000 \
  --output "$work/changes.jsonl"
# kcat's input: "KEY<TAB>VALUE" per line, where VALUE is the very line cdcd's native encoder
# writes for the change (the generator already emits that canonical form) and KEY the change's key.
python3 - "$work/changes.jsonl" "$work/kcat.txt" <<'PY'
import json, sys
with open(sys.argv[1], encoding="utf-8") as lines, open(sys.argv[2], "w", encoding="utf-8") as out:
    for line in lines:
        key = json.dumps(json.loads(line)["key"], separators=(",", ":"))
        out.write(key + "\t" + line)
PY
echo "input: $count changes, $(($(stat -c %s "$work/changes.jsonl") / 1024 / 1024)) MiB"

start_mock_cluster

partitions=6
# The producer settings both sides use: cdcd's defaults (idempotence, acks=all, Java's murmur2,
# bounded queue), so that the comparison measures cdcd's overhead over librdkafka's.
producer_properties=(enable.idempotence=true acks=all partitioner=murmur2_random
  queue.buffering.max.kbytes=65536)

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

cdcd_rates=() cdcd_rss=() cdcd_cpu=() kcat_rates=() kcat_cpu=() sink_rates=()
# CPU microseconds per change from a `time -f "%U %S"` report.
cpu_per_change() { awk -v n="$count" '{printf "%.3f\n", ($1 + $2) * 1e6 / n}' "$1"; }
for run in $(seq "$runs"); do
  mock create_topic "bench.cdcd.$run" "$partitions" 3
  mock create_topic "bench.kcat.$run" "$partitions" 3
  mock create_topic "bench.sink.$run" "$partitions" 3
  {
    cat <<YAML
sources:
  log: {type: jsonl, path: $work/changes.jsonl, follow: false}
sinks:
  kafka:
    type: kafka
    brokers: "$bootstrap"
    topic: bench.cdcd.$run
    format: $format
YAML
    if [ "$debezium_schemas" = true ] || [ "$debezium_transactions" = true ]; then
      echo "    debezium: {schemas: $debezium_schemas, provide.transaction.metadata: $debezium_transactions}"
    fi
    cat <<YAML
    tombstones: false   # kcat sends one message per line: compare the same messages
    headers: false
    properties:
YAML
    for property in "${producer_properties[@]}"; do
      echo "      ${property%%=*}: \"${property#*=}\""
    done
    cat <<YAML
checkpoints: {type: file, dir: $work/checkpoints.$run, interval: 1s}
consumers:
  all: {source: log, sinks: [kafka], batch: {max_events: 2000, max_wait: 50ms}}
log: {level: warn}
YAML
  } >"$work/bench.yaml"

  start=$(date +%s.%N)
  timeout 600 /usr/bin/time -f "%U %S %M" -o "$work/time.txt" "$build/cdcd" run --config "$work/bench.yaml"
  end=$(date +%s.%N)
  produced=$(topic_count "bench.cdcd.$run" "$partitions")
  [ "$produced" -eq "$count" ] || { echo "cdcd produced $produced messages, expected $count" >&2; exit 1; }
  cdcd_rates+=("$(echo "$count / ($end - $start)" | bc -l)")
  cdcd_rss+=("$(awk '{print $3}' "$work/time.txt")")
  cdcd_cpu+=("$(cpu_per_change "$work/time.txt")")

  kcat_args=()
  for property in "${producer_properties[@]}"; do kcat_args+=(-X "$property"); done
  start=$(date +%s.%N)
  timeout 600 /usr/bin/time -f "%U %S" -o "$work/time.txt" \
    kcat -P -l -K $'\t' -b "$bootstrap" -t "bench.kcat.$run" "${kcat_args[@]}" "$work/kcat.txt"
  end=$(date +%s.%N)
  produced=$(topic_count "bench.kcat.$run" "$partitions")
  [ "$produced" -eq "$count" ] || { echo "kcat produced $produced messages, expected $count" >&2; exit 1; }
  kcat_rates+=("$(echo "$count / ($end - $start)" | bc -l)")
  kcat_cpu+=("$(cpu_per_change "$work/time.txt")")

  # The sink alone. It keeps every parsed change in memory: its RSS is not cdcd's.
  sink_out=$(timeout 600 "$build/bench/kafka_sink_bench" "$bootstrap" "bench.sink.$run" \
    "$work/changes.jsonl")
  produced=$(topic_count "bench.sink.$run" "$partitions")
  [ "$produced" -eq "$count" ] || { echo "the sink produced $produced messages, expected $count" >&2; exit 1; }
  sink_rates+=("$(echo "$sink_out" | sed -n 's/.*: \([0-9.]*\) changes\/s/\1/p')")

  printf 'run %d: cdcd %.0f changes/s (%.2f CPU-us/change, peak RSS %d KiB), sink alone %.0f changes/s, kcat -P %.0f messages/s (%.2f CPU-us/message), ratio cdcd/kcat %.2f\n' \
    "$run" "${cdcd_rates[-1]}" "${cdcd_cpu[-1]}" "${cdcd_rss[-1]}" "${sink_rates[-1]}" \
    "${kcat_rates[-1]}" "${kcat_cpu[-1]}" "$(echo "${cdcd_rates[-1]} / ${kcat_rates[-1]}" | bc -l)"
done

cdcd_rate=$(printf '%s\n' "${cdcd_rates[@]}" | median)
kcat_rate=$(printf '%s\n' "${kcat_rates[@]}" | median)
sink_rate=$(printf '%s\n' "${sink_rates[@]}" | median)
rss=$(printf '%s\n' "${cdcd_rss[@]}" | median)
printf 'median: cdcd %.0f changes/s, kcat -P %.0f messages/s, ratio %.2f (target >= 0.8); cdcd peak RSS %.1f MiB\n' \
  "$cdcd_rate" "$kcat_rate" "$(echo "$cdcd_rate / $kcat_rate" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
printf 'median CPU time: cdcd %.2f us/change, kcat -P %.2f us/message (cdcd/kcat %.2f)\n' \
  "$(printf '%s\n' "${cdcd_cpu[@]}" | median)" "$(printf '%s\n' "${kcat_cpu[@]}" | median)" \
  "$(echo "$(printf '%s\n' "${cdcd_cpu[@]}" | median) / $(printf '%s\n' "${kcat_cpu[@]}" | median)" | bc -l)"
printf 'median: the Kafka sink alone %.0f changes/s, ratio to kcat %.2f\n' \
  "$sink_rate" "$(echo "$sink_rate / $kcat_rate" | bc -l)"
