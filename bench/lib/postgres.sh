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

# Waits until cdcd (pid $1) has acknowledged $2 changes (cdcd_events_total on its /metrics at
# $metrics_port), then prints the time. One process polling over a kept-alive connection: a curl
# per poll would take CPU from the very processes being measured.
wait_for_events() {  # pid, number of changes
  "$python" - "$1" "$2" "$metrics_port" <<'PY'
import http.client, os, sys, time
pid, wanted, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
connection = None
while True:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("cdcd exited before acknowledging %d changes" % wanted)
    try:
        connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
        done = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("cdcd_events_total{"))
        if done >= wanted:
            print("%.6f" % time.time())
            break
    except (OSError, http.client.HTTPException):
        connection = None
    # Each scrape costs cdcd about a millisecond of CPU: poll no faster than the end needs.
    time.sleep(0.05)
PY
}

# Samples, in the background, the CPU time of the walsender serving a slot until it exits (or
# until walsender_seconds asks it to stop), and the TCP segments it sent (ss: the server's
# busiest connection); the last values land in $work/walsender-SLOT as "CPU_SECONDS SEGMENTS".
sample_walsender() {  # slot
  "$python" - "$dsn" "$1" "$work/walsender-$1" "$port" <<'PY' &
import os, re, subprocess, sys, time
import psycopg2

def segments_sent():
    report = subprocess.run(["ss", "-tinH", "sport = :" + sys.argv[4]], capture_output=True,
                            text=True).stdout
    counts = [(int(sent), int(segments)) for sent, segments in
              re.findall(r"bytes_sent:(\d+).*?segs_out:(\d+)", report.replace("\n", " "))]
    return max(counts)[1] if counts else 0

connection = psycopg2.connect(sys.argv[1])
connection.autocommit = True
cursor = connection.cursor()
pid = None
for _ in range(3000):
    cursor.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                   (sys.argv[2],))
    row = cursor.fetchone()
    if row and row[0]:
        pid = row[0]
        break
    time.sleep(0.01)
connection.close()
ticks, seconds, segments, polls = os.sysconf("SC_CLK_TCK"), 0.0, 0, 0
while pid and not os.path.exists(sys.argv[3] + ".stop"):
    try:
        fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    except OSError:
        break
    seconds = (int(fields[11]) + int(fields[12])) / ticks
    polls += 1
    if polls % 5 == 0:
        segments = max(segments, segments_sent())
    time.sleep(0.02)
open(sys.argv[3], "w").write("%.3f %d\n" % (seconds, segments))
PY
}

# Ends the sampler and prints the walsender's "CPU_SECONDS SEGMENTS".
walsender_seconds() {  # slot
  touch "$work/walsender-$1.stop"
  # Waits on the file, not the process: callers run this in a command substitution, a subshell
  # that cannot wait for its parent's children.
  until [ -s "$work/walsender-$1" ]; do sleep 0.01; done
  cat "$work/walsender-$1"
}

# pg_recvlogical decoding a slot up to an end position into /dev/null: prints "SECONDS CPU_SECONDS
# WALSENDER_CPU_SECONDS WALSENDER_SEGMENTS".
recvlogical_run() {  # slot, end position
  local start end
  sample_walsender "$1"
  start=$(now)
  /usr/bin/time -f "%U %S" -o "$work/recv-time.txt" "$pgbin/pg_recvlogical" --no-loop -d "$dsn" \
    -S "$1" --start -E "$2" -f /dev/null -o proto_version=1 -o publication_names=pub
  end=$(now)
  echo "$(echo "$end - $start" | bc -l) $(awk '{print $1 + $2}' "$work/recv-time.txt")" \
    "$(walsender_seconds "$1")"
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
