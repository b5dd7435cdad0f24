"""``make bench``: every benchmark of issue 7 in one run, results to docs/benchmarks.md.

    python -m bench.run                 # the full run (about half an hour under TCG)
    python -m bench.run --quick         # 2 rounds, fewer cases: to try it out
    python -m bench.run --report-only   # regenerate docs/benchmarks.md from bench/results.json
    python -m bench.run --host-only confinement
                                        # measure one host benchmark again (minutes, no VM),
                                        # merge it into bench/results.json, regenerate the page
    python -m bench.run --service-back  # only "service back with its state" (issue 16): its
                                        # own VM run, merged into bench/results.json apart

Order: the host benchmarks (orchestration with the dry-run engine, the daemon
on a private bus), then one guest for every downtime method in turn, the
daemon inside it and the hook-cost transitions, then (unless disabled) a
second guest on OVMF firmware for the UEFI reboot.  The host's VM run lock
(tests/vm/runlock.py) is held throughout, so no other harness VM competes for
the two cores meanwhile.  The code measured is a clean checkout of the
current commit (``--source worktree`` measures the working tree instead).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from tests.vm.qemu import GUEST_CPU
from tests.vm.recipe import SUITE

DEBIAN_RELEASE = {"bookworm": 12, "trixie": 13, "forky": 14}

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results.json"
DOC = REPO / "docs" / "benchmarks.md"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _out(argv: Sequence[str], cwd: Path = REPO) -> str:
    try:
        return subprocess.run(
            list(argv), cwd=cwd, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return ""


def _loadavg() -> float:
    return os.getloadavg()[0]


def meta(args: argparse.Namespace, commit: str, source: str) -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _out(["lscpu"]).splitlines()
            if line.startswith("Model name")
        ),
        platform.processor(),
    )
    os_name = next(
        (
            line.split("=", 1)[1].strip('"')
            for line in Path("/etc/os-release").read_text().splitlines()
            if line.startswith("PRETTY_NAME=")
        ),
        "?",
    )
    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "commit": commit,
        "commit_subject": _out(["git", "log", "-1", "--format=%s", commit]),
        "source": source,
        "host_cpu": cpu,
        "host_cores": os.cpu_count(),
        "host_kernel": platform.release(),
        "host_os": os_name,
        "qemu_version": _out(["qemu-system-x86_64", "--version"]).splitlines()[0]
        if _out(["qemu-system-x86_64", "--version"])
        else "?",
        "python": platform.python_version(),
        "rounds": args.rounds,
        "quick": args.quick,
        # The guest the VM part boots (a run that keeps older VM figures names theirs).
        "guest_os": f"Debian {DEBIAN_RELEASE[SUITE]}",
        "guest_cpu": GUEST_CPU,
    }


def vm_source(kept_meta: dict[str, Any]) -> dict[str, Any]:
    """The meta of the run that measured the VM figures a host-only run keeps: the kept
    run's own source when it had kept them from an earlier run too."""
    source: dict[str, Any] = kept_meta.get("vm_from") or kept_meta
    return source


def host_bench(module: str, args: Sequence[str], src: Path) -> dict[str, Any]:
    """``python -m bench.MODULE --json ARGS`` with ``src`` first on the import path."""
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", "--json", *args],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench.{module} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def import_root(src: Path, dest: Path) -> Path:
    """A directory to put first on PYTHONPATH: liveupd/ and tests/ of ``src``, bench/ of ours."""
    dest.mkdir()
    (dest / "liveupd").symlink_to(src / "liveupd")
    (dest / "tests").symlink_to(src / "tests")
    (dest / "bench").symlink_to(REPO / "bench")
    return dest


def clean_checkout(commit: str, dest: Path) -> Path:
    from bench.vm import clean_checkout as checkout

    return checkout(commit, dest)


def clean_source(commit: str, tmp: Path) -> Path:
    return clean_checkout(commit, tmp / "src")


# Host benchmarks that can be measured again on their own (``--host-only``): their
# arguments, quick or not.  Their results carry their own date and commit.
HOST_ONLY = {
    "confinement": lambda quick: (
        ["--repeat", "2", "--rounds", "2"] if quick else ["--repeat", "5", "--rounds", "4"]
    ),
}


