"""Service back with its state (issue 16): a stateful service's downtime, and its memory.

A key-value server (tests/vm/kv_service.py: a random value held only in
memory) runs as ``kv-bench.service``; it is listed in liveupd's ``[preserve]
units``, so liveupd dumps it with CRIU and the new boot restores it, while
``systemctl kexec`` and ``kexec -e`` leave systemd to start it fresh.  Before
each run the service is restarted (with high PIDs, which the restore needs free
on the new boot) and asked for its value.  On every boot a probe unit
(``kv-probe.service``, ordered before nothing, started early in sysinit)
connects to the port every 20 ms until the server answers, and writes the
uptime of that first answer and the value it carried to /run.  The figure is
that uptime placed on the host clock (bench/clock.py) minus the host time the
update was requested; the value says whether the service came back with its
state (the pre-update value) or without it (a fresh one).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.stats import DASH, Summary, fmt_summary
from bench.tables import Run, label, ok_runs, table
from tests.vm.guest_vm import GuestVM
from tests.vm.kv_service import ask_port, install_server, unit_text

UNIT = "kv-bench.service"
PORT = 7010
PROBE = "/usr/local/bin/kv-probe"
PROBE_UNIT = "kv-probe.service"
PROBE_RESULT = "/run/kv-probe.json"
DROPIN = "/etc/liveupd/liveupd.conf.d/50-bench-preserve.conf"
PROBE_PY = """#!/usr/bin/python3
import json, os, socket, sys, time
port, out = int(sys.argv[1]), sys.argv[2]
def up():
    return time.clock_gettime(time.CLOCK_BOOTTIME)
started, attempts, result = up(), 0, None
while result is None and up() - started < 900:
    attempts += 1
    try:
        with socket.create_connection(("127.0.0.1", port), 5) as c:
            line = c.makefile().readline().split()
        if len(line) == 2:
            result = {"answered": up(), "value": line[0], "pid": int(line[1])}
    except OSError:
        pass
    if result is None:
        time.sleep(0.02)
result = result or {"error": "no answer in 900 s"}
result.update(started=started, attempts=attempts)
with open(out + ".tmp", "w") as f:
    json.dump(result, f)
os.rename(out + ".tmp", out)
"""
PROBE_UNIT_TEXT = (
    "[Unit]\nDescription=liveupd bench: when the key-value server first answers\n"
    "DefaultDependencies=no\n"
    f"[Service]\nExecStart={PROBE} {PORT} {PROBE_RESULT}\n"
    "[Install]\nWantedBy=sysinit.target\n"
)


def setup(vm: GuestVM) -> None:
    """Once per guest: the server, its unit (listed for preservation), the probe."""
    install_server(vm)
    vm.write_file(PROBE, PROBE_PY, mode=0o755)
    vm.write_file(f"/etc/systemd/system/{UNIT}", unit_text(PORT))
    vm.write_file(f"/etc/systemd/system/{PROBE_UNIT}", PROBE_UNIT_TEXT)
    vm.run(["mkdir", "-p", DROPIN.rsplit("/", 1)[0]])
    vm.write_file(DROPIN, f'[preserve]\nunits = ["{UNIT}"]\n', mode=0o644)
    vm.run(["systemctl", "daemon-reload"])
    vm.run(["systemctl", "enable", UNIT, PROBE_UNIT], timeout=120)
    vm.run(["systemctl", "stop", "liveupd.service"], timeout=300)  # re-reads its config


def arm(vm: GuestVM) -> tuple[str, int]:
    """Before a run: the service restarted with high PIDs; its value and PID."""
    vm.run(
        "echo 300000 > /proc/sys/kernel/ns_last_pid && "
        f"systemctl restart {shlex.quote(UNIT)} && rm -f {PROBE_RESULT}",
        timeout=120,
    )
    return ask_port(vm, PORT)


def collect(vm: GuestVM, timeout: float = 300.0) -> dict[str, Any]:
    """On the new boot: the probe's record (waits until the probe has written it)."""
    tries = int(timeout / 0.5)
    r = vm.run(
        f"for i in $(seq {tries}); do test -s {PROBE_RESULT} && exec cat {PROBE_RESULT}; "
        "sleep 0.5; done; exit 1",
        timeout=timeout + 60,
        check=False,
    )
    if not r.ok:
        return {"error": f"no {PROBE_RESULT} within {timeout:.0f} s"}
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def outcome(
    before: tuple[str, int],
    probe: Mapping[str, Any],
    host_time: Callable[[float], float],
    t_req: float,
) -> dict[str, Any]:
    """A run's fields: seconds from the request to the first answer, and the state it had.

    ``host_time`` places a new-boot uptime on the host clock; ``t_req`` is the
    host time the update was requested.
    """
    if probe.get("error") or not isinstance(probe.get("answered"), int | float):
        return {"service_error": str(probe.get("error") or "the probe wrote no answer")}
    attempts = int(probe.get("attempts") or 0)
    return {
        "service_back_s": host_time(float(probe["answered"])) - t_req,
        "service_state": "kept" if probe.get("value") == before[0] else "lost",
        "service_same_pid": probe.get("pid") == before[1],
        "service_probe_started_s": host_time(float(probe["started"])) - t_req
        if isinstance(probe.get("started"), int | float)
        else None,
        # 1: the service already answered when the probe started (the figure is an upper bound)
        "service_attempts": attempts,
    }


# ------------------------------------------------------------------ report --


