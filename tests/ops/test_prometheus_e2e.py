#!/usr/bin/python3
"""End to end on loopback: a real Prometheus (Debian's) scrapes a real cdcd that reads a JSONL change
log (into a stdout sink whose pipe this test reads) and a PostgreSQL 15 slot (into a file sink).
1. Every query of the Grafana dashboard returns data (a misspelt metric would not).
2. The test stops reading cdcd's stdout: the sink stalls, CdcdConsumerLagHigh (from the real rules
   file, its threshold and pending period shortened from 300 s / 5m to 3 s / 5s) fires; the test
   reads again, the sink recovers and the alert resolves.
Usage: test_prometheus_e2e.py CDCD_BINARY"""
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

import psycopg2

from opslib import (DASHBOARD, RULES, CheckFailed, check, dashboard_queries, free_port, http_get, main,
                    must_fail, process, run, temp_dir, wait_for)

PGBIN = "/usr/lib/postgresql/15/bin"
LAG_RULE = ("expr: cdcd_consumer_lag_seconds{job=\"cdcd\"} > 300\n        for: 5m",
            "expr: cdcd_consumer_lag_seconds{job=\"cdcd\"} > 3\n        for: 5s")


class Postgres:
    def __init__(self, work):
        self.data = os.path.join(work, "pg")
        self.port = free_port()
        os.makedirs(self.data, mode=0o700)
        postgres = pwd.getpwnam("postgres")
        os.chown(self.data, postgres.pw_uid, postgres.pw_gid)
        os.chmod(work, 0o755)  # the server runs as postgres and must reach its directory

    def start(self):
        as_postgres = ["runuser", "-u", "postgres", "--"]
        run(as_postgres + [f"{PGBIN}/initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                           "--locale=C.UTF-8"])
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.data}'\n"
                    "wal_level = logical\nmax_replication_slots = 4\nmax_wal_senders = 4\nfsync = off\n"
                    # A WAL budget, so that the dashboard's budget query has a line to show.
                    "max_slot_wal_keep_size = 1GB\n"
                    "synchronous_commit = off\n")
        run(as_postgres + [f"{PGBIN}/pg_ctl", "-D", self.data, "-l", os.path.join(self.data, "server.log"),
                           "-w", "-t", "30", "start"])
        connection = self.connect()
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE orders (id serial PRIMARY KEY, status text)")
        connection.close()

    def connect(self):
        connection = psycopg2.connect(host="127.0.0.1", port=self.port, dbname="postgres", user="postgres")
        connection.autocommit = True
        return connection

    def stop(self):
        run(["runuser", "-u", "postgres", "--", f"{PGBIN}/pg_ctl", "-D", self.data, "-m", "immediate", "-w",
             "stop"], expect_ok=False)


class ChangeWriter(threading.Thread):
    """Appends changes with the current commit time to the JSONL log (and rows to PostgreSQL), about
    200 a second, until stopped."""

    def __init__(self, path, postgres):
        super().__init__(daemon=True)
        self.path, self.postgres, self.stopped = path, postgres, threading.Event()
        self.lsn = 1000

    def run(self):
        connection = self.postgres.connect()
        with open(self.path, "a") as log:
            while not self.stopped.is_set():
                now_us = int(time.time() * 1e6)
                for seq in range(20):
                    log.write(json.dumps({"lsn": self.lsn, "seq": seq, "timestamp": now_us, "entity": "public.orders",
                                          "key": {"id": seq}, "operation": ["insert", "update", "delete"][seq % 3],
                                          "old": None, "new": {"id": seq, "status": "x" * 40}}) + "\n")
                log.flush()
                self.lsn += 1
                with connection.cursor() as cursor:
                    cursor.execute("INSERT INTO orders (status) VALUES ('new')")
                self.stopped.wait(0.1)
        connection.close()


class PipeReader(threading.Thread):
    """Reads cdcd's stdout while `reading` is set; when cleared, the pipe fills and the sink blocks."""

    def __init__(self, pipe):
        super().__init__(daemon=True)
        self.pipe, self.reading, self.lines = pipe, threading.Event(), 0
        self.reading.set()

    def run(self):
        while True:
            self.reading.wait()
            chunk = self.pipe.read1(65536)
            if not chunk:
                return
            self.lines += chunk.count(b"\n")


class Prometheus:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def query(self, expression):
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        status, body = http_get(url, timeout=5)
        answer = json.loads(body)
        if answer.get("status") != "success":
            raise CheckFailed(f"query {expression} failed: {answer}")
        return answer["data"]["result"]

    def alerts(self, name):
        _, body = http_get(f"{self.base}/api/v1/alerts")
        return [a for a in json.loads(body)["data"]["alerts"] if a["labels"]["alertname"] == name]


def query_has_data(prometheus, where, expression):
    """A dashboard query returns at least one series with a finite value (label_values selectors:
    a series carrying the variable's label)."""
    result = prometheus.query(expression)
    check(result, f"{where}: no data for {expression}")
    if where.startswith("variable"):
        label = where.split("label ")[1].rstrip(")")
        check(any(label in series["metric"] for series in result), f"{where}: no series with label {label}")
    else:
        values = [float(series["value"][1]) for series in result]
        check(any(v == v and abs(v) != float("inf") for v in values), f"{where}: only NaN/Inf for {expression}")


def check_dashboard_queries(prometheus, queries):
    failures = []
    for where, expression in queries:
        try:
            query_has_data(prometheus, where, expression)
        except CheckFailed as failure:
            failures.append(str(failure))
    check(not failures, "\n".join(failures))


def lag_alert_state(prometheus):
    states = {a["state"] for a in prometheus.alerts("CdcdConsumerLagHigh") if a["labels"].get("consumer") == "stream"}
    return states.pop() if states else "inactive"


