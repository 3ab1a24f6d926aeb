#!/usr/bin/python3
"""The alert rules (helm/cdcd/files/cdcd-alerts.yml): yamllint, promtool check rules, and the promtool
unit tests of tests/ops/alerts_test.yml (each alert firing and not firing), run again against
mutated rules to show the tests catch a wrong metric name, threshold, window or join."""
import os

from opslib import CheckFailed, RULES, check, main, must_fail, run, temp_dir

HERE = os.path.dirname(os.path.abspath(__file__))
UNIT_TESTS = os.path.join(HERE, "alerts_test.yml")


def lint(path):
    run(["yamllint", "--strict", "-c", os.path.join(HERE, "yamllint.yml"), path])


def unit_tests(rules_text, work):
    """Runs the unit tests against rules_text (placed where the tests expect the rules file)."""
    rules = os.path.join(work, "helm", "cdcd", "files", "cdcd-alerts.yml")
    tests = os.path.join(work, "tests", "ops", "alerts_test.yml")
    os.makedirs(os.path.dirname(rules), exist_ok=True)
    os.makedirs(os.path.dirname(tests), exist_ok=True)
    with open(rules, "w") as f:
        f.write(rules_text)
    with open(UNIT_TESTS) as source, open(tests, "w") as f:
        f.write(source.read())
    result = run(["promtool", "test", "rules", tests], expect_ok=False)
    check(result.returncode == 0, f"promtool test rules failed:\n{result.stdout}{result.stderr}")


def mutated(text, old, new):
    check(text.count(old) == 1, f"mutation anchor {old!r} not found exactly once")
    return text.replace(old, new)


def test():
    with open(RULES) as f:
        rules = f.read()
    print("yamllint and promtool check rules")
    lint(RULES)
    lint(UNIT_TESTS)
    result = run(["promtool", "check", "rules", RULES])
    check("SUCCESS: 14 rules found" in result.stdout, f"expected 14 rules: {result.stdout}")
    with temp_dir() as work:
        print("promtool test rules: every alert firing and not firing")
        unit_tests(rules, work)
        for what, old, new in [
            ("misspelt metric", "cdcd_consumer_lag_seconds{job=\"cdcd\"} > 300", "cdcd_consumer_lag_second{job=\"cdcd\"} > 300"),
            ("threshold", "cdcd_consumer_lag_bytes{job=\"cdcd\"} > 1073741824", "cdcd_consumer_lag_bytes{job=\"cdcd\"} > 4294967296"),
            ("stalled without its delivery check", "and on (job, instance, consumer)", "or on (job, instance, consumer)"),
            ("budget threshold", "< 0.2 * cdcd_postgres_slot_max_wal_keep_bytes", "< 0.05 * cdcd_postgres_slot_max_wal_keep_bytes"),
            ("prediction horizon", "[30m], 4 * 3600) < 0", "[30m], 3600) < 0"),
            ("failed state", "state=\"failed\"} == 1", "state=\"stopped\"} == 1"),
            ("inactive slot", "cdcd_postgres_slot_active{job=\"cdcd\"} == 0", "cdcd_postgres_slot_active{job=\"cdcd\"} == 1"),
            ("no pending period", "up{job=\"cdcd\"} == 0\n        for: 2m", "up{job=\"cdcd\"} == 0\n        for: 0m"),
            ("wrong job", "changes(process_start_time_seconds{job=\"cdcd\"}", "changes(process_start_time_seconds{job=\"cdc\"}"),
        ]:
            must_fail(what, unit_tests, mutated(rules, old, new), work)
        bad_yaml = os.path.join(work, "bad.yml")
        with open(bad_yaml, "w") as f:
            f.write(rules.replace("        for: 5m\n", "        for:  5m \n", 1))
        must_fail("yamllint on trailing spaces", lint, bad_yaml)


if __name__ == "__main__":
    main(test)
