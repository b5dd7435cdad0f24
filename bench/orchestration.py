"""liveupd's own cost per transition: Execute to the jump, minus the time inside hooks.

Runs the real engine with the dry-run backends (no VM: this isolates the
orchestration itself — planning, journaling with fsync, process spawning,
events) with 0, 10 and 100 no-op hooks (``/bin/true``), each hook with its own
NN prefix (sequential) or all sharing one prefix (concurrent), and 100 that each
have an undo (their start is fsync'd before they run); hooks that
sleep 100 ms show what sharing a prefix gains when hooks take time; the
100-hook case again with the state directory on tmpfs shows the share of
durable writes.  ``--profile`` runs cProfile over one 100-hook transition and
reports where the time goes (file:function).

    python -m bench.orchestration [--repeat N] [--json] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import pstats
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.analysis import hooks_seconds, sequential_noop_case
from bench.stats import Summary, linear_fit
from liveupd import schema
from liveupd.assembly import make_engine
from liveupd.backends import dryrun
from liveupd.config.load import load_config
from liveupd.transition.context import StageRequest
from liveupd.transition.phases import ExecMode
from tests.kernels import install_kernel

TARGET = "6.1.0-56-cloud-amd64"


@dataclass(frozen=True)
class Case:
    hooks: int
    shared_prefix: bool
    program: tuple[str, ...] = ("/bin/true",)
    tmpfs: bool = False  # state directory on /dev/shm instead of the disk /tmp is on
    undo: bool = False  # each hook has an undo (/bin/true): its start is fsync'd

    @property
    def name(self) -> str:
        what = "no-op" if self.program == ("/bin/true",) else " ".join(self.program)
        layout = "one prefix (concurrent)" if self.shared_prefix else "own prefixes (sequential)"
        where = ", state on tmpfs" if self.tmpfs else ""
        if self.hooks == 0:
            return f"0 hooks{where}"
        undo = ", each with an undo" if self.undo else ""
        return f"{self.hooks} {what} hooks{undo}, {layout}{where}"


CASES = (
    Case(0, False),
    Case(10, False),
    Case(10, True),
    Case(100, False),
    Case(100, True),
    Case(10, False, ("/bin/sleep", "0.1")),
    Case(10, True, ("/bin/sleep", "0.1")),
    Case(0, False, tmpfs=True),
    Case(100, False, tmpfs=True),
    Case(100, False, undo=True),
)
QUICK_CASES = (Case(0, False), Case(10, False), Case(10, True), Case(100, False))


def quiet_logs() -> None:
    """The engine logs through the 'liveupd' logger; keep it off the terminal."""
    log = logging.getLogger("liveupd")
    log.handlers[:] = [logging.NullHandler()]
    log.propagate = False


def _setup(root: Path, case: Case) -> Path:
    boot = root / "boot"
    install_kernel(boot, TARGET)
    hook_dir = root / "hooks.d"
    hook_dir.mkdir()
    run = json.dumps(list(case.program))
    undo = 'undo = ["/bin/true"]\n' if case.undo else ""
    for i in range(case.hooks):
        prefix = 50 if case.shared_prefix else i
        (hook_dir / f"{prefix:02d}-noop{i:03d}.hook").write_text(
            f'phase = "quiesce"\nrun = {run}\n{undo}'
        )
    conf = root / "liveupd.conf"
    conf.write_text(
        f'[kernel]\nallowed-dirs = ["{boot}"]\n[hooks]\ndirs = ["{hook_dir}"]\n'
        f'[daemon]\nstate-dir = "{root / "state"}"\n'
    )
    return conf


async def _one(conf: Path) -> dict[str, float]:
    config = load_config(conf)
    engine = make_engine(config, dryrun.make(config.state_dir), events=lambda e: None)
    t = await engine.stage(StageRequest(kernel=TARGET))
    start = time.perf_counter()
    await engine.start_execute(t, ExecMode.DIRECT)
    total = time.perf_counter() - start
    steps = [schema.dump(s) for s in t.ctx.journal.steps()]
    inside = hooks_seconds(steps, ("quiesce",))
    return {"total_s": total, "inside_hooks_s": inside, "own_cost_s": total - inside}


@contextmanager
def _root(case: Case) -> Iterator[Path]:
    base = "/dev/shm" if case.tmpfs else None
    with tempfile.TemporaryDirectory(prefix="liveupd-bench-", dir=base) as tmp:
        yield Path(tmp)


def fstype(path: str) -> str:
    out = subprocess.run(
        ["findmnt", "-no", "FSTYPE", "-T", path], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or "?"


def measure(case: Case, repeat: int) -> dict[str, Any]:
    runs = []
    for _ in range(repeat):
        with _root(case) as root:
            runs.append(asyncio.run(_one(_setup(root, case))))

    def stat(key: str) -> dict[str, Any]:
        s = Summary.of(r[key] * 1000 for r in runs)
        assert s is not None
        return s.to_json()

    return {
        "case": case.name,
        "hooks": case.hooks,
        "shared_prefix": case.shared_prefix,
        "program": list(case.program),
        "tmpfs": case.tmpfs,
        "undo": case.undo,
        "repeat": repeat,
        "total_ms": stat("total_s"),
        "inside_hooks_ms": stat("inside_hooks_s"),
        "own_cost_ms": stat("own_cost_s"),
    }


def per_hook(results: list[dict[str, Any]]) -> dict[str, float] | None:
    """Own cost = a + b * hooks over the sequential no-op cases on disk (median ms)."""
    points = [
        (float(r["hooks"]), float(r["own_cost_ms"]["median"]))
        for r in results
        if sequential_noop_case(r)
    ]
    fit = linear_fit(points)
    if fit is None:
        return None
    return {"base_ms": fit[0], "per_hook_ms": fit[1]}


# ------------------------------------------------------------------ profile --


def _where(key: tuple[str, int, str]) -> str:
    filename, _line, func = key
    if filename == "~":  # a builtin
        return func
    parts = Path(filename).parts
    if "liveupd" in parts:  # ours, wherever the checkout is
        at = len(parts) - 1 - parts[::-1].index("liveupd")
        rel = "/".join(parts[at:])
    else:
        rel = "/".join(parts[-2:])
    return f"{rel}:{func}"


def profile(hooks: int = 100, top: int = 15) -> dict[str, Any]:
    """cProfile over one Execute with ``hooks`` sequential no-op hooks (state on disk)."""
    case = Case(hooks, False)
    with _root(case) as root:
        conf = _setup(root, case)
        prof = cProfile.Profile()

        async def go() -> dict[str, float]:
            config = load_config(conf)
            engine = make_engine(config, dryrun.make(config.state_dir), events=lambda e: None)
            t = await engine.stage(StageRequest(kernel=TARGET))
            prof.enable()
            start = time.perf_counter()
            await engine.start_execute(t, ExecMode.DIRECT)
            total = time.perf_counter() - start
            prof.disable()
            return {"total_s": total}

        result = asyncio.run(go())
    stats = pstats.Stats(prof)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = []
    for key, (_cc, ncalls, tottime, cumtime, _callers) in raw.items():
        rows.append(
            {
                "where": _where(key),
                "calls": int(ncalls),
                "self_ms": tottime * 1000,
                "cumulative_ms": cumtime * 1000,
            }
        )
    by_self = sorted(rows, key=lambda r: -float(r["self_ms"]))[:top]
    ours = [r for r in rows if str(r["where"]).startswith("liveupd/")]
    by_cum = sorted(ours, key=lambda r: -float(r["cumulative_ms"]))[:top]
    return {
        "hooks": hooks,
        "profiled_total_ms": result["total_s"] * 1000,
        "top_self": by_self,
        "top_cumulative_liveupd": by_cum,
    }


def enumeration(repeat: int = 5) -> dict[str, Any] | None:
    """This host's real device enumeration, as the devices step does it (read-only).

    The dry-run machine has a handful of devices; a real one has hundreds, and the
    devices step enumerates them all through udev when it plans (prepare) and again per
    device when it checks holders (apply).
    """
    try:
        from liveupd.devices.enumerate import udev_devices
        from liveupd.devices.sysfs import Sysfs

        times, count = [], 0
        for _ in range(repeat):
            start = time.perf_counter()
            count = len(udev_devices(Sysfs()))
            times.append((time.perf_counter() - start) * 1000)
    except Exception as e:  # no udev database here, no pyudev, ...
        return {"error": repr(e)}
    s = Summary.of(times)
    assert s is not None
    return {"devices": count, "ms": s.to_json()}


def run_all(repeat: int, quick: bool = False, with_profile: bool = True) -> dict[str, Any]:
    quiet_logs()
    results = [measure(c, repeat) for c in (QUICK_CASES if quick else CASES)]
    return {
        "repeat": repeat,
        "state_fs": fstype(tempfile.gettempdir()),
        "cases": results,
        "fit": per_hook(results),
        "profile": profile() if with_profile else None,
        "enumeration": enumeration(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="fewer cases")
    p.add_argument("--json", action="store_true")
    p.add_argument("--profile", action="store_true", help="also profile a 100-hook transition")
    args = p.parse_args()
    out = run_all(args.repeat, args.quick, args.profile)
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(f"state directory on {out['state_fs']} (tmpfs cases: /dev/shm)")
    for r in out["cases"]:
        own, tot = r["own_cost_ms"], r["total_ms"]
        print(
            f"{r['case']:<58} total {tot['median']:8.1f} ms  own cost {own['median']:8.1f} ms"
            f" (min {own['min']:.1f}, max {own['max']:.1f})"
        )
    if out["fit"]:
        print(
            f"own cost ~ {out['fit']['base_ms']:.1f} ms + {out['fit']['per_hook_ms']:.2f} ms/hook"
        )
    if out["profile"]:
        prof = out["profile"]
        print(f"\nprofile of one {prof['hooks']}-hook Execute ({prof['profiled_total_ms']:.0f} ms)")
        for row in prof["top_self"]:
            print(f"  self {row['self_ms']:8.1f} ms  {row['calls']:6d}x  {row['where']}")
        print("  liveupd/ by cumulative time:")
        for row in prof["top_cumulative_liveupd"]:
            print(f"  cum  {row['cumulative_ms']:8.1f} ms  {row['calls']:6d}x  {row['where']}")


if __name__ == "__main__":
    main()