def test(cdcd):
    with open(DASHBOARD) as f:
        queries = dashboard_queries(json.load(f))
    with open(RULES) as f:
        rules = f.read()
    check(rules.count(LAG_RULE[0]) == 1, "the lag rule of the rules file changed: update LAG_RULE")
    with temp_dir() as work:
        postgres = Postgres(work)
        try:
            postgres.start()
            run_pipeline(cdcd, work, postgres, queries, rules.replace(*LAG_RULE))
        finally:
            postgres.stop()


def run_pipeline(cdcd, work, postgres, queries, rules):
    changelog = os.path.join(work, "changes.jsonl")
    open(changelog, "w").close()
    metrics_port, prometheus_port = free_port(), free_port()
    config = os.path.join(work, "cdcd.yaml")
    with open(config, "w") as f:
        f.write(f"""sources:
  log: {{type: jsonl, path: {changelog}, follow: true, poll_interval: 50ms}}
  pg:
    type: postgres
    dsn: "host=127.0.0.1 port={postgres.port} dbname=postgres user=postgres"
    slot: cdcd_e2e
    publication: cdcd_e2e
    tables: [public.orders]
    heartbeat: 1s
    status_interval: 1s
sinks:
  pipe: {{type: stdout, format: native}}
  archive: {{type: file, path: {work}/out/pg.jsonl}}
checkpoints: {{type: file, dir: {work}/checkpoints, interval: 200ms}}
consumers:
  stream: {{source: log, sinks: [pipe], batch: {{max_events: 50, max_wait: 20ms}}}}
  pg: {{source: pg, sinks: [archive]}}
metrics: {{listen: 127.0.0.1:{metrics_port}}}
shutdown_timeout: 5s
""")
    with open(os.path.join(work, "rules.yml"), "w") as f:
        f.write(rules)
    with open(os.path.join(work, "prometheus.yml"), "w") as f:
        f.write(f"""global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [{work}/rules.yml]
scrape_configs:
  - job_name: cdcd
    static_configs: [{{targets: ["127.0.0.1:{metrics_port}"]}}]
""")
    run(["promtool", "check", "config", os.path.join(work, "prometheus.yml")])
    writer = ChangeWriter(changelog, postgres)
    with open(os.path.join(work, "cdcd.log"), "w") as log, \
            process([cdcd, "run", "--config", config], stdout=subprocess.PIPE, stderr=log) as daemon, \
            process(["prometheus", f"--config.file={work}/prometheus.yml", f"--storage.tsdb.path={work}/tsdb",
                     f"--web.listen-address=127.0.0.1:{prometheus_port}"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as prometheus_process:
        reader = PipeReader(daemon.stdout)
        reader.start()
        writer.start()
        try:
            exercise(Prometheus(prometheus_port), reader, queries, f"http://127.0.0.1:{metrics_port}")
        except CheckFailed:
            with open(os.path.join(work, "cdcd.log")) as f:
                print("cdcd's log (last lines):\n" + "".join(f.readlines()[-20:]), file=sys.stderr)
            raise
        finally:
            writer.stopped.set()
            writer.join()
            reader.reading.set()
        os.killpg(daemon.pid, signal.SIGTERM)
        check(daemon.wait(timeout=30) == 0, "cdcd did not stop cleanly")
        check(prometheus_process.poll() is None, "prometheus died")


def exercise(prometheus, reader, queries, cdcd_base):
    started = time.monotonic()
    wait_for("cdcd ready", lambda: http_get(f"{cdcd_base}/readyz")[0] == 200, timeout=30)
    print("every dashboard query returns data from Prometheus scraping cdcd")
    wait_for("two scrapes with deliveries on both consumers",
             lambda: len(prometheus.query('sum by (consumer) (increase(cdcd_events_total{job="cdcd"}[1m])) > 0')) == 2,
             timeout=40)
    try:
        wait_for("every dashboard query to return data", lambda: check_dashboard_queries(prometheus, queries) or True,
                 timeout=20)
    except CheckFailed:
        check_dashboard_queries(prometheus, queries)  # report which queries have no data
    print(f"  {len(queries)} queries return data ({time.monotonic() - started:.0f} s after start)")
    where, expression = queries[0]
    must_fail("misspelt metric", query_has_data, prometheus, where,
              expression.replace("cdcd_consumer_lag_seconds", "cdcd_consumer_lag_second"))
    check(lag_alert_state(prometheus) == "inactive", "the lag alert is active while the consumer keeps up")

    print("the stdout sink stalls: CdcdConsumerLagHigh fires")
    reader.reading.clear()
    stalled = time.monotonic()
    wait_for("CdcdConsumerLagHigh firing", lambda: lag_alert_state(prometheus) == "firing", timeout=45, interval=0.5)
    lag = float(prometheus.query('cdcd_consumer_lag_seconds{consumer="stream"}')[0]["value"][1])
    print(f"  firing {time.monotonic() - stalled:.0f} s after the stall (lag {lag:.0f} s)")
    check(lag > 3, f"lag {lag} while the alert fires")

    print("the sink recovers: the alert resolves")
    reader.reading.set()
    recovered = time.monotonic()
    wait_for("CdcdConsumerLagHigh resolved", lambda: lag_alert_state(prometheus) == "inactive", timeout=30,
             interval=0.5)
    lag = float(prometheus.query('cdcd_consumer_lag_seconds{consumer="stream"}')[0]["value"][1])
    print(f"  resolved {time.monotonic() - recovered:.0f} s after recovery (lag {lag:.1f} s)")
    check(lag < 3, f"lag {lag} after the alert resolved")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(lambda: test(os.path.abspath(sys.argv[1])))
