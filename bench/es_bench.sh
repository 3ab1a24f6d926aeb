#!/usr/bin/env bash
# Benchmark (not a test): COUNT changes jsonl -> the Elasticsearch sink -> the `_bulk` test server
# (tests/support/es_test_server.py, a stand-in: no real Elasticsearch runs here), compared in the
# same run with `curl` posting the same bulk bodies (built once beforehand, the same action and
# source lines the sink writes, in requests of the same size) to the same server with the same
# number of parallel requests. Both sides use uncompressed bodies, so that they send the same bytes;
# a third run of cdcd with gzip gives the compressed bytes per change. Prints both rates, the ratio,
# bytes per change on the wire with and without gzip, and cdcd's peak RSS, medians of RUNS runs.
# The test server (Python) is the slowest part of the chain: the ratio measures how close cdcd comes
# to a client that only sends ready-made bodies.
# Usage: bench/es_bench.sh [COUNT] [RUNS]      (BUILD_DIR overrides the build directory)
set -euo pipefail
count=${1:-1000000}
runs=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
work=$(mktemp -d /tmp/cdcd-es-bench.XXXXXX)
server_pid=""
concurrency=4
max_actions=1000
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

cmake --build "$build" --target cdcd -- -j2 >/dev/null

python3 "$root/bench/generate_changelog.py" --count "$count" --keys 20000 \
  --output "$work/changes.jsonl"
echo "input: $count changes, $(($(stat -c %s "$work/changes.jsonl") / 1024 / 1024)) MiB"

