#!/usr/bin/python3
"""The Grafana dashboard (helm/cdcd/files/cdcd-dashboard.json) against Grafana's published dashboard
types (@grafana/schema, checked by the TypeScript compiler), and every query parsed by promtool.
That every query returns data from a real cdcd is checked by test_prometheus_e2e.py."""
import copy
import json
import os
import re

from opslib import (CheckFailed, DASHBOARD, NODE_MODULES, check, dashboard_queries, main, must_fail,
                    require_tools, run, temp_dir)

GRAFANA_TYPES = os.path.join(NODE_MODULES, "@grafana", "schema", "dist", "types", "raw", "dashboard", "x",
                             "types.gen.d.ts")
TSC = os.path.join(NODE_MODULES, ".bin", "tsc")


def grafana_types_without_enums():
    """The generated declarations with each `declare enum` turned into the union of its values: a
    dashboard is JSON, where an enum member is written as its value (graphTooltip: 1)."""
    with open(GRAFANA_TYPES) as f:
        text = f.read()

    members = {}

    def union(match):
        pairs = [member.split("=", 1) for member in match.group(2).split(",") if "=" in member]
        for name, value in pairs:
            members[f"{match.group(1)}.{name.strip()}"] = value.strip()
        return f"export type {match.group(1)} = {' | '.join(value.strip() for _, value in pairs)};"

    text, count = re.subn(r"export declare enum (\w+) \{([^}]*)\}", union, text)
    check(count > 5, f"expected the dashboard enums in {GRAFANA_TYPES}, found {count}")
    # Members used as types (kind: MappingType.ValueToText) become their literal values.
    return re.sub(r"\b\w+\.\w+\b", lambda m: members.get(m.group(0), m.group(0)), text)


def schema_errors(dashboards, work):
    """Type-checks each dashboard as a `Dashboard` in one compiler run (a run costs seconds); returns
    the compiler's error lines per dashboard name."""
    with open(os.path.join(work, "types.ts"), "w") as f:
        f.write(grafana_types_without_enums())
    files = []
    for name, dashboard in dashboards.items():
        files.append(os.path.join(work, f"{name}.ts"))
        with open(files[-1], "w") as f:
            f.write('import type { Dashboard } from "./types";\n'
                    f"export const dashboard: Dashboard = {json.dumps(dashboard, indent=2)};\n")
    result = run([TSC, "--noEmit", "--strict", "--target", "es2022", "--module", "esnext", *files],
                 expect_ok=False)
    errors = {name: [] for name in dashboards}
    for line in (result.stdout + result.stderr).splitlines():
        if line.startswith(" "):  # the explanation of the error above
            continue
        match = re.search(r"(\w+)\.ts\(\d+,\d+\): error", line)
        check(match and match.group(1) in errors, f"unexpected compiler output: {line}")
        errors[match.group(1)].append(line)
    check((result.returncode == 0) == (not any(errors.values())), f"tsc exited {result.returncode}")
    return errors


def check_queries_parse(dashboard, work):
    queries = dashboard_queries(dashboard)
    check(len(queries) >= 15, f"expected every panel and variable query, got {len(queries)}")
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"cdcd:dashboard_query:{i}", "expr": expression} for i, (_, expression) in enumerate(queries)]}]}
    path = os.path.join(work, "queries.yml")
    with open(path, "w") as f:
        json.dump(rules, f)  # JSON is YAML
    result = run(["promtool", "check", "rules", path], expect_ok=False)
    check(result.returncode == 0, f"a dashboard query does not parse:\n{result.stdout}{result.stderr}")
    return len(queries)


def first_target(dashboard):
    return next(p for p in dashboard["panels"] if p.get("targets"))["targets"][0]


def test():
    require_tools()
    with open(DASHBOARD) as f:
        dashboard = json.load(f)
    check(dashboard.get("uid") == "cdcd-overview", "dashboard uid")
    with temp_dir() as work:
        print("schema: the dashboard against @grafana/schema's Dashboard type (tsc --strict)")
        unknown_field = copy.deepcopy(dashboard)
        unknown_field["panelz"] = unknown_field.pop("panels")
        bad_enum = copy.deepcopy(dashboard)
        bad_enum["graphTooltip"] = 7
        untyped_panel = copy.deepcopy(dashboard)
        del untyped_panel["panels"][1]["type"]
        errors = schema_errors({"dashboard": dashboard, "unknown_field": unknown_field, "bad_enum": bad_enum,
                                "untyped_panel": untyped_panel}, work)
        check(not errors["dashboard"], "dashboard does not match Grafana's Dashboard type:\n" +
              "\n".join(errors["dashboard"]))
        for mutation in ("unknown_field", "bad_enum", "untyped_panel"):
            check(errors[mutation], f"mutation not caught: {mutation}")
            print(f"  ok: mutation caught ({mutation}): {errors[mutation][0].split(': ', 1)[1][:140]}")

        print("queries: every panel and variable query parses (promtool check rules)")
        count = check_queries_parse(dashboard, work)
        print(f"  {count} queries parse")
        bad = copy.deepcopy(dashboard)
        first_target(bad)["expr"] = "max by (consumer) (cdcd_consumer_lag_seconds{job=~\"$job\"}"
        must_fail("unbalanced parenthesis", check_queries_parse, bad, work)
        bad = copy.deepcopy(dashboard)
        first_target(bad)["expr"] += " $undefined"
        must_fail("undefined variable", check_queries_parse, bad, work)


if __name__ == "__main__":
    main(test)
