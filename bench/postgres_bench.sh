#!/usr/bin/env bash
# Benchmark (not a test): PostgreSQL 15 -> cdcd (postgres source) -> file sink, native format.
#
# 1. Throughput: ROWS single-row transactions (inserts, then a mixed insert/update/delete run) are
#    written first; then pg_recvlogical (pgoutput to /dev/null) and cdcd decode the same WAL from
#    their own slots, alternately, two rounds each. Prints events/s of each tool's best round, the
#    ratio and cdcd's peak RSS.
# 2. Latency: a steady 5,000 transactions/s (pgbench --rate) while cdcd streams; a tailer reads the
#    file sink's output as it is written and compares each line's arrival with its commit timestamp.
#    Prints p50/p99 of commit -> written-and-acknowledged by the file sink, and for comparison the
#    commit -> received latency of pg_recvlogical (test_decoding) at the same rate.
#
# Usage: bench/postgres_bench.sh [ROWS] [LATENCY_SECONDS]      (defaults: 1000000, 20)
# BUILD_DIR selects the (Release) build directory; it is configured and built if needed.
set -euo pipefail
rows=${1:-1000000}
latency_seconds=${2:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
work=$(mktemp -d /tmp/cdcd-pgbench.XXXXXX)
chmod 755 "$work"
cdcd_pid=""
source "$root/bench/lib/postgres.sh"
cleanup() {
  [ -n "$cdcd_pid" ] && kill "$cdcd_pid" 2>/dev/null && wait "$cdcd_pid" 2>/dev/null || true
  stop_postgres
  rm -rf "$work"
}
trap cleanup EXIT

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCDCD_TESTS=OFF >/dev/null
cmake --build "$build" --target cdcd >/dev/null

metrics_port=$(free_port)
start_postgres

psql_ -c "CREATE TABLE bench (id bigint PRIMARY KEY, v text NOT NULL, n int NOT NULL);
          CREATE TABLE lat (id bigserial PRIMARY KEY, v int);
          CREATE PUBLICATION pub FOR TABLE bench, lat;"

write_config() {  # slot, output file, batch max_wait
  cat >"$work/cdcd.yaml" <<YAML
sources:
  pg: {type: postgres, dsn: "$dsn", slot: $1, publication: pub, create_slot: true, status_interval: 1s}
sinks:
  out: {type: file, path: $2, format: native, fsync: never}
checkpoints: {type: file, dir: $work/checkpoints-$1, interval: 1s}
consumers:
  all: {source: pg, sinks: [out], batch: {max_events: 2000, max_wait: $3}}
metrics: {listen: "127.0.0.1:$metrics_port"}
log: {level: warn}
YAML
}

recvlogical_rate() {  # slot, end position, number of row events
  local seconds
  read -r seconds _ <<<"$(recvlogical_run "$1" "$2")"
  echo "$3 / $seconds" | bc -l
}

cdcd_rate() {  # slot, number of row events; also sets rss_kib (cdcd's peak RSS)
  local slot=$1 events=$2 start end
  rm -f "$work/out.jsonl"
  write_config "$slot" "$work/out.jsonl" 50ms
  start=$(now)
  "$build/cdcd" run --config "$work/cdcd.yaml" 2>"$work/cdcd-$slot.log" &
  cdcd_pid=$!
  end=$(wait_for_events "$cdcd_pid" "$events") || { cat "$work/cdcd-$slot.log" >&2; exit 1; }
  rss_kib=$(awk '/^VmHWM/ {print $2}' "/proc/$cdcd_pid/status")
  kill -TERM "$cdcd_pid"
  wait "$cdcd_pid" || true
  cdcd_pid=""
  local lines
  lines=$(wc -l <"$work/out.jsonl")
  [ "$lines" -ge "$events" ] || { echo "cdcd wrote $lines lines, expected $events" >&2; exit 1; }
  echo "$events / ($end - $start)" | bc -l >"$work/rate"
}

max() { echo "if ($1 > $2) $1 else $2" | bc -l; }

# Writes one workload, then decodes its WAL alternately with pg_recvlogical and cdcd, twice each
# (the first pass over fresh WAL can be slower, whoever makes it); reports the best run of each.
compare() {  # name, number of row events, load SQL
  local name=$1 events=$2 load=$3 round
  for round in 1 2; do
    psql_ -c "SELECT pg_create_logical_replication_slot('recv${round}_$name', 'pgoutput'),
                     pg_create_logical_replication_slot('cdcd${round}_$name', 'pgoutput')" >/dev/null
  done
  local start end
  start=$(now)
  psql_ -c "$load"
  end=$(now)
  local endpos
  endpos=$(psql_ -Atc "SELECT pg_current_wal_insert_lsn()")
  printf '%s: wrote %d row changes in single-row transactions in %.1f s\n' "$name" "$events" \
    "$(echo "$end - $start" | bc -l)"
  local recv_best=0 cdcd_best=0 rss_max=0 recv cdcd
  for round in 1 2; do
    recv=$(recvlogical_rate "recv${round}_$name" "$endpos" "$events")
    cdcd_rate "cdcd${round}_$name" "$events"
    cdcd=$(cat "$work/rate")
    printf '  round %d: pg_recvlogical %.0f events/s, cdcd %.0f events/s\n' "$round" "$recv" "$cdcd"
    recv_best=$(max "$recv" "$recv_best")
    cdcd_best=$(max "$cdcd" "$cdcd_best")
    rss_max=$(max "$rss_kib" "$rss_max")
    psql_ -c "SELECT pg_drop_replication_slot('recv${round}_$name'),
                     pg_drop_replication_slot('cdcd${round}_$name')" >/dev/null
  done
  printf '%s: pg_recvlogical %.0f events/s, cdcd %.0f events/s, ratio %.2f, cdcd peak RSS %.1f MiB\n' \
    "$name" "$recv_best" "$cdcd_best" "$(echo "$cdcd_best / $recv_best" | bc -l)" \
    "$(echo "$rss_max / 1024" | bc -l)"
}

compare inserts "$rows" "
  DO \$\$ BEGIN
    FOR i IN 1..$rows LOOP
      INSERT INTO bench VALUES (i, 'row ' || i, 0); COMMIT;
    END LOOP;
  END \$\$;"

# Per key: insert, update, and a delete for every other key: 2 + 2 + 1 events per two keys.
keys=$((rows * 2 / 5))
psql_ -c "TRUNCATE bench" >/dev/null
compare mixed "$((keys * 2 + keys / 2))" "
  DO \$\$ BEGIN
    FOR i IN 1..$keys LOOP
      INSERT INTO bench VALUES (i, 'row ' || i, 0); COMMIT;
      UPDATE bench SET n = n + 1, v = 'updated' WHERE id = i; COMMIT;
      IF i % 2 = 0 THEN DELETE FROM bench WHERE id = i; COMMIT; END IF;
    END LOOP;
  END \$\$;"

# --- Latency at a steady 5,000 transactions/s ---------------------------------------------------
write_config cdcd_latency "$work/latency.jsonl" 5ms
touch "$work/latency.jsonl"
"$build/cdcd" run --config "$work/cdcd.yaml" 2>"$work/cdcd-latency.log" &
cdcd_pid=$!
until [ "$(psql_ -Atc "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cdcd_latency' AND active")" = 1 ]; do
  kill -0 "$cdcd_pid" 2>/dev/null || { cat "$work/cdcd-latency.log" >&2; exit 1; }
  sleep 0.1
done
"$python" - "$work/latency.jsonl" "$((latency_seconds + 5))" >"$work/latency.txt" <<'PY' &
import json, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
latencies, pending = [], b""
end = time.time() + seconds
with open(path, "rb") as f:
    while time.time() < end:
        chunk = f.read(1 << 20)
        if not chunk:
            time.sleep(0.0005)
            continue
        arrived = time.time() * 1e6
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            latencies.append((arrived - json.loads(line)["timestamp"]) / 1000.0)
latencies.sort()
q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))]
print("%d %.2f %.2f %.2f" % (len(latencies), q(0.50), q(0.99), latencies[-1]))
PY
tailer=$!
echo 'INSERT INTO lat (v) VALUES (1);' >"$work/lat.sql"
# With synchronous_commit off, a commit reaches the walsender only when the WAL writer flushes it
# (every wal_writer_delay, 200ms): the latency run uses the default, on (fsync stays off).
PGOPTIONS="-c synchronous_commit=on" pgbench -n -h 127.0.0.1 -p "$port" -U postgres -c 4 -j 2 -R 5000 -T "$latency_seconds" \
  -f "$work/lat.sql" postgres >"$work/pgbench.txt" 2>&1