# curl's side: the bodies the sink builds (index "{schema}_{table}", _id the key, version the lsn,
# the row with the version field first; deletes carry no source), $max_actions actions each, one
# file per request, and a curl config posting them all.
python3 - "$work/changes.jsonl" "$work/bodies" "$max_actions" <<'PY'
import json, os, sys
source, out_dir, per_request = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs(out_dir)
def body_lines(change):
    schema, table = change["entity"].rsplit(".", 1)
    key = change["key"]
    doc_id = str(next(iter(key.values())))
    meta = {"_index": f"{schema}_{table}", "_id": doc_id, "version": change["lsn"],
            "version_type": "external_gte"}
    if change["operation"] == "delete":
        return json.dumps({"delete": meta}, separators=(",", ":"), ensure_ascii=False) + "\n"
    row = {"_cdc_version": change["lsn"], **change["new"]}
    return (json.dumps({"index": meta}, separators=(",", ":"), ensure_ascii=False) + "\n" +
            json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n")
files, chunk = 0, []
def flush():
    global files, chunk
    if chunk:
        with open(os.path.join(out_dir, f"{files:06d}.ndjson"), "w", encoding="utf-8") as out:
            out.write("".join(chunk))
        files += 1
        chunk = []
with open(source, encoding="utf-8") as lines:
    for line in lines:
        chunk.append(body_lines(json.loads(line)))
        if len(chunk) == per_request:
            flush()
flush()
PY
port_file="$work/port"
/usr/bin/python3 "$root/tests/support/es_test_server.py" --port-file "$port_file" --no-log \
  >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
for _ in $(seq 100); do [ -s "$port_file" ] && break; sleep 0.1; done
url="http://127.0.0.1:$(cat "$port_file")"
first=1
for body in "$work"/bodies/*.ndjson; do
  [ "$first" -eq 1 ] || echo "next"
  first=0
  printf 'url = "%s/_bulk"\ndata-binary = "@%s"\nheader = "Content-Type: application/x-ndjson"\noutput = "/dev/null"\n' \
    "$url" "$body"
done >"$work/curl.cfg"
body_bytes=$(cat "$work"/bodies/*.ndjson | wc -c)

reset_server() { curl -sf -X POST "$url/_control/reset" >/dev/null; }
counter() { curl -sf "$url/_control/state" | python3 -c "import json,sys; print(json.load(sys.stdin)['counters']['$1'])"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

run_cdcd() {  # $1: compression; prints "rate rss_kib wire_bytes body_bytes"
  cat >"$work/bench.yaml" <<YAML
sources:
  log: {type: jsonl, path: $work/changes.jsonl, follow: false}
sinks:
  search:
    type: elasticsearch
    urls: ["$url"]
    index: "{schema}_{table}"
    bulk: {max_actions: $max_actions, concurrency: $concurrency, compression: $1}
checkpoints: {type: file, dir: $work/checkpoints.$1.$RANDOM, interval: 1s}
consumers:
  all: {source: log, sinks: [search], batch: {max_events: $((max_actions * concurrency)), max_wait: 50ms}}
log: {level: error}
YAML
  reset_server
  local start end
  start=$(date +%s.%N)
  timeout 900 /usr/bin/time -f "%M" -o "$work/time.txt" "$build/cdcd" run --config "$work/bench.yaml"
  end=$(date +%s.%N)
  [ "$(counter item_failures)" -eq 0 ] || { echo "items failed on the server" >&2; exit 1; }
  echo "$(echo "$count / ($end - $start)" | bc -l) $(cat "$work/time.txt") $(counter wire_bytes) $(counter bytes)"
}

cdcd_rates=() curl_rates=() cdcd_rss=() gzip_wire=() plain_wire=()
for run in $(seq "$runs"); do
  read -r rate rss wire plain < <(run_cdcd none)
  cdcd_rates+=("$rate") cdcd_rss+=("$rss") plain_wire+=("$wire")
  reset_server
  start=$(date +%s.%N)
  curl --no-progress-meter --fail --parallel --parallel-max "$concurrency" -K "$work/curl.cfg"
  end=$(date +%s.%N)
  items=$(counter items)
  [ "$items" -eq "$count" ] || { echo "curl's bodies made $items items, expected $count" >&2; exit 1; }
  # Parallel requests carry versions of one document out of order: the older ones get 409 (as the
  # sink's would); anything else is a failure.
  other=$(curl -sf "$url/_control/state" | python3 -c "import json,sys; s=json.load(sys.stdin)['counters']['failures_by_status']; print(sum(v for k, v in s.items() if k != '409'))")
  [ "$other" -eq 0 ] || { echo "curl's items failed on the server: $(counter failures_by_status)" >&2; exit 1; }
  curl_rates+=("$(echo "$count / ($end - $start)" | bc -l)")
  read -r grate grss gwire gplain < <(run_cdcd gzip)
  gzip_wire+=("$gwire") cdcd_rss+=("$grss")
  printf 'run %d: cdcd %.0f changes/s (peak RSS %d KiB), curl %.0f changes/s, ratio %.2f; cdcd with gzip %.0f changes/s; bytes/change: %.1f plain, %.1f gzip (curl bodies %.1f)\n' \
    "$run" "$rate" "$rss" "${curl_rates[-1]}" "$(echo "$rate / ${curl_rates[-1]}" | bc -l)" "$grate" \
    "$(echo "$wire / $count" | bc -l)" "$(echo "$gwire / $count" | bc -l)" "$(echo "$body_bytes / $count" | bc -l)"
done
cdcd_rate=$(printf '%s\n' "${cdcd_rates[@]}" | median)
curl_rate=$(printf '%s\n' "${curl_rates[@]}" | median)
printf 'median: cdcd %.0f changes/s, curl %.0f changes/s, ratio %.2f (target >= 0.8)\n' \
  "$cdcd_rate" "$curl_rate" "$(echo "$cdcd_rate / $curl_rate" | bc -l)"
printf 'median bytes/change on the wire: %.1f without gzip, %.1f with gzip\n' \
  "$(echo "$(printf '%s\n' "${plain_wire[@]}" | median) / $count" | bc -l)" \
  "$(echo "$(printf '%s\n' "${gzip_wire[@]}" | median) / $count" | bc -l)"
printf 'median cdcd peak RSS %.1f MiB (target < 96 MiB)\n' \
  "$(echo "$(printf '%s\n' "${cdcd_rss[@]}" | median) / 1024" | bc -l)"
