"""``liveupd --verify`` on the host: from process start to its first check.

A transition left pending by the "old kernel" (tests/verify/scenario.py: a
running journal, the checkpoint, the exec stamp) and the simulated new boot;
then ``python -m liveupd.daemon.main --dry-run --verify``, as the early-boot
unit runs it.  For each start, in turn:

* *to first check*: host time from spawning the process to the
  ``verify.started`` line in the transition's log (its ``ts``), i.e. imports,
  configuration, journal scan, up to the first verification check;
* *CPU*: the process's user + system time for the whole verification (on a
  shared host less noisy than wall time);
* *imports*: the sum of ``-X importtime`` self times of one start with
  importtime on (it slows imports down; the figure the issue names), and the
  heavy modules that were imported.

    python -m bench.verify_startup [--starts N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from bench.stats import Summary
from tests.kernels import install_kernel
from tests.verify.scenario import NEW_RELEASE, OLD_RELEASE, machine, pending

# Imported by the verify path before this change; kept here to show what is left.
HEAVY = (
    "pydantic",
    "pydantic_core",
    "dbus_fast",
    "psutil",
    "liveupd.service",
    "liveupd.kernel.resolve",
    "liveupd.kernel.uki",
    "liveupd.devices.steps",
)
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def setup_pending(root: Path) -> tuple[Path, Path]:
    """liveupd.conf and the new boot's machine description, with T1 pending."""
    from liveupd.config.load import load_config

    boot = root / "boot"
    install_kernel(boot, OLD_RELEASE)
    install_kernel(boot, NEW_RELEASE)
    hooks = root / "hooks.d"
    hooks.mkdir()
    conf = root / "liveupd.conf"
    conf.write_text(
        textwrap.dedent(
            f"""
            [kernel]
            allowed-dirs = ["{boot}"]
            [hooks]
            dirs = ["{hooks}"]
            [verify]
            settle-timeout = 0.5
            [daemon]
            state-dir = "{root / "state"}"
            """
        )
    )
    pending(load_config(conf), boot)
    return conf, machine(root)


_SETUP = (
    "import sys; from pathlib import Path; from bench.verify_startup import setup_pending; "
    "print(*setup_pending(Path(sys.argv[1])), sep='\\n')"
)


def _setup_for(root: Path, pythonpath: Path | None) -> tuple[Path, Path]:
    """``setup_pending`` done by the liveupd that will verify: a baseline reads only the
    journal format of its own time, so its pending transition is written by its own code."""
    if pythonpath is None:
        return setup_pending(root)
    out = subprocess.run(
        [sys.executable, "-c", _SETUP, str(root)],
        env=dict(os.environ, PYTHONPATH=str(pythonpath)),
        cwd=pythonpath,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"setting up the baseline's pending transition failed:\n{out.stderr}")
    conf, machine_file = out.stdout.splitlines()
    return Path(conf), Path(machine_file)


def _argv(conf: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "liveupd.daemon.main",
        "--dry-run",
        "--verify",
        "--config",
        str(conf),
    ]


def _env(machine_file: Path, pythonpath: Path | None) -> dict[str, str]:
    env = dict(os.environ, LIVEUPD_DRY_RUN_MACHINE=str(machine_file))
    if pythonpath is not None:  # the baseline's liveupd first on the import path
        env["PYTHONPATH"] = str(pythonpath)
    return env


def _started_ts(state: Path) -> float:
    log = state / "transitions" / "T1" / "log.jsonl"
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("event") == "verify.started":
            return float(entry["ts"])
    raise RuntimeError(f"no verify.started in {log}")