wait "$tailer"
read -r count p50 p99 max <"$work/latency.txt"
tps=$(awk '/^tps/ {printf "%.0f", $3}' "$work/pgbench.txt")
printf 'latency at %s txn/s (%d changes): commit -> file sink ack p50 %s ms, p99 %s ms, max %s ms\n' \
  "$tps" "$count" "$p50" "$p99" "$max"
kill -TERM "$cdcd_pid"
wait "$cdcd_pid" || true
cdcd_pid=""

# Baseline under the same load: pg_recvlogical (test_decoding, with commit timestamps) measures
# commit -> received by a client; what cdcd adds on top is its pipeline and the file sink.
psql_ -c "SELECT pg_create_logical_replication_slot('baseline_latency', 'test_decoding')" >/dev/null
"$pgbin/pg_recvlogical" --no-loop -d "$dsn" -S baseline_latency --start -f - -F 0 \
  -o include-timestamp=1 2>/dev/null | "$python" -c '
import datetime, sys, time
seconds, latencies = float(sys.argv[1]), []
start = time.time()
for line in sys.stdin:
    if line.startswith("COMMIT"):
        stamp = line[line.index("(at ") + 4:line.rindex(")")].replace(" ", "T")
        latencies.append((time.time() - datetime.datetime.fromisoformat(stamp).timestamp()) * 1000)
    if time.time() - start > seconds:
        break
latencies.sort()
q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))]
print("%d %.2f %.2f %.2f" % (len(latencies), q(0.50), q(0.99), latencies[-1]))
' "$((latency_seconds + 2))" >"$work/baseline.txt" &
baseline=$!
PGOPTIONS="-c synchronous_commit=on" pgbench -n -h 127.0.0.1 -p "$port" -U postgres -c 4 -j 2 \
  -R 5000 -T "$latency_seconds" -f "$work/lat.sql" postgres >"$work/pgbench.txt" 2>&1
# A commit after the tailer's time is up ends it; pg_recvlogical then ends on the broken pipe.
sleep 3
psql_ -c "INSERT INTO lat (v) VALUES (0)"
wait "$baseline" || true
read -r count p50 p99 max <"$work/baseline.txt"
tps=$(awk '/^tps/ {printf "%.0f", $3}' "$work/pgbench.txt")
printf 'baseline at %s txn/s (%d commits): commit -> pg_recvlogical p50 %s ms, p99 %s ms, max %s ms\n' \
  "$tps" "$count" "$p50" "$p99" "$max"
