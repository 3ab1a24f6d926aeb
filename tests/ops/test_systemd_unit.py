#!/usr/bin/python3
"""The systemd unit configs/systemd/cdcd.service: `systemd-analyze verify` with nothing on stderr,
`systemd-analyze security --offline` exposure <= 2.0, and a traced run of the real daemon showing that
every system call and socket family it uses passes the unit's SystemCallFilter and
RestrictAddressFamilies (systemd is not PID 1 here, so the unit itself cannot run). Each check is
also run on a mutated unit to show it fails.
Usage: test_systemd_unit.py CDCD_BINARY KAFKA_MOCK_CLUSTER_BINARY"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

from opslib import ROOT, check, free_port, http_get, main, must_fail, process, run, temp_dir, wait_for

UNIT = os.path.join(ROOT, "configs", "systemd", "cdcd.service")


def read_unit():
    with open(UNIT) as f:
        return f.read()


def mutated(text, old, new):
    check(old in text, f"mutation anchor {old!r} not in the unit")
    return text.replace(old, new, 1)


def verify(unit_text, cdcd, work):
    """systemd-analyze verify in a root holding the unit, the binary at its ExecStart path and
    systemd's own units; most mistakes only warn (exit 0), so any stderr fails."""
    root = os.path.join(work, "root")
    shutil.rmtree(root, ignore_errors=True)
    for path in ("usr/bin", "bin", "etc/systemd/system", "lib/systemd"):
        os.makedirs(os.path.join(root, path))
    shutil.copy(cdcd, os.path.join(root, "usr/bin/cdcd"))
    shutil.copy("/bin/kill", os.path.join(root, "bin/kill"))
    shutil.copytree("/lib/systemd/system", os.path.join(root, "lib/systemd/system"), symlinks=True)
    with open(os.path.join(root, "etc/systemd/system/cdcd.service"), "w") as f:
        f.write(unit_text)
    result = run(["systemd-analyze", "verify", "--man=no", f"--root={root}", "cdcd.service"], expect_ok=False)
    check(result.returncode == 0 and not result.stderr.strip(),
          f"systemd-analyze verify (exit {result.returncode}):\n{result.stderr}")


def exposure(unit_text, work):
    path = os.path.join(work, "cdcd.service")
    with open(path, "w") as f:
        f.write(unit_text)
    result = run(["systemd-analyze", "security", "--offline=yes", "--threshold=20", path], expect_ok=False)
    match = re.search(r"Overall exposure level for cdcd.service: (\d+\.\d+)", result.stdout)
    check(match, f"no exposure level in:\n{result.stdout}{result.stderr}")
    check(result.returncode == 0 and float(match.group(1)) <= 2.0,
          f"exposure {match.group(1)} > 2.0 (exit {result.returncode})")
    return float(match.group(1))


def syscall_groups():
    """Every group of `systemd-analyze syscall-filter`, as group -> entries (calls and @groups)."""
    groups, current = {}, None
    for line in run(["systemd-analyze", "syscall-filter"]).stdout.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), set())
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.add(line.strip())
    return groups


def expand(entries, groups):
    calls = set()
    for entry in entries:
        calls |= expand(groups[entry], groups) if entry.startswith("@") else {entry}
    return calls


def unit_filter(unit_text):
    """The set of system calls the unit's SystemCallFilter= lines allow (allow list, then ~ denials)."""
    groups = syscall_groups()
    allowed, denied = set(), set()
    for value in re.findall(r"^SystemCallFilter=(.*)$", unit_text, re.M):
        if value.startswith("~"):
            denied |= expand(value[1:].split(), groups)
        else:
            allowed |= expand(value.split(), groups)
    check(allowed, "the unit has no SystemCallFilter allow list")
    return allowed - denied


def unit_families(unit_text):
    match = re.search(r"^RestrictAddressFamilies=(.*)$", unit_text, re.M)
    check(match, "the unit has no RestrictAddressFamilies")
    return set(match.group(1).split())


def trace_daemon(cdcd, kafka_mock, work):
    """Runs cdcd under strace through the work it does in service: validate, then run a jsonl source
    into file, stdout and Kafka sinks (librdkafka's mock cluster as the broker) with file checkpoints,
    the metrics endpoints scraped, sd_notify to a NOTIFY_SOCKET with the watchdog on, a reload
    (SIGHUP), and SIGTERM. Returns (calls, families)."""
    changelog = os.path.join(work, "changes.jsonl")
    shutil.copy(os.path.join(ROOT, "configs", "sample-changelog.jsonl"), changelog)
    port = free_port()
    with process([kafka_mock], stdout=subprocess.PIPE, text=True) as mock:
        brokers = mock.stdout.readline().strip().removeprefix("bootstrap=")
        check(brokers.startswith("127.0.0.1:"), f"kafka_mock_cluster printed {brokers!r}")
        return trace_run(cdcd, work, changelog, port, brokers)


