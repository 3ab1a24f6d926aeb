#!/usr/bin/python3
"""Installation and packaging: `cmake --install` into a temporary prefix, `cpack -G DEB`, the package's
files, dependencies (resolvable: `apt-get install --simulate`) and conffiles, the package unpacked into
a temporary root (`dpkg -x`) and its binary run; and configs/docker/Dockerfile checked by parsing (no image can be built here): its COPY
sources exist and configure the project, its ENTRYPOINT is a file of the package, its runtime stage
is Debian slim and runs as a non-root user. Usage: test_package.py BUILD_DIR"""
import filecmp
import json
import os
import re
import shlex
import shutil
import stat
import sys

from opslib import DASHBOARD, ROOT, RULES, check, main, must_fail, run, temp_dir

UNIT = os.path.join(ROOT, "configs", "systemd", "cdcd.service")
DOCKERFILE = os.path.join(ROOT, "configs", "docker", "Dockerfile")
PACKAGE_FILES = ["./usr/bin/cdcd", "./usr/lib/systemd/system/cdcd.service", "./etc/cdcd/cdcd.yaml",
                 "./etc/cdcd/cdcd.env", "./usr/share/cdcd/cdcd-alerts.yml", "./usr/share/cdcd/cdcd-dashboard.json",
                 "./usr/share/doc/cdcd/README.md", "./usr/share/doc/cdcd/configuration.md",
                 "./usr/share/doc/cdcd/metrics.md"]
# Shared libraries the binary links: dpkg-shlibdeps must have found each one's package.
RUNTIME_DEPENDENCIES = ["libc6", "libstdc++6", "libpq5", "librdkafka1", "libyaml-cpp0.7", "libcivetweb1",
                        "libprometheus-cpp-core1.0", "libsimdjson14", "libcurl4"]


def check_installed_tree(prefix):
    for path in ("bin/cdcd", "lib/systemd/system/cdcd.service", "etc/cdcd/cdcd.yaml", "etc/cdcd/cdcd.env",
                 "share/doc/cdcd/README.md", "share/doc/cdcd/configuration.md"):
        check(os.path.isfile(os.path.join(prefix, path)), f"cmake --install did not install {path}")
    check(filecmp.cmp(os.path.join(prefix, "share/cdcd/cdcd-alerts.yml"), RULES, shallow=False), "alert rules")
    check(filecmp.cmp(os.path.join(prefix, "share/cdcd/cdcd-dashboard.json"), DASHBOARD, shallow=False), "dashboard")
    mode = stat.S_IMODE(os.stat(os.path.join(prefix, "etc/cdcd/cdcd.env")).st_mode)
    check(mode == 0o600, f"cdcd.env holds secrets: mode {oct(mode)}, expected 0o600")
    with open(os.path.join(prefix, "lib/systemd/system/cdcd.service")) as f:
        unit = f.read()
    check(f"ExecStart={prefix}/bin/cdcd run --config {prefix}/etc/cdcd/cdcd.yaml" in unit,
          "the installed unit does not name the installed binary and config")


def check_package_listing(listing):
    paths = {line.split()[-1] for line in listing.splitlines() if line.strip()}
    missing = [p for p in PACKAGE_FILES if p not in paths]
    check(not missing, f"the package lacks {missing}")
    strays = sorted(p for p in paths if not p.startswith(("./usr/", "./etc/")) and p != "./")
    check(not strays, f"the package installs outside /usr and /etc: {strays}")


def check_depends(depends):
    names = {re.split(r"[\s(]", item.strip())[0] for item in depends.split(",")}
    missing = [d for d in RUNTIME_DEPENDENCIES if d not in names]
    check(not missing, f"Depends lacks {missing}: {depends}")


def check_version(binary):
    result = run([binary, "--version"], expect_ok=False)
    check(result.returncode == 0 and re.fullmatch(r"cdcd \d+\.\d+\.\d+\s*", result.stdout),
          f"{binary} --version printed {result.stdout!r} (exit {result.returncode})")


def dockerfile_instructions(text):
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else "")
            for line in joined.splitlines() if line.strip()]


def check_dockerfile(text, package_paths, work):
    instructions = dockerfile_instructions(text)
    stages = [args for op, args in instructions if op == "FROM"]
    check(stages and re.match(r"debian:12-slim\b", stages[-1]), f"runtime stage is not debian:12-slim: {stages}")
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    runtime = instructions[last_from:]
    users = [args for op, args in runtime if op == "USER"]
    check(users and users[-1].split(":")[0] not in ("0", "root"), f"the image must run as non-root: USER {users}")
    entry = [args for op, args in runtime if op == "ENTRYPOINT"]
    check(len(entry) == 1, "one ENTRYPOINT")
    entrypoint = json.loads(entry[0])
    check(f".{entrypoint[0]}" in package_paths, f"ENTRYPOINT {entrypoint[0]} is not a file of the package")
    # Every COPY from the build context exists, and those files alone configure the project.
    context = os.path.join(work, "context")
    shutil.rmtree(context, ignore_errors=True)
    os.makedirs(context)
    copies = 0
    for op, args in instructions[:last_from]:
        if op != "COPY":
            continue
        parts = shlex.split(args)
        check(not any(p.startswith("--from") for p in parts), "the build stage copies from the context only")
        *sources, destination = parts
        for source in sources:
            path = os.path.join(ROOT, source)
            check(os.path.exists(path), f"COPY source {source} does not exist")
            target = os.path.join(context, destination)
            if os.path.isdir(path):
                shutil.copytree(path, target, dirs_exist_ok=True)
            else:  # into a directory (a destination ending in /), as Docker does
                os.makedirs(target, exist_ok=True)
                shutil.copy(path, target)
            copies += 1
    check(copies >= 5, f"only {copies} COPY sources")
    result = run(["cmake", "-S", context, "-B", os.path.join(context, "build"), "-DCDCD_TESTS=OFF",
                  "-DCDCD_BENCH=OFF"], expect_ok=False)
    check(result.returncode == 0, f"the COPY sources do not configure the project:\n{result.stderr[-2000:]}")
    copied_package = [args for op, args in runtime if op == "COPY"]
    check(any(re.search(r"--from=build\s+/src/build/cdcd_\*\.deb", c) for c in copied_package),
          "the runtime stage installs the package built by cpack")