def host_only(args: argparse.Namespace) -> int:
    """Measure one host benchmark, put it into the saved results, regenerate the page."""
    from tests.vm import runlock

    saved = json.loads(args.results.read_text()) if args.results.exists() else {}
    commit = _out(["git", "rev-parse", "HEAD"])
    runlock.acquire()  # no harness VM competes for the cores meanwhile
    try:
        with tempfile.TemporaryDirectory(prefix="liveupd-bench-") as tmp:
            if args.source == "HEAD":
                src = import_root(clean_source(commit, Path(tmp)), Path(tmp) / "pythonpath")
            else:
                src = REPO
            log(f"host: {args.host_only}")
            result = host_bench(args.host_only, HOST_ONLY[args.host_only](args.quick), src)
    finally:
        runlock.release()
    saved.setdefault("host", {})[args.host_only] = result
    args.results.write_text(json.dumps(saved, indent=1, default=str) + "\n")
    args.doc.write_text(report.render(saved))
    log(f"wrote {args.results} and {args.doc}")
    return 0


SERVICE_BACK_METHODS = "liveupd-direct,systemctl-kexec,kexec-e"


def service_back_only(args: argparse.Namespace) -> int:
    """Measure "service back with its state" in its own guest; merge it into the results.

    The result goes under ``service_back`` with its own date and commit; the
    saved VM and host figures are left as they are (and keep their dates).
    """
    from bench.vm import METHOD_BY_KEY, run_vm
    from tests.vm import runlock

    saved = json.loads(args.results.read_text()) if args.results.exists() else {}
    args.rounds = args.rounds or 3
    methods = [METHOD_BY_KEY[k] for k in (args.methods or SERVICE_BACK_METHODS).split(",")]
    commit = _out(["git", "rev-parse", "HEAD"])
    started = time.monotonic()
    runlock.acquire()
    try:
        with tempfile.TemporaryDirectory(prefix="liveupd-bench-") as tmp:
            if args.source == "HEAD":
                src = clean_source(commit, Path(tmp))
                source = f"a clean checkout of {commit[:12]} (installed in the guest)"
            else:
                src, source = REPO, "the working tree"
            sb_meta = meta(args, commit, source)
            sb_meta["methods"] = [m.key for m in methods]
            load_before = _loadavg()
            log(f"VM: service back, {args.rounds} rounds of {', '.join(sb_meta['methods'])}")
            out = run_vm(args.rounds, methods, (), src, log, with_daemon=False, service=True)
            sb_meta["loadavg"] = f"{load_before:.2f} / {_loadavg():.2f}"
            sb_meta["duration_s"] = time.monotonic() - started
    finally:
        runlock.release()
    saved["service_back"] = {"meta": sb_meta, "vm": out}
    args.results.write_text(json.dumps(saved, indent=1, default=str) + "\n")
    args.doc.write_text(report.render(saved))
    log(f"wrote {args.results} and {args.doc}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 rounds and fewer cases")
    p.add_argument("--rounds", type=int, help="rounds of every method (default 5, quick 2)")
    p.add_argument(
        "--methods",
        help="comma-separated method keys, in order (default: all; see bench/vm.py METHODS)",
    )
    p.add_argument(
        "--ovmf-rounds", type=int, help="reboots under OVMF (default 3, quick 1; 0: skip)"
    )
    p.add_argument(
        "--hooks",
        choices=("full", "quick", "none"),
        help="hook-cost transitions in the VM (default full, quick with --quick)",
    )
    p.add_argument("--skip-vm", action="store_true", help="host benchmarks only")
    p.add_argument(
        "--keep-vm",
        action="store_true",
        help="with --skip-vm: keep the VM results of --results (and say they are older)",
    )
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="also measure the host start-ups (verify, daemon) of a clean checkout of REV",
    )
    p.add_argument("--skip-host", action="store_true", help="VM benchmarks only")
    p.add_argument("--source", choices=("HEAD", "worktree"), default="HEAD")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--doc", type=Path, default=DOC)
    p.add_argument(
        "--report-only", action="store_true", help="regenerate the document from --results"
    )
    p.add_argument(
        "--host-only",
        choices=sorted(HOST_ONLY),
        help="run only this host benchmark; merge it into --results and regenerate the page",
    )
    p.add_argument(
        "--service-back",
        action="store_true",
        help="run only 'service back with its state' (issue 16: --methods default "
        f"{SERVICE_BACK_METHODS}, --rounds default 3) in its own guest; merge it into --results",
    )
    args = p.parse_args(argv)
    if args.report_only:
        saved = json.loads(args.results.read_text())
        args.doc.write_text(report.render(saved))
        log(f"wrote {args.doc}")
        return 0
    if args.host_only:
        return host_only(args)
    if args.service_back:
        return service_back_only(args)

    from bench.vm import HOOK_CASES, METHOD_BY_KEY, METHODS, QUICK_HOOK_CASES, run_vm
    from tests.vm import runlock

    args.rounds = args.rounds or (2 if args.quick else 5)
    ovmf_rounds = args.ovmf_rounds if args.ovmf_rounds is not None else (1 if args.quick else 3)
    methods = [METHOD_BY_KEY[k] for k in args.methods.split(",")] if args.methods else list(METHODS)
    hooks = args.hooks or ("quick" if args.quick else "full")
    hook_cases = {"full": HOOK_CASES, "quick": QUICK_HOOK_CASES, "none": ()}[hooks]
    commit = _out(["git", "rev-parse", "HEAD"])
    kept: dict[str, Any] = {}
    if args.keep_vm:
        if not args.skip_vm:
            p.error("--keep-vm goes with --skip-vm")
        kept = json.loads(args.results.read_text())
    started = time.monotonic()
    # The VM run lock keeps other harness VMs off the cores while ours runs; a
    # host-only run does not take it (VM time is the scarcest on a shared host):
    # its load average is recorded instead.
    if not args.skip_vm:
        runlock.acquire()
    try:
        with tempfile.TemporaryDirectory(prefix="liveupd-bench-") as tmp:
            if args.source == "HEAD":
                src = clean_source(commit, Path(tmp))
                host_src = import_root(src, Path(tmp) / "pythonpath")
                source = (
                    f"a clean checkout of {commit[:12]} (installed in the guest; liveupd/ and "
                    "tests/ of the host runs), with the bench/ code of the working tree"
                )
            else:
                src = host_src = REPO
                dirty = bool(_out(["git", "status", "--porcelain", "--", "liveupd"]))
                source = "the working tree" + (
                    " (liveupd/ has uncommitted changes)" if dirty else ""
                )
            res: dict[str, Any] = {"meta": meta(args, commit, source)}
            res["meta"]["methods"] = [m.key for m in methods]
            load_before = _loadavg()
            host: dict[str, Any] = {}
            if not args.skip_host:
                log("host: orchestration (dry-run engine)")
                host["orchestration"] = host_bench(
                    "orchestration",
                    ["--repeat", "3" if args.quick else "7", "--profile"]
                    + (["--quick"] if args.quick else []),
                    host_src,
                )
                log("host: the daemon on a private bus")
                host["daemon"] = host_bench(
                    "daemon", ["--starts", "3" if args.quick else "7"], host_src
                )
                log("host: confinement (a hostile file or caller, issue 13)")
                host["confinement"] = host_bench(
                    "confinement", HOST_ONLY["confinement"](args.quick), host_src
                )
                verify_starts = ["--starts", "3" if args.quick else "9"]
                base_src: Path | None = None
                if args.baseline:
                    base = _out(["git", "rev-parse", args.baseline])
                    base_src = import_root(
                        clean_checkout(base, Path(tmp) / "baseline"), Path(tmp) / "base-path"
                    )
                    verify_starts += ["--baseline-path", str(base_src)]
                log("host: liveupd --verify start-up" + (" and the baseline's" if base_src else ""))
                host["verify_startup"] = host_bench("verify_startup", verify_starts, host_src)
                if base_src is not None:
                    log(f"host: the daemon of the baseline {base[:12]}")
                    host["baseline"] = {
                        "commit": base,
                        "commit_subject": _out(["git", "log", "-1", "--format=%s", base]),
                        "verify_startup": host["verify_startup"].pop("baseline"),
                        "daemon": host_bench(
                            "daemon", ["--starts", "3" if args.quick else "7"], base_src
                        ),
                    }
            res["host"] = host
            if kept:
                res["vm"] = kept.get("vm")
                res["ovmf"] = kept.get("ovmf")
                res["meta"]["vm_from"] = vm_source(kept.get("meta", {}))
            if not args.skip_vm:
                log(f"VM: {args.rounds} rounds of {', '.join(m.key for m in methods)}")
                res["vm"] = run_vm(
                    args.rounds,
                    methods,
                    hook_cases,
                    src,
                    log,
                )
                if ovmf_rounds > 0:
                    from bench.vm import run_ovmf

                    log(f"VM on OVMF: {ovmf_rounds} rounds")
                    res["ovmf"] = run_ovmf(ovmf_rounds, log)
                else:
                    res["ovmf"] = {"skipped": "not run (--ovmf-rounds 0)"}
            res["meta"]["loadavg"] = f"{load_before:.2f} / {_loadavg():.2f}"
            res["meta"]["duration_s"] = time.monotonic() - started
            # "service back with its state" is its own run (--service-back), dated apart: kept.
            previous = json.loads(args.results.read_text()) if args.results.exists() else {}
            if previous.get("service_back"):
                res["service_back"] = previous["service_back"]
    finally:
        if not args.skip_vm:
            runlock.release()
    args.results.write_text(json.dumps(res, indent=1, default=str) + "\n")
    args.doc.write_text(report.render(res))
    log(f"wrote {args.results} and {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
