# Sourced by the PostgreSQL benchmarks: a throwaway PostgreSQL 15 server tuned for decoding speed
# (fsync off), on a free loopback port in $work. The caller sets `work` and calls stop_postgres
# from its EXIT trap.
pgbin=/usr/lib/postgresql/15/bin
python=/usr/bin/python3

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

start_postgres() {
  port=$(free_port)
  mkdir "$work/data"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$work/data"
  chmod 700 "$work/data"
  as_postgres "$pgbin/initdb" -D "$work/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
    --no-sync >/dev/null
  cat >>"$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work/data'
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 256MB
max_wal_size = 8GB
CONF
  as_postgres "$pgbin/pg_ctl" -D "$work/data" -l "$work/data/server.log" -w start >/dev/null
  dsn="host=127.0.0.1 port=$port dbname=postgres user=postgres"
}

stop_postgres() {
  [ -f "$work/data/postmaster.pid" ] &&
    as_postgres "$pgbin/pg_ctl" -D "$work/data" -m immediate -w stop >/dev/null 2>&1 || true
}

psql_() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"; }

# Sums a counter family on cdcd's /metrics at $metrics_port.
metric_sum() {
  curl -s "http://127.0.0.1:$metrics_port/metrics" |
    awk -v name="$1" 'index($0, name "{") == 1 {sum += $NF} END {printf "%d\n", sum}'
}

# pg_recvlogical decoding a slot up to an end position into /dev/null: prints "SECONDS CPU_SECONDS".
recvlogical_run() {  # slot, end position
  local start end
  start=$(now)
  /usr/bin/time -f "%U %S" -o "$work/recv-time.txt" "$pgbin/pg_recvlogical" --no-loop -d "$dsn" \
    -S "$1" --start -E "$2" -f /dev/null -o proto_version=1 -o publication_names=pub
  end=$(now)
  echo "$(echo "$end - $start" | bc -l) $(awk '{print $1 + $2}' "$work/recv-time.txt")"
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
