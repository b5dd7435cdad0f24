"""docs/benchmarks.md from the benchmark's results (a JSON document, see bench/run.py).

Everything in the file is generated: the prose around the tables is fixed
text here, the numbers come from the results, and the verdicts on the
issue's targets are computed from them.  ``python -m bench.run --report-only``
regenerates the file from the saved results without measuring anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bench.analysis import by_method, count, phase_breakdown, summary
from bench.stats import DASH, Summary, fmt_num, fmt_ratio, fmt_summary, linear_fit, ratio

Run = Mapping[str, Any]

LABELS = {
    "liveupd-direct": "liveupd `direct`",
    "liveupd-systemd": "liveupd `systemd`",
    "kexec-e": "`kexec -e` (floor)",
    "systemctl-kexec": "`systemctl kexec`",
    "reboot": "`systemctl reboot` (SeaBIOS)",
    "kexec-e-nosync": "`kexec -e --no-sync`",
    "ovmf-reboot": "`systemctl reboot` (OVMF UEFI)",
    "ovmf-kexec-e": "`kexec -e` (booted by OVMF)",
}
FLOOR = "kexec-e"

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


def label(key: str) -> str:
    return LABELS.get(key, key)


def _ok_runs(runs: Iterable[Run]) -> list[Run]:
    return [r for r in runs if not r.get("error")]


def _s(runs: Iterable[Run], field: str, digits: int = 2) -> str:
    return fmt_summary(summary(runs, field), digits)


def _median(runs: Iterable[Run], field: str) -> float | None:
    s = summary(runs, field)
    return s.median if s else None


def paired_ratios(runs: Sequence[Run], method: str, floor: str = FLOOR) -> list[float]:
    """total_s of ``method`` over the floor's in the same round, for each round having both."""
    floors = {r["round"]: r["total_s"] for r in _ok_runs(runs) if r["method"] == floor}
    return [
        r["total_s"] / floors[r["round"]]
        for r in _ok_runs(runs)
        if r["method"] == method and r["round"] in floors and floors[r["round"]] > 0
    ]


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _frac(pair: tuple[int, int]) -> str:
    n, total = pair
    return f"{n}/{total}" if total else DASH


# ------------------------------------------------------------------ sections --


def machine_section(res: Mapping[str, Any]) -> str:
    meta = res.get("meta", {})
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
        ("QEMU", meta.get("qemu_version", DASH)),
        (
            "accelerator and machine",
            "TCG, `-accel tcg,tb-size=128` (a 128 MiB translation cache: the default 1 GiB "
            "makes boots after a kexec slow and noisy), `-machine q35 -cpu max -smp 2 "
            "-m 1024`, SeaBIOS, virtio disks with `cache=unsafe` overlays",
        ),
        ("guest", f"Debian 12, {guest.get('systemd', DASH)}, {guest.get('kexec_tools', DASH)}"),
        ("guest kernels (A, B)", krows),
        ("guest command line", f"`{guest.get('cmdline', DASH)}`"),
        ("guest boot (first, cold)", guest.get("boot", DASH)),
        (
            "rounds",
            f"{meta.get('rounds', DASH)} per method, in turn: "
            + " ".join(meta.get("methods", []))
            + (" (quick run)" if meta.get("quick") else ""),
        ),
        ("bench wall time", f"{fmt_num(meta.get('duration_s'), 0)} s"),
    ]
    return table(("", ""), [(k, str(v)) for k, v in rows])


def downtime_section(runs: Sequence[Run], floor_key: str = FLOOR) -> str:
    groups = by_method(runs)
    floor = _median(groups.get(floor_key, []), "total_s")
    rows = []
    for key, rs in groups.items():
        ok = _ok_runs(rs)
        paired = Summary.of(paired_ratios(runs, key, floor_key)) if key != floor_key else None
        rows.append(
            (
                label(key),
                f"{len(ok)}/{len(rs)}",
                _s(ok, "total_s"),
                fmt_ratio(ratio(_median(ok, "total_s"), floor)),
                fmt_summary(paired, 2, "x") if paired else DASH,
                _s(ok, "old_side_s"),
                _s(ok, "handover_s"),
                _s(ok, "new_side_s"),
                _s(ok, "recovered_s"),
                _s(ok, "prep_s"),
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
            "liveupd recovered s",
            "prep s (not downtime)",
        ),
        rows,
    )