def start_once(pythonpath: Path | None = None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="liveupd-bench-verify-") as tmp:
        root = Path(tmp)
        conf, machine_file = _setup_for(root, pythonpath)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.time()
        out = subprocess.run(
            _argv(conf),
            env=_env(machine_file, pythonpath),
            cwd=pythonpath,  # `-m` puts the working directory first on the import path
            capture_output=True,
            text=True,
            check=False,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode != 0:
            raise RuntimeError(f"liveupd --verify failed ({out.returncode}):\n{out.stderr}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return {"to_first_check_ms": (_started_ts(root / "state") - t0) * 1e3, "cpu_ms": cpu * 1e3}


def imports_once(pythonpath: Path | None = None) -> dict[str, Any]:
    """One start under ``-X importtime``: total self time, by package, what heavy was loaded."""
    with tempfile.TemporaryDirectory(prefix="liveupd-bench-verify-") as tmp:
        root = Path(tmp)
        conf, machine_file = _setup_for(root, pythonpath)
        out = subprocess.run(
            [sys.executable, "-X", "importtime", *_argv(conf)[1:]],
            env=_env(machine_file, pythonpath),
            cwd=pythonpath,
            capture_output=True,
            text=True,
            check=False,
        )
    if out.returncode != 0:  # a failed verification imports other things
        tail = out.stderr.splitlines()[-5:]
        raise RuntimeError(f"liveupd --verify failed ({out.returncode}):\n" + "\n".join(tail))
    total = 0
    by_package: dict[str, int] = {}
    modules = []
    for line in out.stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if not m:
            continue
        us, name = int(m.group(1)), m.group(4)
        modules.append(name)
        total += us
        parts = name.split(".")
        key = ".".join(parts[:2]) if parts[0] == "liveupd" else parts[0]
        by_package[key] = by_package.get(key, 0) + us
    heavy = sorted(h for h in HEAVY if h in modules)
    top = sorted(by_package.items(), key=lambda kv: -kv[1])[:8]
    return {
        "import_ms": total / 1e3,
        "modules": len(modules),
        "heavy": heavy,
        "by_package_ms": {k: v / 1e3 for k, v in top},
    }


# What any asyncio program that reads a TOML file and logs imports: the floor the
# verify path's import time sits on.
FLOORS = (
    (
        "the standard library it uses (asyncio, argparse, logging, json, tomllib)",
        "import asyncio, argparse, logging, json, tomllib",
    ),
)


def floors(repeat: int) -> list[dict[str, Any]]:
    """-X importtime sums of the FLOORS, the fastest of ``repeat`` each (median too)."""
    out = []
    for name, code in FLOORS:
        sums = []
        for _ in range(repeat):
            err = subprocess.run(
                [sys.executable, "-X", "importtime", "-c", code],
                capture_output=True,
                text=True,
                check=True,
            ).stderr
            sums.append(
                sum(int(m.group(1)) for m in map(_IMPORT_LINE.match, err.splitlines()) if m)
            )
        out.append({"what": name, "import_ms": _summary([s / 1e3 for s in sums])})
    return out


def _summary(values: list[float]) -> dict[str, Any] | None:
    s = Summary.of(values)
    return s.to_json() if s else None


def run(starts: int, baseline: Path | None = None) -> dict[str, Any]:
    """``starts`` starts; with ``baseline`` (a directory with its liveupd/ and tests/ to
    put first on the import path) as many of the baseline's, alternating with ours."""
    paths: list[Path | None] = [None] if baseline is None else [None, baseline]
    timed: dict[Path | None, list[dict[str, float]]] = {p: [] for p in paths}
    imports: dict[Path | None, list[dict[str, Any]]] = {p: [] for p in paths}
    for p in paths:
        start_once(p)  # warm the page cache and the bytecode caches
    for _ in range(starts):
        for p in paths:
            timed[p].append(start_once(p))
    for _ in range(max(3, starts // 2)):
        for p in paths:
            imports[p].append(imports_once(p))
    result = _result(starts, timed[None], imports[None])
    result["floors"] = floors(max(3, starts // 2))
    if baseline is not None:
        result["baseline"] = _result(starts, timed[baseline], imports[baseline])
    return result


def _result(
    starts: int, timed: list[dict[str, float]], imports: list[dict[str, Any]]
) -> dict[str, Any]:
    best = min(imports, key=lambda i: float(i["import_ms"]))
    return {
        "starts": starts,
        "to_first_check_ms": _summary([t["to_first_check_ms"] for t in timed]),
        "cpu_ms": _summary([t["cpu_ms"] for t in timed]),
        "import_ms": _summary([float(i["import_ms"]) for i in imports]),
        "modules": best["modules"],
        "heavy": best["heavy"],
        "by_package_ms": best["by_package_ms"],
        "loadavg": os.getloadavg()[0],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--starts", type=int, default=7)
    p.add_argument(
        "--baseline-path",
        type=Path,
        help="a directory holding the baseline's liveupd/ and tests/: measure it too, in turn",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args()
    res = run(args.starts, args.baseline_path)
    print(json.dumps(res, indent=1) if args.json else res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
