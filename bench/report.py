"""docs/benchmarks.md from the benchmark's results (a JSON document, see bench/run.py).

Everything in the file is generated: the prose around the tables is fixed
text here, the numbers come from the results, and the verdicts on the
issue's targets are computed from them.  ``python -m bench.run --report-only``
regenerates the file from the saved results without measuring anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.analysis import by_method, orchestration_own_ms, phase_breakdown, summary
from bench.confinement_report import section as confinement_section
from bench.findings import findings, targets
from bench.service_back import provenance as service_back_provenance
from bench.service_back import section as service_back_section
from bench.startup import (
    baseline_daemon_rows,
    daemon_cpu_row,
    host_targets,
    provenance,
    verify_startup_section,
)
from bench.stats import DASH, Summary, fmt_num, fmt_ratio, fmt_summary, ratio
from bench.tables import (
    FLOOR,
    Run,
    fmt_runs,
    label,
    median_of,
    ok_runs,
    paired_ratios,
    table,
    vm_hook_fit,
)
from bench.vm_targets import vm_targets

# Published firmware (POST) and bare-metal reboot times; see "A physical server".
FIRMWARE_SOURCES: tuple[tuple[str, float, str, str], ...] = (
    (
        "workstation-class firmware",
        54.0,
        "`systemd-analyze time` on a 16-core X299 workstation: 53.921 s (firmware) + "
        "2.643 s (loader)",
        "https://opensource.com/article/20/9/systemd-startup-configuration",
    ),
    (
        "current bare-metal servers",
        316.0,
        "AWS EC2 metal reboots measured by Testing Farm (77 guest setups): median 316 s "
        "(Graviton, 7th generation) to 531 s (Intel, 7th generation), 202-583 s overall for "
        "generations 7 and 8; the whole reboot, firmware-dominated",
        "https://gitlab.com/testing-farm/infrastructure/-/merge_requests/1526",
    ),
    (
        "older bare-metal servers",
        792.0,
        "the same measurements: median 792 s (Intel, 5th generation), 706-820 s for "
        "generations 5 and 6; systemd's CI notes that firmware setup on AWS metal nodes "
        '"takes over 15 minutes" (https://github.com/systemd/systemd-centos-ci/pull/662)',
        "https://gitlab.com/testing-farm/infrastructure/-/merge_requests/1526",
    ),
)


# ------------------------------------------------------------------ sections --


def machine_section(res: Mapping[str, Any]) -> str:
    meta = res.get("meta", {})
    # The VM rows describe the run the VM figures come from (an earlier one when kept).
    vm_meta = meta.get("vm_from") or meta
    vm = res.get("vm") or {}
    guest = vm.get("guest") or {}
    kernels = vm.get("kernels") or []
    krows = ", ".join(f"{k['release']} ({k['version']})" for k in kernels) or DASH
    rows = [
        ("date (UTC)", meta.get("date_utc", DASH)),
        ("commit", f"`{meta.get('commit', DASH)}` {meta.get('commit_subject', '')}".strip()),
        ("code measured", meta.get("source", DASH)),
        ("host CPU", f"{meta.get('host_cpu', DASH)}, {meta.get('host_cores', DASH)} cores"),
        ("host OS, kernel", f"{meta.get('host_os', DASH)}, {meta.get('host_kernel', DASH)}"),
        ("host load average (1 min) before / after", meta.get("loadavg", DASH)),
        ("bench wall time", f"{fmt_num(meta.get('duration_s'), 0)} s"),
    ]
    if vm_meta is not meta:
        rows.append(
            (
                "VM figures from",
                f"{vm_meta.get('date_utc', DASH)}, commit `{str(vm_meta.get('commit', DASH))[:12]}`"
                " (the rows below describe that run)",
            )
        )
    rows += [
        ("QEMU", vm_meta.get("qemu_version", DASH)),
        (
            "accelerator and machine",
            "TCG, `-accel tcg,tb-size=128` (a 128 MiB translation cache: the default 1 GiB "
            "makes boots after a kexec slow and noisy), `-machine q35 -cpu "
            f"{vm_meta.get('guest_cpu', DASH)} -smp 2 -m 1024`, SeaBIOS, virtio disks with "
            "`cache=unsafe` overlays",
        ),
        (
            "guest",
            f"{vm_meta.get('guest_os', DASH)}, {guest.get('systemd', DASH)}, "
            f"{guest.get('kexec_tools', DASH)}",
        ),
        ("guest kernels (A, B)", krows),
        ("guest command line", f"`{guest.get('cmdline', DASH)}`"),
        ("guest boot (first, cold)", guest.get("boot", DASH)),
        (
            "rounds",
            f"{vm_meta.get('rounds', DASH)} per method, in turn: "
            + " ".join(vm_meta.get("methods", []))
            + (" (quick run)" if vm_meta.get("quick") else ""),
        ),
    ]
    return table(("", ""), [(k, str(v)) for k, v in rows])


def downtime_section(runs: Sequence[Run], floor_key: str = FLOOR) -> str:
    groups = by_method(runs)
    floor = median_of(groups.get(floor_key, []), "total_s")
    rows = []
    for key, rs in groups.items():
        ok = ok_runs(rs)
        paired = Summary.of(paired_ratios(runs, key, floor_key)) if key != floor_key else None
        rows.append(
            (
                label(key),
                f"{len(ok)}/{len(rs)}",
                fmt_runs(ok, "total_s"),
                fmt_ratio(ratio(median_of(ok, "total_s"), floor)),
                fmt_summary(paired, 2, "x") if paired else DASH,
                fmt_runs(ok, "old_side_s"),
                fmt_runs(ok, "handover_s"),
                fmt_runs(ok, "new_side_s"),
                fmt_runs(ok, "network_back_s"),
                fmt_runs(ok, "recovered_s"),
                fmt_runs(ok, "prep_s"),
            )
        )
    return table(
        (
            "method",
            "runs ok",
            "**downtime** s",
            "x floor",
            "x floor, same round",
            "old side s",
            "handover s",
            "new side s",
            "network back s (uptime)",
            "liveupd recovered s",
            "prep s (not downtime)",
        ),
        rows,
    )


def safety_section(runs: Sequence[Run]) -> str:
    rows = []
    for key, rs in by_method(runs).items():
        ok = ok_runs(rs)
        lost = [r for r in ok if r.get("payload") not in (None, "intact")]
        how = sorted({str(r["payload"]) for r in lost})
        replayed = [r for r in ok if r.get("journal_replayed")]
        devs = sorted({d for r in replayed for d in r.get("ext4_recovery", [])})
        not_running = [r for r in ok if r.get("boot_state") not in (None, "running")]
        units = sorted({u for r in not_running for u in r.get("failed_units", [])})
        rows.append(
            (
                label(key),
                f"{len(lost)}/{len(ok)} lost it" + (f" ({', '.join(how)})" if how else ""),
                f"{len(replayed)}/{len(ok)}" + (f" ({', '.join(devs)})" if devs else ""),
                f"{len(ok) - len(not_running)}/{len(ok)}"
                + (f" (failed: {', '.join(units)})" if units else ""),
                str(len(rs) - len(ok)),
            )
        )
    return table(
        (
            "method",
            "1 MiB file written just before",
            "ext4 journal replayed at mount",
            "new boot ended `running`",
            "runs failed",
        ),
        rows,
    )


def residual_section(runs: Sequence[Run]) -> str:
    rows = []
    for key, rs in by_method(runs).items():
        ok = ok_runs(rs)
        cal = summary(ok, "calibration_error_s")
        rows.append(
            (
                label(key),
                fmt_summary(summary(ok, "agent_latency_s"), 3),
                fmt_summary(summary(ok, "serial_latency_s"), 3),
                fmt_num(cal.max if cal else None, 3),
                fmt_runs(ok, "handover_s"),
            )
        )
    return table(
        (
            "method",
            "agent latency s (in the downtime)",
            "marker serial latency s (in the downtime)",
            "clock placement error s (max)",
            "handover s (last line -> new kernel's clock)",
        ),
        rows,
    )


def liveupd_section(runs: Sequence[Run]) -> str:
    rows = []
    for key, rs in by_method(runs).items():
        ok = [r for r in ok_runs(rs) if r.get("own_cost")]
        if not ok:
            continue

        def own(field: str, rs: list[Run] = ok) -> Summary | None:
            return Summary.of(r["own_cost"].get(field) for r in rs)

        stamp_to_last = Summary.of(
            (r["old_side_s"] - r["exec_stamp_at_s"])
            if r.get("old_side_s") is not None and r.get("exec_stamp_at_s") is not None
            else None
            for r in ok
        )
        rows.append(
            (
                label(key),
                fmt_summary(summary(ok, "execute_at_s"), 3),
                fmt_summary(own("execute_to_stamp"), 3),
                fmt_summary(own("hooks"), 3),
                fmt_summary(own("own"), 3),
                fmt_summary(own("between_steps"), 3),
                fmt_summary(stamp_to_last, 2),
                fmt_runs(ok, "liveupd_downtime_s"),
            )
        )
    return table(
        (
            "method",
            "request -> Execute s",
            "Execute -> exec stamp s",
            "inside hooks s",
            "liveupd's own s",
            "of which between steps s",
            "exec stamp -> last line s",
            "liveupd's own downtime figure s",
        ),
        rows,
    )


def phases_section(runs: Sequence[Run]) -> str:
    """Median time of each part of Execute (from the runs' timelines), per liveupd mode."""
    per: dict[str, dict[str, list[float]]] = {}
    for r in ok_runs(runs):
        if not r.get("timeline"):
            continue
        for part, seconds in phase_breakdown(r["timeline"]).items():
            per.setdefault(part, {}).setdefault(str(r["method"]), []).append(seconds)
    methods = [
        m for m in ("liveupd-direct", "liveupd-systemd") if any(m in v for v in per.values())
    ]
    if not methods:
        return ""
    rows = [
        (part, *(fmt_summary(Summary.of(values.get(m, [])), 3) for m in methods))
        for part, values in per.items()
    ]
    return table(("part of Execute (to the exec stamp)", *(f"{label(m)} s" for m in methods)), rows)


def verify_section(runs: Sequence[Run]) -> str:
    """The new side of liveupd runs: when verification ran, on the new kernel's clock."""
    rows = []
    for key, rs in by_method(runs).items():
        ok = [r for r in ok_runs(rs) if r.get("verify")]
        if not ok:
            continue

        def v(field: str, rs: list[Run] = ok) -> str:
            return fmt_summary(Summary.of(r["verify"].get(field) for r in rs), 2)

        rows.append(
            (
                label(key),
                v("unit_started"),
                v("verify_started"),
                fmt_runs(ok, "network_back_s"),
                v("verify_finished"),
                v("marker"),
            )
        )
    return table(
        (
            "method (uptime of the new kernel, s)",
            "liveupd-verify.service started",
            "verification began (imports done)",
            "network back (DHCPv4 lease)",
            "verified (restore hooks done)",
            "boot marker",
        ),
        rows,
    )


def model_section(runs: Sequence[Run]) -> str:
    groups = by_method(runs)
    floor_new = median_of(groups.get(FLOOR, []), "total_s")
    reboot = ok_runs(groups.get("reboot", []))
    reboot_total = median_of(reboot, "total_s")
    reboot_handover = median_of(reboot, "handover_s") or 0.0
    rows = []
    header = ["method", "measured in the VM s"]
    header += [f"server with {fw:.0f} s firmware ({name}) s" for name, fw, _, _ in FIRMWARE_SOURCES]
    for key, rs in groups.items():
        med = median_of(ok_runs(rs), "total_s")
        if med is None or key.startswith("ovmf"):
            continue
        cells = [label(key), fmt_num(med, 1)]
        for _name, fw, _, _ in FIRMWARE_SOURCES:
            if key == "reboot":
                value = med - reboot_handover + fw
                cells.append(f"{value:.0f} ({fmt_ratio(ratio(value, floor_new))})")
            else:
                cells.append(f"{med:.1f} ({fmt_ratio(ratio(med, floor_new))})")
        rows.append(cells)
    text = table(header, rows)
    notes = "\n".join(
        f"- **{fw:.0f} s, {name}**: {what}. <{url}>" for name, fw, what, url in FIRMWARE_SOURCES
    )
    return (
        text
        + "\n\nThe firmware figures used:\n\n"
        + notes
        + "\n\nThe model keeps every measured part of each method (old side, new side: "
        "TCG-slow, so it flatters the firmware reboot) and replaces only the reboot's measured "
        f"handover (SeaBIOS plus kernel decompression here, {reboot_handover:.1f} s median) "
        "by the published firmware time; kexec methods skip the firmware, so their downtime is "
        f"unchanged. Measured reboot downtime for comparison: {fmt_num(reboot_total, 1)} s."
    )


def hook_cost_section(hook_runs: Sequence[Run]) -> str:
    ok = [r for r in hook_runs if not r.get("error") and r.get("own_cost")]
    rows = []
    for r in hook_runs:
        cost = r.get("own_cost") or {}
        rows.append(
            (
                str(r.get("case", DASH)),
                fmt_num(cost.get("execute_to_stamp"), 3),
                fmt_num(cost.get("hooks"), 3),
                fmt_num(cost.get("own"), 3),
                fmt_num(cost.get("between_steps"), 3),
                fmt_num(r.get("old_side_s"), 2),
                fmt_num(r.get("total_s"), 2),
                r.get("error") or "",
            )
        )
    text = table(
        (
            "hooks (VM, direct mode, vendor hooks masked)",
            "Execute -> exec stamp s",
            "inside hooks s",
            "own cost s",
            "of which between steps s",
            "request -> last line s",
            "downtime s",
            "error",
        ),
        rows,
    )
    fit = vm_hook_fit(ok)
    if fit:
        text += (
            f"\n\nIn the VM (TCG) liveupd's own cost grows as {fit[0] * 1000:.0f} ms + "
            f"{fit[1] * 1000:.1f} ms per no-op hook (least squares over the sequential cases)."
        )
    seq = {int(r["hooks"]): r for r in ok if not r.get("shared_prefix")}
    conc = {int(r["hooks"]): r for r in ok if r.get("shared_prefix")}
    for n in sorted(set(seq) & set(conc)):
        a = seq[n]["own_cost"]["execute_to_stamp"]
        b = conc[n]["own_cost"]["execute_to_stamp"]
        text += (
            f" With {n} hooks, sharing one prefix changes Execute -> exec stamp from {a:.2f} s "
            f"to {b:.2f} s ({b - a:+.2f} s)."
        )
    return text


def host_orchestration_section(orch: Mapping[str, Any]) -> str:
    rows = []
    for c in orch.get("cases", []):
        rows.append(
            (
                str(c["case"]),
                fmt_summary(Summary.from_json(c["total_ms"]), 1),
                fmt_summary(Summary.from_json(c["inside_hooks_ms"]), 1),
                fmt_summary(Summary.from_json(c["own_cost_ms"]), 1),
            )
        )
    text = table(("case (host, dry-run engine)", "Execute ms", "inside hooks ms", "own ms"), rows)
    enum = orch.get("enumeration") or {}
    if enum.get("ms"):
        text += (
            f"\n\nThe dry-run machine has a handful of devices. This host has {enum['devices']}, "
            "and one enumeration as the devices step does it (`devices/enumerate.py:"
            f"udev_devices`, read-only) takes {fmt_summary(Summary.from_json(enum['ms']), 0)} "
            "ms: a real Execute in `direct` mode does it at least twice (planning, then "
            "holders per device), none of which the dry-run figures include."
        )
    fit = orch.get("fit")
    if fit:
        text += (
            f"\n\nOwn cost ~ {fit['base_ms']:.1f} ms + {fit['per_hook_ms']:.2f} ms per no-op "
            "hook without an undo (least squares, sequential cases, state directory on "
            f"{orch.get('state_fs')}; {orch.get('repeat')} repeats each)."
        )
    extra = undo_cost_ms(orch.get("cases", []))
    if extra is not None:
        text += (
            f" A hook with an undo costs {extra:+.2f} ms more (100 sequential hooks, medians): "
            "its start is fsync'd before it runs, one fsync per group."
        )
    return text


def undo_cost_ms(cases: Sequence[Mapping[str, Any]]) -> float | None:
    """Own cost per hook of 100 sequential hooks with an undo, less that without one."""

    with_undo = orchestration_own_ms(cases, 100, undo=True)
    without = orchestration_own_ms(cases, 100)
    if with_undo is None or without is None:
        return None
    return (with_undo - without) / 100


def profile_section(prof: Mapping[str, Any] | None) -> str:
    if not prof:
        return "(not profiled in this run)"
    total = float(prof["profiled_total_ms"])
    rows = [
        (
            f"`{r['where']}`",
            str(r["calls"]),
            f"{float(r['self_ms']):.0f}",
            f"{100 * float(r['self_ms']) / total:.0f}%",
        )
        for r in prof.get("top_self", [])[:12]
    ]
    rows2 = [
        (f"`{r['where']}`", str(r["calls"]), f"{float(r['cumulative_ms']):.0f}")
        for r in prof.get("top_cumulative_liveupd", [])[:10]
    ]
    return (
        f"One Execute with {prof['hooks']} sequential no-op hooks under cProfile "
        f"({total:.0f} ms profiled; the profiler inflates Python-heavy parts, so read "
        "shares, not absolute times):\n\n"
        + table(("function (self time)", "calls", "self ms", "share"), rows)
        + "\n\n"
        + table(("liveupd function (cumulative)", "calls", "cumulative ms"), rows2)
    )


def daemon_section(host: Mapping[str, Any] | None, guest: Mapping[str, Any] | None) -> str:
    def load(d: Mapping[str, Any] | None, clients: int, procs: int = 1) -> Mapping[str, Any]:
        for x in (d or {}).get("loads", []):
            if int(x.get("clients", 0)) == clients and int(x.get("procs", 1)) == procs:
                return dict(x)
        return {}

    def summ(d: Mapping[str, Any] | None, key: str, scale: float = 1.0, digits: int = 2) -> str:
        v = (d or {}).get(key)
        return fmt_summary(Summary.from_json(v).scaled(scale), digits) if v else DASH

    def rate(x: Mapping[str, Any]) -> str:
        if not x:
            return DASH
        text = f"{float(x['rate']):,.0f}/s"
        if x.get("latency_median_ms") is not None:
            text += f" (median {float(x['latency_median_ms']):.2f} ms"
            if x.get("daemon_cpu_s") is not None and x.get("wall_s"):
                busy = float(x["daemon_cpu_s"]) / float(x["wall_s"])
                text += f", daemon CPU {busy:.0%}, {float(x['daemon_cpu_us_per_call']):.0f} us/call"
            text += ")"
        return text

    rows = [
        (
            "process start -> bus name owned",
            summ(host, "name_owned_s", 1000, 0) + " ms",
            summ(guest, "name_owned_s", 1000, 0) + " ms",
        ),
        (*daemon_cpu_row(host), DASH),
        (
            "process start -> READY=1",
            summ(host, "ready_s", 1000, 0) + " ms",
            summ(guest, "ready_s", 1000, 0) + " ms",
        ),
        (
            "idle RSS",
            summ(host, "idle_rss_mib", 1, 1) + " MiB",
            summ(guest, "idle_rss_mib", 1, 1) + " MiB",
        ),
        (
            "idle PSS",
            summ(host, "idle_pss_mib", 1, 1) + " MiB",
            summ(guest, "idle_pss_mib", 1, 1) + " MiB",
        ),
        ("`Get State`, 1 client", rate(load(host, 1)), rate(load(guest, 1))),
        ("`Get State`, 16 clients (1 client process)", rate(load(host, 16)), rate(load(guest, 16))),
        ("`Get State`, 16 clients (2 client processes)", rate(load(host, 16, 2)), DASH),
    ]
    text = table(("", "host (private bus, `--dry-run`)", "guest (system bus, TCG)"), rows)
    imports = (host or {}).get("imports")
    if imports:
        pk = ", ".join(
            f"{x['package']} {float(x['self_ms']):.0f} ms" for x in imports["by_package"][:6]
        )
        mods = ", ".join(
            f"`{x['module']}` {float(x['self_ms']):.0f} ms" for x in imports["liveupd_modules"][:5]
        )
        text += (
            f"\n\nWhere the start-up goes (host, one start under `python -X importtime`, which "
            f"slows imports down): {float(imports['total_ms']):.0f} ms of imports; self time by "
            f"package: {pk}; the heaviest liveupd modules: {mods}."
        )
    floors = (host or {}).get("import_rss")
    if floors:
        text += (
            "\n\nWhat the idle RSS is made of (a fresh interpreter after importing, host):\n\n"
            + table(
                ("imported", "RSS MiB", "import ms (best of 3)"),
                [
                    (
                        str(x["modules"]),
                        f"{float(x['rss_mib']):.1f}",
                        f"{float(x['import_ms']):.0f}",
                    )
                    for x in floors
                ],
            )
        )
    return text


# ------------------------------------------------------------------------ page --

DEFINITIONS = """\
**Downtime** is the same for every method: from the moment services start to go
away on the old kernel until a service on the new kernel answers.

- *Start*: the host time at which the request leaves for the guest agent. For
  liveupd the request is `busctl call ... Execute` (the kernel was staged
  beforehand with `liveupctl stage`); for the others it is the command that
  begins the shutdown or the jump, `kexec -e`, `systemctl kexec` (the kernel
  was loaded beforehand with `kexec -l`) or `systemctl reboot`.
- *End*: the host time at which the boot marker of the new boot arrives on the
  serial console. The marker is printed by a unit ordered after
  `multi-user.target`, so every service of the boot has started. For liveupd
  the table also gives the moment liveupd reports recovery (verification and
  restore hooks finished: `verification.downtime.uptime_at_verified` in the
  transition's journal, placed on the host clock).
- *Prep* (staging with liveupd, `kexec -l` otherwise) happens before the start
  and is reported apart: it is not downtime.

The downtime is split with the host clock and the guest's uptime:

- *old side*: request -> the old kernel's last console line (`kexec_core:
  Starting new kernel`, `reboot: Restarting system`; the console log level is
  raised to 6 just before the request so that the first one is printed);
- *handover*: that line -> the new kernel's clock starting (purgatory, or the
  firmware for a reboot, then decompression and early boot: a span no clock
  in the guest sees);
- *new side*: the new kernel's clock starting -> the marker (the marker's
  uptime);
- what is left is the serial latency of the marker (below).

The new kernel's clock is placed on the host's clock with 25 agent pings
right after the new boot answers (bench/clock.py: each ping bounds where the
guest's uptime zero lies; the intersection gives it within the error shown
under *Residual error*).
"""

RESIDUAL = """\
- **Agent latency** (request sent -> a command running in the guest, measured
  each run with `cat /proc/uptime` placed on the host clock) is inside every
  downtime, the same for every method. It is mostly process creation under TCG.
- **Marker serial latency** (marker printed in the guest -> read on the host)
  is inside every downtime too; it includes the marker script's own work after
  it read the uptime and the 10 ms resolution of `/proc/uptime`.
- **Clock placement error**: half the width of the interval the new kernel's
  clock zero is known to lie in; it moves time between *handover* and *new
  side*, never the total.
- **Handover** includes kexec's purgatory (it checks the SHA-256 of the loaded
  segments, slow under TCG), kernel decompression and the early boot before
  timekeeping starts; for a reboot, SeaBIOS and QEMU loading `-kernel` again.
  It is downtime; it is only invisible to the guest's clocks.
"""

NOTES = """\
- **What `kexec -e` does.** kexec-tools' `kexec -e` calls `sync()` and brings
  the network interfaces down before `reboot(LINUX_REBOOT_CMD_KEXEC)` unless
  told not to (`-y`/`--no-sync`, `-x`/`--no-ifdown`). The floor measured here is
  the command as users type it, with that sync; the extra `kexec -e --no-sync`
  row is the true "no flush" floor and shows what skipping the flush costs in
  data. Neither quiesces devices or freezes or unmounts filesystems, so ext4
  replays its journal at the next mount.
- **Firmware in a VM is unrealistically fast.** SeaBIOS under QEMU does no
  memory training, finds no option ROMs and no RAID controller; with `-kernel`
  QEMU hands the same kernel over again through fw_cfg, so the firmware reboot
  comes back on kernel A whatever was installed (fine for timing, and said in
  the tables). Real servers spend minutes in firmware: see the model below.
- **TCG is slow and the host is shared.** Everything in the guest runs 5-10x
  slower than on hardware, and both host cores were shared with QEMU (and at
  times with other engineers' work): compare methods within this run (they
  alternate, so drifts hit all of them), not with other machines.
- **Direction.** Kernel A and B differ only in their Debian build; runs go
  A -> B and B -> A alternately, and a firmware reboot always returns to A.
"""


def render(res: Mapping[str, Any]) -> str:
    meta = res.get("meta", {})
    vm = res.get("vm") or {}
    runs: list[Run] = list(vm.get("runs", []))
    ovmf = res.get("ovmf") or {}
    parts = [
        "# Benchmarks: downtime against raw kexec, systemctl kexec and a reboot",
        "",
        "Generated by `make bench` (`python -m bench.run`; `--quick` for a short try). "
        "Do not edit by hand: the script rewrites this file, and `python -m bench.run "
        "--report-only` regenerates it from the saved results (`bench/results.json`). "
        "No benchmark here is a pass/fail test.",
        "",
        "## Machine and settings",
        "",
        machine_section(res),
        "",
    ]
    if provenance(res):
        parts += [provenance(res), ""]
    if res.get("service_back"):
        parts += [service_back_provenance(res["service_back"]), ""]
    if meta.get("quick"):
        parts += ["**This is a quick run**: few rounds, read the numbers as a smoke test.", ""]
    parts += ["## What is measured", "", DEFINITIONS]
    if vm.get("aborted"):
        parts += [f"**The VM part stopped early**: {vm['aborted']}", ""]
    if vm.get("defect_restarts"):
        parts += [
            f"**QEMU's TCG defect** (a guest kernel's \"Oops: int3\", docs/vm-harness.md) "
            f"ended {vm['defect_restarts']} run(s), counted as failed in *runs ok*; the "
            "measurements went on in a fresh guest each time.",
            "",
        ]
    parts += [
        "## Downtime",
        "",
        "Seconds, median (min-max) over the rounds; *x floor* is the ratio of medians to "
        "`kexec -e`, *same round* the median of each round's own ratio. *Network back*: "
        "systemd-networkd's DHCPv4 lease on the new boot, uptime from the journal (the new "
        "kernel's clock, like *new side*; the guest's address comes from QEMU's user-mode "
        "DHCP); a dash where the run did not record it.",
        "",
        downtime_section(runs) if runs else "(no VM runs in this result)",
        "",
    ]
    if ovmf.get("runs"):
        parts += [
            "With OVMF (UEFI) firmware instead of SeaBIOS, in a second guest "
            f"({ovmf.get('note', '')}):",
            "",
            downtime_section(ovmf["runs"], "ovmf-kexec-e"),
            "",
        ]
    elif ovmf.get("skipped"):
        parts += [f"OVMF (UEFI): {ovmf['skipped']}", ""]
    if res.get("service_back"):
        parts += [
            "## Service back with its state",
            "",
            service_back_section(res["service_back"]),
            "",
        ]
    parts += [
        "## Safety beside speed",
        "",
        "A fresh 1 MiB file is written to /data through the page cache (no sync) just "
        "before each request, and read back on the new kernel (SHA-256). ext4 journal "
        "replays are counted from the new kernel's `EXT4-fs (vd...)` recovery lines.",
        "",
        safety_section(runs) if runs else DASH,
        "",
        "## Residual error",
        "",
        residual_section(runs) if runs else DASH,
        "",
        RESIDUAL,
        "## liveupd's path, from its journal",
        "",
        "From each transition's `journal.json` and `exec-stamp` (both on the old kernel's "
        "clock, placed on the host clock): when Execute arrived, how long until the exec "
        "stamp (direct mode: just before the state directory's filesystem freezes; systemd "
        "mode: just before kexec.target is started), of which how much inside hooks.",
        "",
        liveupd_section(runs) if runs else DASH,
        "",
        "Execute by part (median; *planning* is the devices step's prepare: it enumerates "
        "through udev the subsystems the selectors can match, to plan the unbind):",
        "",
        phases_section(runs) if runs else "",
        "",
        "On the new kernel, liveupd reports recovery once `liveupd --verify` has run "
        "(uptimes of the new kernel; the process start to *verification began* is mostly "
        "Python importing liveupd under TCG; *network back* is systemd-networkd's DHCPv4 "
        "lease, which the shipped network verify hook waits for as a default route):",
        "",
        verify_section(runs) if runs else "",
        "",
        "## A physical server",
        "",
        model_section(runs) if runs else DASH,
        "",
        "## liveupd's own cost",
        "",
        "Time from Execute to the jump minus the time inside hooks, with 0, 10 and 100 "
        "no-op hooks (`/bin/true`, phase quiesce), each hook with its own NN prefix "
        "(sequential) or all sharing one (concurrent).",
        "",
        "### In the VM",
        "",
        hook_cost_section(vm.get("hook_runs", [])) if vm.get("hook_runs") else DASH,
        "",
        "### On the host (dry-run engine)",
        "",
    ]
    host = res.get("host") or {}
    orch = host.get("orchestration")
    parts += [
        host_orchestration_section(orch) if orch else DASH,
        "",
        "### Where the time goes",
        "",
        profile_section(orch.get("profile") if orch else None),
        "",
        "## The daemon",
        "",
        daemon_section(host.get("daemon"), vm.get("daemon")) + baseline_daemon_rows(res),
        "",
        "## `liveupd --verify` start-up (host)",
        "",
        verify_startup_section(res),
        "",
        "## Targets of issue 19 on the host",
        "",
        table(("target", "measured", "verdict"), host_targets(res)),
        "",
        "## Targets of issue 19 in the VM",
        "",
        (
            "From the downtime runs above"
            + (" (the earlier run's: see *Two runs on this page*)." if provenance(res) else ".")
        ),
        "",
        table(("target", "measured", "verdict"), vm_targets(res)),
        "",
        "## Confinement: what a hostile file or caller costs the daemon",
        "",
        confinement_section(host.get("confinement")),
        "",
        "## Targets of issue 7",
        "",
        table(("target", "measured", "verdict"), targets(res)),
        "",
        "## Notes",
        "",
        NOTES,
    ]
    parts += ["## Findings and proposals", "", findings(res), ""]
    parts += ["## All runs", "", all_runs_section(runs + list(ovmf.get("runs", []))), ""]
    return "\n".join(parts).rstrip() + "\n"


def all_runs_section(runs: Sequence[Run]) -> str:
    rows = []
    for r in runs:
        rows.append(
            (
                str(r.get("round", "")),
                label(str(r["method"])),
                f"{r.get('from_release', '?')} -> {r.get('new_release', r.get('to_release', '?'))}",
                fmt_num(r.get("total_s")),
                fmt_num(r.get("old_side_s")),
                fmt_num(r.get("handover_s")),
                fmt_num(r.get("new_side_s")),
                fmt_num(r.get("network_back_s")),
                fmt_num(r.get("recovered_s")),
                str(r.get("payload", DASH)),
                ", ".join(r.get("ext4_recovery", [])) or "none",
                fmt_num(r.get("host_others_cpu")),
                str(r.get("error") or r.get("boot_state") or ""),
            )
        )
    return table(
        (
            "round",
            "method",
            "kernels",
            "downtime s",
            "old s",
            "handover s",
            "new s",
            "network back s",
            "recovered s",
            "file",
            "ext4 replay",
            "other host load (cores)",
            "boot / error",
        ),
        rows,
    )
