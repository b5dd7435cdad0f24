"""What a hostile file or caller costs the daemon (issue 13): peak memory and log growth.

A private dbus-daemon and ``liveupd --dry-run`` on it (tests/dbus/buses.py),
as the D-Bus tests start it, as root.  Measured from ``/proc/PID/status``
(VmRSS, and VmHWM, the peak, reset before each case by writing 5 to
``/proc/PID/clear_refs``):

* **refusing a 2 GiB kernel**: a sparse 2 GiB file named as the kernel;
* **staging a real kernel**: a Debian kernel package's vmlinuz (fetched with
  apt into the test cache; a constructed bzImage when apt cannot fetch it) with
  a 64 MiB initrd, staged (read, hashed, "loaded" by the dry-run kexec) and
  cancelled;
* **an unprivileged flood**: rounds of 48 Stage calls from uid 65534, each
  carrying a 10 MB option value (tests/dbus/flood.py): the log's growth (the
  daemon's stderr, as the journal would get it), the daemon's RSS one second
  after each round against its idle RSS, and the peak.

Before the cases, one small kernel is staged and cancelled so that every code
path is imported: "idle" is the RSS after that warm-up.

    python -m bench.confinement [--repeat N] [--rounds R] [--calls C] [--size BYTES] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.stats import Summary
from tests.dbus.buses import (
    NOBODY,
    PYTHON,
    REPO,
    Daemon,
    PrivateBus,
    Processes,
    as_user,
    processes,
)
from tests.kernels import DEBIAN_KERNELS, Unavailable, bzimage, debian_kernel, install_kernel

WARM = "6.1.0-55-cloud-amd64"
INITRD_SIZE = 64 << 20
SPARSE_SIZE = 2 << 30
SETTLE = 1.0  # seconds after a flood round before its RSS is read


def status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _real_kernel(boot: Path) -> dict[str, Any]:
    """A real Debian vmlinuz in ``boot`` (or a constructed one), with a 64 MiB initrd."""
    try:
        src = debian_kernel(DEBIAN_KERNELS[0])
        release = src.name.removeprefix("vmlinuz-")
        origin = f"the vmlinuz of Debian's {DEBIAN_KERNELS[0]}"
        shutil.copyfile(src, boot / src.name)
        kernel = boot / src.name
    except Unavailable as e:
        release = "6.1.0-56-cloud-amd64"
        kernel = boot / f"vmlinuz-{release}"
        kernel.write_bytes(bzimage(release, payload=8 << 20))
        origin = f"a constructed 8 MiB bzImage (apt could not fetch a real one: {e})"
    kernel.chmod(0o644)
    initrd = boot / f"initrd.img-{release}"
    with initrd.open("wb") as f:
        f.write(b"070701")
        block = os.urandom(1 << 20)
        while f.tell() < INITRD_SIZE:
            f.write(block[: INITRD_SIZE - f.tell()])
    initrd.chmod(0o644)
    return {
        "path": str(kernel),
        "release": release,
        "size_mib": kernel.stat().st_size / (1 << 20),
        "initrd_mib": INITRD_SIZE / (1 << 20),
        "origin": origin,
    }


def _measure(pid: int, idle: float, action: Callable[[], None]) -> dict[str, float]:
    reset_peak(pid)
    t0 = time.monotonic()
    action()
    seconds = time.monotonic() - t0
    after = status(pid)
    return {"peak_above_idle_mib": after["VmHWM"] - idle, "seconds": seconds}


def _summaries(samples: list[dict[str, float]]) -> dict[str, Any]:
    keys = samples[0].keys() if samples else ()
    out: dict[str, Any] = {}
    for k in keys:
        s = Summary.of([x[k] for x in samples])
        if s is not None:
            out[k] = s.to_json()
    return out


def _flood(
    procs: Processes, bus: PrivateBus, client: Path, calls: int, size: int
) -> list[list[Any]]:
    argv = [PYTHON, str(client), bus.address, str(calls), str(size), "option"]
    proc = procs.start(as_user(NOBODY, argv), cwd="/", stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"the flood client failed ({proc.returncode})")
    result: list[list[Any]] = json.loads(out)
    return result


def run(repeat: int, rounds: int, calls: int, size: int) -> dict[str, Any]:
    with processes() as procs, tempfile.TemporaryDirectory(prefix="liveupd-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        boot, hooks, state = root / "boot", root / "hooks.d", root / "state"
        install_kernel(boot, WARM)
        hooks.mkdir()
        kernel = _real_kernel(boot)
        sparse = boot / "vmlinuz-6.9.0-sparse"
        with sparse.open("wb") as f:
            f.truncate(SPARSE_SIZE)
        sparse.chmod(0o644)
        # The flood client, where uid 65534 can read it (the checkout may be private).
        client = root / "flood.py"
        shutil.copyfile(REPO / "tests" / "dbus" / "flood.py", client)
        client.chmod(0o644)
        conf = root / "liveupd.conf"
        conf.write_text(
            f'[kernel]\nallowed-dirs = ["{boot}"]\n[hooks]\ndirs = ["{hooks}"]\n'
            f'[daemon]\nstate-dir = "{state}"\n'
        )
        bus = PrivateBus(procs)
        daemon = Daemon(procs, bus, conf, state).start()
        assert daemon.proc is not None
        pid = daemon.proc.pid
        start_rss = status(pid)["VmRSS"]

        def stage(path: str) -> None:
            bus.call("Stage", "sssa{sv}", path, "", "", "0")
            bus.call("Cancel")

        stage(str(boot / f"vmlinuz-{WARM}"))  # warm-up: every code path imported
        for _ in range(20):
            bus.get("State")
        idle = status(pid)["VmRSS"]

        def refuse() -> None:
            r = bus.gdbus("org.liveupd.LiveUpdate1.Manager.Stage", str(sparse), "", "", "{}")
            if r.error != "org.liveupd.LiveUpdate1.Error.InvalidKernel":
                raise RuntimeError(f"the 2 GiB kernel was not refused: {r.stderr}")

        refusals = [_measure(pid, idle, refuse) for _ in range(repeat)]
        refusal_message = bus.gdbus(
            "org.liveupd.LiveUpdate1.Manager.Stage", str(sparse), "", "", "{}"
        ).message
        stages = [_measure(pid, idle, lambda: stage(kernel["path"])) for _ in range(repeat)]

        flood_idle = status(pid)["VmRSS"]
        log_start = daemon.log_file.stat().st_size
        flood_rounds = []
        for _ in range(rounds):
            reset_peak(pid)
            before = daemon.log_file.stat().st_size
            t0 = time.monotonic()
            replies = _flood(procs, bus, client, calls, size)
            seconds = time.monotonic() - t0
            bus.get("State")  # the daemon answers, and has handled every call
            time.sleep(SETTLE)
            after = status(pid)
            flood_rounds.append(
                {
                    "calls": calls,
                    "seconds": seconds,
                    "log_bytes": daemon.log_file.stat().st_size - before,
                    "rss_after_mib": after["VmRSS"],
                    "peak_mib": after["VmHWM"],
                    "replies": dict(Counter(str(name) for name, _ in replies)),
                    "longest_reply_chars": max(int(n) for _, n in replies),
                }
            )
        log_before_stop = daemon.log_file.stat().st_size - log_start
        rss_end = status(pid)["VmRSS"]
        daemon.terminate()
        log_total = daemon.log_file.stat().st_size - log_start
        tail = daemon.log()[-(log_total or 1) :]
        return {
            "meta": {
                "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
                "commit": _git("rev-parse", "HEAD"),
                "dirty": bool(_git("status", "--porcelain", "--", "liveupd")),
                "python": platform.python_version(),
                "host_kernel": platform.release(),
                "cores": os.cpu_count(),
            },
            "kernel": kernel,
            "start_rss_mib": start_rss,
            "idle_rss_mib": idle,
            "refuse_sparse": {
                "file_gib": SPARSE_SIZE / (1 << 30),
                "message": refusal_message,
                **_summaries(refusals),
            },
            "stage_real": _summaries(stages),
            "flood": {
                "size": size,
                "idle_rss_mib": flood_idle,
                "rounds": flood_rounds,
                "rss_end_mib": rss_end,
                "log_bytes_before_stop": log_before_stop,
                "log_bytes_total": log_total,
                "suppressed_lines": [
                    line for line in tail.splitlines() if "refusals.suppressed" in line
                ],
            },
        }


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return out.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeat", type=int, default=5, help="refusals and stages (default 5)")
    p.add_argument("--rounds", type=int, default=4, help="flood rounds (default 4)")
    p.add_argument("--calls", type=int, default=48, help="calls per flood round (default 48)")
    p.add_argument("--size", type=int, default=10_000_000, help="bytes per argument (10 MB)")
    p.add_argument("--json", action="store_true", help="print JSON (default: the report's text)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.confinement runs as root (the flood comes from uid 65534)", file=sys.stderr)
        return 2
    res = run(args.repeat, args.rounds, args.calls, args.size)
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        from bench.confinement_report import section

        print(section(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