def safety_section(runs: Sequence[Run]) -> str:
    rows = []
    for key, rs in by_method(runs).items():
        ok = _ok_runs(rs)
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
        ok = _ok_runs(rs)
        cal = summary(ok, "calibration_error_s")
        rows.append(
            (
                label(key),
                fmt_summary(summary(ok, "agent_latency_s"), 3),
                fmt_summary(summary(ok, "serial_latency_s"), 3),
                fmt_num(cal.max if cal else None, 3),
                _s(ok, "handover_s"),
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
        ok = [r for r in _ok_runs(rs) if r.get("own_cost")]
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
                _s(ok, "liveupd_downtime_s"),
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
    for r in _ok_runs(runs):
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
        ok = [r for r in _ok_runs(rs) if r.get("verify")]
        if not ok:
            continue

        def v(field: str, rs: list[Run] = ok) -> str:
            return fmt_summary(Summary.of(r["verify"].get(field) for r in rs), 2)

        rows.append(
            (
                label(key),
                v("unit_started"),
                v("verify_started"),
                v("verify_finished"),
                v("marker"),
            )
        )
    return table(
        (
            "method (uptime of the new kernel, s)",
            "liveupd-verify.service started",
            "verification began (imports done)",
            "verified (restore hooks done)",
            "boot marker",
        ),
        rows,
    )


def model_section(runs: Sequence[Run]) -> str:
    groups = by_method(runs)
    floor_new = _median(groups.get(FLOOR, []), "total_s")
    reboot = _ok_runs(groups.get("reboot", []))
    reboot_total = _median(reboot, "total_s")
    reboot_handover = _median(reboot, "handover_s") or 0.0
    rows = []
    header = ["method", "measured in the VM s"]
    header += [f"server with {fw:.0f} s firmware ({name}) s" for name, fw, _, _ in FIRMWARE_SOURCES]
    for key, rs in groups.items():
        med = _median(_ok_runs(rs), "total_s")
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


def vm_hook_fit(ok: Sequence[Run]) -> tuple[float, float] | None:
    points = [
        (float(r["hooks"]), float(r["own_cost"]["own"]))
        for r in ok
        if not r.get("shared_prefix") and r["own_cost"].get("own") is not None
    ]
    return linear_fit(points)


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
            f"hook (least squares, sequential cases, state directory on {orch.get('state_fs')}; "
            f"{orch.get('repeat')} repeats each)."
        )
    return text


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


# --------------------------------------------------------------------- targets --


def targets(res: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(target, where it stands, verdict) for each target of the issue."""
    vm = res.get("vm") or {}
    runs: list[Run] = list(vm.get("runs", []))
    groups = by_method(runs)
    out: list[tuple[str, str, str]] = []
    direct = _ok_runs(groups.get("liveupd-direct", []))
    floor = _median(groups.get(FLOOR, []), "total_s")
    d_med = _median(direct, "total_s")
    sk_med = _median(groups.get("systemctl-kexec", []), "total_s")
    r = ratio(d_med, floor)
    if r is None:
        out.append(("liveupd direct <= 1.15x raw kexec -e", "not measured", "not measured"))
    else:
        intact = count(direct, "payload_intact")
        completed = sum(1 for x in direct if x.get("transition_state") == "completed")
        nothing_lost = intact[0] == intact[1] == len(direct) and completed == len(direct)
        out.append(
            (
                "liveupd `direct` downtime within 1.15x of raw `kexec -e`, flush and quiesce done, "
                "nothing lost",
                f"{fmt_ratio(r)} ({d_med:.2f} s vs {floor:.2f} s, medians); file intact "
                f"{_frac(intact)}, transitions completed {completed}/{len(direct)}",
                "met" if r <= 1.15 and nothing_lost else "missed",
            )
        )
    if d_med is not None and sk_med is not None:
        out.append(
            (
                "liveupd `direct` below `systemctl kexec`",
                f"{d_med:.2f} s vs {sk_med:.2f} s (medians)",
                "met" if d_med < sk_med else "missed",
            )
        )
    orch = (res.get("host") or {}).get("orchestration") or {}
    fit = orch.get("fit")
    if fit:
        ok = fit["base_ms"] < 50 and fit["per_hook_ms"] < 5
        out.append(
            (
                "orchestration < 50 ms per transition + < 5 ms per no-op hook (host, dry run)",
                f"{fit['base_ms']:.1f} ms + {fit['per_hook_ms']:.2f} ms/hook",
                "met" if ok else "missed",
            )
        )
    hook_ok = [x for x in vm.get("hook_runs", []) if not x.get("error") and x.get("own_cost")]
    vfit = vm_hook_fit(hook_ok)
    if vfit:
        out.append(
            (
                "the same in the VM (TCG, real devices and disks)",
                f"{vfit[0] * 1000:.0f} ms + {vfit[1] * 1000:.1f} ms/hook",
                "met" if vfit[0] < 0.05 and vfit[1] < 0.005 else "missed (under TCG)",
            )
        )
    daemon = (res.get("host") or {}).get("daemon") or {}
    rss = daemon.get("idle_rss_mib")
    if rss:
        mib = float(rss["median"])
        mb = mib * 1.048576
        out.append(
            (
                "daemon idle RSS < 40 MB",
                f"{mib:.1f} MiB = {mb:.1f} MB",
                "met" if mb < 40 else ("met only if MB means MiB" if mib < 40 else "missed"),
            )
        )
    owned = daemon.get("name_owned_s")
    if owned:
        ms = float(owned["median"]) * 1000
        worst = float(owned["max"]) * 1000
        out.append(
            (
                "bus name owned < 500 ms after start",
                f"{ms:.0f} ms median, {worst:.0f} ms worst",
                "met" if worst < 500 else ("met at the median" if ms < 500 else "missed"),
            )
        )
    best = max(
        (float(x["rate"]) for x in daemon.get("loads", []) if int(x.get("clients", 0)) == 16),
        default=None,
    )
    if best is not None:
        out.append(
            (
                "> 4,000 property reads/s with 16 clients",
                f"{best:,.0f}/s",
                "met" if best > 4000 else "missed",
            )
        )
    return out


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
    if meta.get("quick"):
        parts += ["**This is a quick run**: few rounds, read the numbers as a smoke test.", ""]
    parts += ["## What is measured", "", DEFINITIONS]
    if vm.get("aborted"):
        parts += [f"**The VM part stopped early**: {vm['aborted']}", ""]
    parts += [
        "## Downtime",
        "",
        "Seconds, median (min-max) over the rounds; *x floor* is the ratio of medians to "
        "`kexec -e`, *same round* the median of each round's own ratio.",
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
        "every device through udev to plan the unbind):",
        "",
        phases_section(runs) if runs else "",
        "",
        "On the new kernel, liveupd reports recovery once `liveupd --verify` has run "
        "(uptimes of the new kernel; the process start to *verification began* is mostly "
        "Python importing liveupd under TCG):",
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
        daemon_section(host.get("daemon"), vm.get("daemon")),
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
            "recovered s",
            "file",
            "ext4 replay",
            "other host load (cores)",
            "boot / error",
        ),
        rows,
    )


# -------------------------------------------------------------------- findings --

PROFILE_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "durable journal writes (fsync, rename, directory fsync)",
        ("posix.fsync", "posix.replace", "liveupd/fsio.py"),
    ),
    ("starting hook processes (fork/exec)", ("fork_exec", "subprocess.py")),
    (
        "waiting on threads (asyncio's child watcher starts one per hook; to_thread)",
        ("_thread.lock",),
    ),
    ("encoding the whole journal as JSON, again at every write", ("json/encoder.py",)),
)


def profile_shares(prof: Mapping[str, Any]) -> list[tuple[str, float]]:
    total = float(prof["profiled_total_ms"]) or 1.0
    out = []
    for name, needles in PROFILE_GROUPS:
        ms = sum(
            float(r["self_ms"])
            for r in prof.get("top_self", [])
            if any(n in str(r["where"]) for n in needles)
        )
        out.append((name, ms / total))
    return out


def _case(orch: Mapping[str, Any], hooks: int, tmpfs: bool) -> float | None:
    for c in orch.get("cases", []):
        if (
            c["hooks"] == hooks
            and bool(c["tmpfs"]) == tmpfs
            and not c["shared_prefix"]
            and c["program"] == ["/bin/true"]
        ):
            return float(c["own_cost_ms"]["median"])
    return None


def findings(res: Mapping[str, Any]) -> str:
    """What the numbers say, and what to change in liveupd (proposals, not done here)."""
    out: list[str] = []
    vm = res.get("vm") or {}
    groups = by_method(vm.get("runs", []))
    med = {k: _median(_ok_runs(v), "total_s") for k, v in groups.items()}
    old = {k: _median(_ok_runs(v), "old_side_s") for k, v in groups.items()}
    new = {k: _median(_ok_runs(v), "new_side_s") for k, v in groups.items()}
    d, f = med.get("liveupd-direct"), med.get(FLOOR)
    if d is not None and f is not None:
        out.append(
            f"- **Downtime.** liveupd `direct` is {d:.2f} s against {f:.2f} s for `kexec -e` "
            f"({d / f:.2f}x). Old side {fmt_num(old.get('liveupd-direct'))} s vs "
            f"{fmt_num(old.get(FLOOR))} s: the difference is liveupd's quiesce, unbind, "
            "checkpoint, sync and freeze (next table); new side "
            f"{fmt_num(new.get('liveupd-direct'))} s vs {fmt_num(new.get(FLOOR))} s, i.e. "
            "the new kernel's boot dominates every kexec method and is the same work for all."
        )
    sk, sd = med.get("systemctl-kexec"), med.get("liveupd-systemd")
    if sk is not None and sd is not None:
        out.append(
            f"- liveupd `systemd` ({sd:.2f} s) goes through the same systemd shutdown as "
            f"`systemctl kexec` ({sk:.2f} s), plus its quiesce, unbind and checkpoint before it."
        )
    orch = (res.get("host") or {}).get("orchestration") or {}
    prof = orch.get("profile")
    if prof:
        shares = ", ".join(f"{name}: {share:.0%}" for name, share in profile_shares(prof))
        writes = next(
            (
                int(r["calls"])
                for r in prof.get("top_cumulative_liveupd", [])
                if str(r["where"]).endswith("journal.py:save")
            ),
            None,
        )
        per_hook = f" ({writes / prof['hooks']:.1f} journal rewrites per hook)" if writes else ""
        out.append(
            f"- **Orchestration profile** (one Execute with {prof['hooks']} no-op hooks): "
            f"{shares}{per_hook}."
        )
    disk0, tmp0 = _case(orch, 0, False), _case(orch, 0, True)
    disk100, tmp100 = _case(orch, 100, False), _case(orch, 100, True)
    if None not in (disk0, tmp0, disk100, tmp100):
        out.append(
            f"- With the state directory on tmpfs (no real fsync) the own cost falls from "
            f"{disk0:.0f} to {tmp0:.0f} ms with no hooks and from {disk100:.0f} to "
            f"{tmp100:.0f} ms with 100: durable journal writes are the largest single cost, "
            "and they grow with the number of hooks."
        )
    out.append(PROPOSALS)
    return "\n".join(out)


PROPOSALS = """\
- **Proposals for liveupd/** (not made here; for the maintainers):
  1. *Journal once per group, not three times per hook* (`transition/engine.py:_run_group`,
     `_run_step`; `transition/journal.py:step_started/step_update/step_status`). Today each
     hook costs a durable rewrite of the whole journal before it starts, another rewrite to
     record its process group (`durable=False`, yet still a temp file and a rename, and on
     ext4 a rename over an existing file also starts writeback of the new one,
     `auto_da_alloc`) and a durable rewrite when it ends. A hook without `undo` has no undo
     record to make durable first; the records of one group can go out in one save; the
     process group ids (needed to kill leftovers after a daemon crash) can be appended to a
     small side file instead of rewriting the journal. Expected: the per-hook cost falls
     towards the cost of spawning the process.
  2. *Append, do not rewrite* (`fsio.atomic_write_json` of the whole journal): the journal
     grows with every step and is encoded and written whole each time, so 100 hooks cost
     O(n^2) bytes; an append-only record (one JSON line per change, fsync'd) replayed on
     load keeps each write small.
  3. *No thread per hook*: Python 3.11's asyncio uses `ThreadedChildWatcher`, one thread per
     child process; `asyncio.set_child_watcher(asyncio.PidfdChildWatcher())` (Linux >= 5.3)
     waits on a pidfd in the event loop instead.
  4. *Start-up and memory*: pydantic (with pydantic-core and the schemas built at import
     by `config/model.py` and `hooks/manifest.py`) is the largest single block of the
     daemon's import time and several MiB of its RSS; validating the TOML with plain
     dataclasses, or importing the transition machinery (kernel, devices, storage, hooks
     runner) only at the first Stage, would bring the idle daemon closer to the bare
     asyncio + dbus-fast floor shown above.
  5. *Recovery waits for DHCP*: the verify hook `50-network-verify` waits for a
     default route, so with the shipped hooks liveupd reports recovery only once DHCP has
     finished; that is correct, but it is why *recovered* trails the boot marker.
"""