def _state(runs: Sequence[Run]) -> str:
    known = [r["service_state"] for r in runs if r.get("service_state")]
    if not known:
        return DASH
    return ", ".join(
        f"state {s} ({known.count(s)}/{len(known)})" for s in ("kept", "lost") if s in known
    )


def _preserved_usec(runs: Sequence[Run], field: str) -> Summary | None:
    values = [
        p[field] / 1e6
        for r in runs
        for p in r.get("preserved") or []
        if p.get("unit") == UNIT and isinstance(p.get(field), int)
    ]
    return Summary.of(values)


def rows(runs: Sequence[Run]) -> list[tuple[str, ...]]:
    """One row per method, in the order the methods ran."""
    order: list[str] = []
    for r in runs:
        if r["method"] not in order:
            order.append(r["method"])
    out: list[tuple[str, ...]] = []
    for key in order:
        rs = [r for r in runs if r["method"] == key]
        ok = [r for r in ok_runs(rs) if r.get("service_back_s") is not None]
        back = Summary.of(r["service_back_s"] for r in ok)
        marker = Summary.of(r.get("total_s") for r in ok)
        early = sum(1 for r in ok if r.get("service_attempts") == 1)
        jumps = sorted(
            {f"{r['from_release']} \u2192 {r['to_release']}" for r in ok if r.get("from_release")}
        )
        out.append(
            (
                label(key),
                ", ".join(jumps) or DASH,
                f"{len(ok)}/{len(rs)}",
                _state(ok),
                _min_med_max(back),
                _min_med_max(marker),
                fmt_summary(_preserved_usec(ok, "dump_usec"), 2),
                fmt_summary(_preserved_usec(ok, "restore_usec"), 2),
                str(early) if ok else DASH,
            )
        )
    return out


def _min_med_max(s: Summary | None) -> str:
    if s is None:
        return DASH
    return f"{s.min:.2f} / **{s.median:.2f}** / {s.max:.2f}"


HEADER = (
    "method",
    "jump",
    "runs ok",
    "state on the new kernel",
    "**service back with its state** s (min / median / max)",
    "boot marker s, same runs (min / median / max)",
    "CRIU dump s",
    "CRIU restore s",
    "answered at the probe's first try",
)


def provenance(sb: Mapping[str, Any]) -> str:
    """One line under the machine table: this section's figures come from their own run."""
    meta = sb.get("meta", {})
    return (
        f"*Service back with its state* is from a run of its own ({meta.get('date_utc', '?')} "
        f"UTC, commit `{str(meta.get('commit', '?'))[:12]}`, "
        f"{float(meta.get('duration_s') or 0):.0f} s); no other figure on this page is."
    )


def section(sb: Mapping[str, Any]) -> str:
    """The page's section, from ``results["service_back"]`` (its own run)."""
    meta = sb.get("meta", {})
    vm = sb.get("vm") or {}
    runs: list[Run] = list(vm.get("runs", []))
    guest = vm.get("guest") or {}
    parts = [
        f"From its own run ({meta.get('date_utc', '?')} UTC, commit "
        f"`{str(meta.get('commit', '?'))[:12]}` {meta.get('commit_subject', '')}, "
        f"{meta.get('rounds', '?')} rounds of {', '.join(meta.get('methods', []))} in turn, "
        "no hook-cost runs; the host and QEMU settings of the table above, but its own guest: "
        f"{guest.get('systemd', '?')}, {guest.get('kexec_tools', '?')}, kernels "
        f"{' and '.join(k['release'] for k in vm.get('kernels') or []) or '?'}, "
        f"host load average (1 min) before / after {meta.get('loadavg', '?')}); "
        "the other VM figures on this page are not from it.",
        "",
        f"A key-value server holding a random value only in memory runs as `{UNIT}` and is "
        "listed in liveupd's `[preserve] units`: liveupd dumps it with CRIU before the jump "
        "and the new boot restores it; `systemctl kexec` and raw `kexec -e` leave systemd to "
        "start it fresh on the new kernel. **Service back with its state** is the time from "
        "the request (Execute, or the command) until the service first answers a request on "
        "the new kernel, taken by a probe unit started early in the new boot that connects "
        "every 20 ms; *state kept* means the answer carried the value the service held before "
        "the update, *state lost* a fresh one. The boot marker column is the page's downtime "
        "measure in the same runs. liveupd's runs are updates from kernel A to kernel B (an "
        "unmeasured raw `kexec -e` back to A precedes each when needed): Debian 13's criu "
        "4.1.1 cannot dump a TCP server on kernels 6.16 and later ([preserve.md](preserve.md)); "
        "the other methods jump from whichever kernel the guest runs (column *jump*). "
        "CRIU's dump (on the old kernel, part of the downtime) and restore (on the new one) "
        "come from liveupd's transition record (`preserved`). A "
        "run answered at the probe's first try is an upper bound (the service was up before "
        "the probe).",
        "",
    ]
    if vm.get("aborted"):
        parts += [f"**The run stopped early**: {vm['aborted']}", ""]
    parts.append(table(HEADER, rows(runs)) if runs else "(no runs)")
    failed = [
        f"- {label(r['method'])}, round {r['round']}: "
        + str(r.get("error") or r["service_error"])[:200]
        for r in runs
        if r.get("error") or r.get("service_error")
    ]
    if failed:
        parts += ["", "Runs without a figure:", "", *failed]
    return "\n".join(parts)