def trace_run(cdcd, work, changelog, port, brokers):
    config = os.path.join(work, "cdcd.yaml")
    with open(config, "w") as f:
        f.write(f"""sources:
  demo: {{type: jsonl, path: {changelog}, follow: true}}
sinks:
  console: {{type: stdout, format: native}}
  archive: {{type: file, path: {work}/out/changes.jsonl, format: debezium, fsync: always}}
  events: {{type: kafka, brokers: "{brokers}", topic: "cdc.{{entity}}"}}
checkpoints: {{type: file, dir: {work}/checkpoints, interval: 200ms}}
consumers:
  everything: {{source: demo, sinks: [console, archive]}}
  to_kafka: {{source: demo, sinks: [events]}}
metrics: {{listen: 127.0.0.1:{port}}}
shutdown_timeout: 2s
""")
    trace = os.path.join(work, "trace")
    strace = ["strace", "-f", "-qq", "-o"]
    run(strace + [trace + ".validate", cdcd, "validate", "--config", config])
    notify_path = os.path.join(work, "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(0.1)
    messages = []

    def notified(text):
        try:
            while True:
                messages.append(notify.recv(4096).decode())
        except socket.timeout:
            pass
        return any(text in message for message in messages)

    env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="2000000")
    with notify, open(os.path.join(work, "stdout"), "w") as out, \
            process(strace + [trace + ".run", cdcd, "run", "--config", config], stdout=out,
                    stderr=subprocess.DEVNULL, cwd=work, env=env) as daemon:
        base = f"http://127.0.0.1:{port}"
        wait_for("changes delivered and checkpointed by both consumers",
                 lambda: all(os.path.exists(os.path.join(work, "checkpoints", f"{c}.json"))
                             for c in ("everything", "to_kafka")), timeout=60)
        for path in ("/healthz", "/readyz", "/status", "/metrics"):
            http_get(base + path)
        wait_for("READY=1 and WATCHDOG=1 on NOTIFY_SOCKET", lambda: notified("READY=1") and notified("WATCHDOG=1"),
                 timeout=60)
        os.killpg(daemon.pid, signal.SIGHUP)  # a reload: the pipeline drains and starts again
        wait_for("READY=1 again after the reload",
                 lambda: notified("RELOADING=1") and sum("READY=1" in m for m in messages) >= 2, timeout=60)
        os.killpg(daemon.pid, signal.SIGTERM)  # strace passes it on to the traced daemon
        wait_for("STOPPING=1", lambda: notified("STOPPING=1"), timeout=30)
        daemon.wait(timeout=30)
    calls, families = set(), set()
    for name in (trace + ".validate", trace + ".run"):
        with open(name) as f:
            for line in f:
                match = re.match(r"\d+\s+([a-z0-9_]+)\(", line)
                if match:
                    calls.add(match.group(1))
                families |= set(re.findall(r"\bsocket\((AF_[A-Z0-9]+)", line))
    check(len(calls) > 30, f"too few system calls traced: {sorted(calls)}")
    return calls, families


def check_filter(unit_text, calls, families):
    refused = sorted(calls - unit_filter(unit_text))
    check(not refused, f"the unit's SystemCallFilter refuses system calls cdcd makes: {refused}")
    refused = sorted(families - unit_families(unit_text))
    check(not refused, f"the unit's RestrictAddressFamilies refuses socket families cdcd uses: {refused}")


def check_notify_protocol(unit_text):
    """The unit relies on what the daemon sends (tests/integration/daemon_service_test.cc and the
    traced run check the daemon's side): readiness, the watchdog and reload by SIGHUP."""
    for directive in ("Type=notify", "NotifyAccess=main", "WatchdogSec=", "ExecReload=/bin/kill -HUP $MAINPID"):
        check(re.search(r"^" + re.escape(directive), unit_text, re.M), f"the unit lacks {directive}")


def test(cdcd, kafka_mock):
    unit = read_unit()
    with temp_dir() as work:
        print("Type=notify with a watchdog and ExecReload")
        check_notify_protocol(unit)
        must_fail("Type=exec", check_notify_protocol, mutated(unit, "Type=notify", "Type=exec"))
        must_fail("no watchdog", check_notify_protocol, mutated(unit, "WatchdogSec=60s", ""))

        print("systemd-analyze verify: nothing on stderr")
        verify(unit, cdcd, work)
        must_fail("misspelt directive", verify, mutated(unit, "ProtectSystem=strict", "ProtectSystem=strictly"),
                  cdcd, work)
        must_fail("ExecStart binary not where the unit says",
                  verify, mutated(unit, "ExecStart=/usr/bin/cdcd", "ExecStart=/usr/sbin/cdcd"), cdcd, work)

        print("systemd-analyze security --offline: exposure <= 2.0")
        print(f"  exposure {exposure(unit, work)}")
        weaker = unit
        for directive in ("PrivateDevices=yes", "ProtectSystem=strict", "SystemCallFilter=@system-service",
                          "RestrictNamespaces=yes", "CapabilityBoundingSet=\n"):
            weaker = mutated(weaker, directive, "")
        must_fail("hardening removed", exposure, weaker, work)

        print("the traced daemon stays within SystemCallFilter and RestrictAddressFamilies")
        calls, families = trace_daemon(cdcd, kafka_mock, work)
        check_filter(unit, calls, families)
        print(f"  {len(calls)} system calls, socket families {sorted(families)}")
        must_fail("a filter without @network-io",
                  check_filter, mutated(unit, "SystemCallFilter=~@privileged @resources",
                                        "SystemCallFilter=~@privileged @resources @network-io"), calls, families)
        must_fail("AF_INET not allowed", check_filter,
                  mutated(unit, "RestrictAddressFamilies=AF_INET ", "RestrictAddressFamilies="), calls, families)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(lambda: test(*map(os.path.abspath, sys.argv[1:])))