def test(build):
    with temp_dir() as work:
        print("cmake --install into a temporary prefix")
        prefix = os.path.join(work, "prefix")
        run(["cmake", "--install", build, "--prefix", prefix])
        check_installed_tree(prefix)
        config = os.path.join(prefix, "etc/cdcd/cdcd.yaml")
        with open(config, "a") as f:
            f.write("# edited by the operator\n")
        run(["cmake", "--install", build, "--prefix", prefix])
        with open(config) as f:
            check(f.read().endswith("# edited by the operator\n"), "a second install overwrote the edited config")
        os.remove(os.path.join(prefix, "lib/systemd/system/cdcd.service"))
        must_fail("unit not installed", check_installed_tree, prefix)

        print("cpack -G DEB")
        packages = os.path.join(work, "packages")
        run(["cpack", "-G", "DEB", "-B", packages], cwd=build)
        debs = [f for f in os.listdir(packages) if f.endswith(".deb")]
        check(len(debs) == 1, f"expected one .deb, got {debs}")
        deb = os.path.join(packages, debs[0])
        listing = run(["dpkg-deb", "-c", deb]).stdout
        check_package_listing(listing)
        must_fail("package without its unit", check_package_listing,
                  "\n".join(l for l in listing.splitlines() if "cdcd.service" not in l))
        depends = run(["dpkg-deb", "-f", deb, "Depends"]).stdout
        check_depends(depends)
        must_fail("Depends without libpq5", check_depends, depends.replace("libpq5", "libpq"))
        simulated = run(["apt-get", "install", "--simulate", deb], expect_ok=False)
        check(simulated.returncode == 0 and "Inst cdcd " in simulated.stdout,
              f"apt cannot install the package (its dependencies):\n{simulated.stdout[-1500:]}{simulated.stderr}")
        control = os.path.join(work, "control")
        run(["dpkg-deb", "-e", deb, control])
        with open(os.path.join(control, "conffiles")) as f:
            conffiles = f.read().split()
        check(conffiles == ["/etc/cdcd/cdcd.yaml", "/etc/cdcd/cdcd.env"], f"conffiles: {conffiles}")
        print(f"  {debs[0]}: Depends: {depends.strip()}")

        print("the package unpacked into a temporary root")
        root = os.path.join(work, "root")
        run(["dpkg", "-x", deb, root])
        check_version(os.path.join(root, "usr/bin/cdcd"))
        must_fail("a binary that is not cdcd", check_version, "/bin/true")
        with open(os.path.join(root, "usr/lib/systemd/system/cdcd.service")) as f, open(UNIT) as source:
            check(f.read() == source.read(), "the packaged unit differs from configs/systemd/cdcd.service")
        result = run([os.path.join(root, "usr/bin/cdcd"), "validate", "--config", os.path.join(root, "etc/cdcd/cdcd.yaml")],
                     expect_ok=False, env=dict(os.environ, CDCD_POSTGRES_PASSWORD="x"))
        check(result.returncode == 0, f"the packaged example config does not validate:\n{result.stderr}")
        result = run([os.path.join(root, "usr/bin/cdcd"), "validate", "--config", os.path.join(root, "etc/cdcd/cdcd.yaml")],
                     expect_ok=False, env={k: v for k, v in os.environ.items() if k != "CDCD_POSTGRES_PASSWORD"})
        check(result.returncode == 2 and "CDCD_POSTGRES_PASSWORD" in result.stderr,
              "without its secret the example config is refused with exit 2 (the unit's RestartPreventExitStatus)")

        print("configs/docker/Dockerfile")
        with open(DOCKERFILE) as f:
            dockerfile = f.read()
        package_paths = {line.split()[-1] for line in listing.splitlines()}
        check_dockerfile(dockerfile, package_paths, work)
        must_fail("COPY of a missing folder", check_dockerfile,
                  dockerfile.replace("COPY docs docs", "COPY documentation docs"), package_paths, work)
        must_fail("COPY list that cannot configure", check_dockerfile,
                  dockerfile.replace("COPY sinks sinks\n", ""), package_paths, work)
        must_fail("ENTRYPOINT outside the package", check_dockerfile,
                  dockerfile.replace('ENTRYPOINT ["/usr/bin/cdcd"]', 'ENTRYPOINT ["/usr/local/bin/cdcd"]'),
                  package_paths, work)
        must_fail("root user", check_dockerfile, dockerfile.replace("USER 65532:65532", "USER root"),
                  package_paths, work)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(lambda: test(os.path.abspath(sys.argv[1])))
