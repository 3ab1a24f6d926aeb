# Sourced by the Kafka benchmarks: librdkafka's mock cluster (3 brokers) as a separate process,
# with `mock` sending commands to its control port and `topic_count` counting a topic's messages
# through an independent client (kcat). The caller sets `work` and `build` (holding
# tools/kafka_mock_cluster) and calls stop_mock_cluster from its EXIT trap.
mock_pid=""

start_mock_cluster() {
  "$build/tools/kafka_mock_cluster" >"$work/mock.out" 2>"$work/mock.err" &
  mock_pid=$!
  for _ in $(seq 100); do grep -q '^control=' "$work/mock.out" && break; sleep 0.1; done
  bootstrap=$(sed -n 's/^bootstrap=//p' "$work/mock.out")
  local control
  control=$(sed -n 's/^control=//p' "$work/mock.out")
  [ -n "$control" ] || { echo "the mock cluster did not start: $(cat "$work/mock.err")" >&2; exit 1; }
  exec 3<>"/dev/tcp/127.0.0.1/$control"
}

stop_mock_cluster() {
  if [ -n "$mock_pid" ]; then
    kill "$mock_pid" 2>/dev/null || true
    wait "$mock_pid" 2>/dev/null || true
  fi
}

mock() {
  echo "$*" >&3
  local reply
  read -r reply <&3
  [ "$reply" = ok ] || { echo "mock cluster: $*: $reply" >&2; exit 1; }
}

# Messages in a topic of $2 partitions: the sum of its partitions' high watermarks.
topic_count() {
  local args=()
  for p in $(seq 0 $(($2 - 1))); do args+=(-t "$1:$p:-1"); done
  kcat -b "$bootstrap" -Q "${args[@]}" | awk '{sum += $NF} END {print sum + 0}'
}
