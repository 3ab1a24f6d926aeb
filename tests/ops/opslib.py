"""Shared helpers of the ops tests (run with /usr/bin/python3: they use Debian's python3-* modules).

Each test script is one ctest test: it prints what it checks and exits non-zero on the first failed
check. Every check also runs against a mutated input where that is cheap, to show it can fail.
"""
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.environ.get("CDCD_TOOLS_DIR", os.path.join(ROOT, ".ci", ".tools"))
HELM = os.path.join(TOOLS, "bin", "helm", "helm")
NODE_MODULES = os.path.join(TOOLS, "node_modules")
CHART = os.path.join(ROOT, "helm", "cdcd")
RULES = os.path.join(CHART, "files", "cdcd-alerts.yml")
DASHBOARD = os.path.join(CHART, "files", "cdcd-dashboard.json")


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def run(args, *, expect_ok=True, **kwargs):
    """Runs a command, returns the CompletedProcess; with expect_ok, fails the test on non-zero exit."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    result = subprocess.run(args, **kwargs)
    if expect_ok and result.returncode != 0:
        raise CheckFailed(f"{' '.join(map(str, args))} exited {result.returncode}:\n"
                          f"{result.stdout}\n{result.stderr}")
    return result


def must_fail(what, function, *args, **kwargs):
    """Runs a check on a mutated input and fails unless the check fails."""
    try:
        function(*args, **kwargs)
    except CheckFailed as failure:
        summary = " ".join(str(failure).split())
        print(f"  ok: mutation caught ({what}): {summary[:200]}")
        return str(failure)
    raise CheckFailed(f"mutation not caught: {what}")


def require_tools():
    if not os.path.exists(HELM) or not os.path.isdir(NODE_MODULES):
        raise CheckFailed(f"the npm tools are missing in {TOOLS}: run tests/ops/install-tools.sh "
                          "(.ci/install-deps does)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


def wait_for(what, condition, timeout, interval=0.2):
    """Polls condition() until it returns a truthy value; returns it or fails after timeout."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as error:  # the server may not listen yet
            last_error = error
        time.sleep(interval)
    raise CheckFailed(f"timed out after {timeout} s waiting for {what} (last error: {last_error})")


@contextlib.contextmanager
def temp_dir(prefix="cdcd-ops."):
    path = tempfile.mkdtemp(prefix=prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def process(args, **kwargs):
    """Starts a process in its own process group; stops it (TERM, then KILL) when the block ends."""
    child = subprocess.Popen(args, start_new_session=True, **kwargs)
    try:
        yield child
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


def main(test):
    """Runs test() and turns a CheckFailed into a message and exit code 1."""
    started = time.monotonic()
    try:
        test()
    except CheckFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
    print(f"passed in {time.monotonic() - started:.1f} s")


# Values a query gets once Grafana has replaced the dashboard's variables ("All" selected).
DASHBOARD_VARIABLES = {"$__rate_interval": "1m", "$job": ".*", "$source": ".*", "$consumer": ".*"}


def dashboard_queries(dashboard):
    """Every PromQL query of a dashboard as (where, expression), variables replaced: panel targets,
    and the series selector of each label_values(SELECTOR, LABEL) variable query."""
    import re
    queries = []
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            queries.append((f"panel {panel.get('title')!r} target {target.get('refId')}", target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
        if not match:
            raise CheckFailed(f"variable {variable['name']}: not a label_values(SELECTOR, LABEL) query: {query}")
        queries.append((f"variable {variable['name']} (label {match.group(2)})", match.group(1)))
    resolved = []
    for where, expression in queries:
        for name in sorted(DASHBOARD_VARIABLES, key=len, reverse=True):
            expression = expression.replace(name, DASHBOARD_VARIABLES[name])
        if "$" in expression:
            raise CheckFailed(f"{where}: unknown variable in {expression}")
        resolved.append((where, expression))
    return resolved
