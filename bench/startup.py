"""The report's start-up parts (issue 19): ``liveupd --verify`` and the daemon on the host.

With ``--baseline REV`` the same host start-ups were measured for a clean checkout
of REV in the same run, so "before" and "after" come from the same machine and
load; the verdicts compare medians of the two.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.stats import DASH, Summary, fmt_summary
from bench.tables import table

VERIFY_TARGET = 1 / 3  # of the baseline's start-up (import time)
NAME_OWNED_TARGET_MS = 250.0
IDLE_RSS_TARGET_MIB = 32.0
PER_HOOK_TARGET_MS = 1.5  # liveupd's own cost per no-op hook, host, dry-run engine


def _summ(d: Mapping[str, Any] | None, key: str, digits: int = 0, scale: float = 1.0) -> str:
    v = (d or {}).get(key)
    return fmt_summary(Summary.from_json(v).scaled(scale), digits) if v else DASH


def _median(d: Mapping[str, Any] | None, key: str) -> float | None:
    v = (d or {}).get(key)
    return float(v["median"]) if v else None


def _min(d: Mapping[str, Any] | None, key: str) -> float | None:
    v = (d or {}).get(key)
    return float(v["min"]) if v else None


def _label(meta: Mapping[str, Any], base: Mapping[str, Any]) -> tuple[str, str]:
    return (
        f"baseline `{str(base.get('commit', '?'))[:12]}`",
        f"this run `{str(meta.get('commit', '?'))[:12]}`",
    )


def verify_startup_section(res: Mapping[str, Any]) -> str:
    host = res.get("host") or {}
    now = host.get("verify_startup")
    if not now:
        return "(not measured in this run)"
    base = (host.get("baseline") or {}).get("verify_startup")
    cols = [("this run", now)]
    if base:
        b_label, n_label = _label(res.get("meta", {}), host["baseline"])
        cols = [(b_label, base), (n_label, now)]

    def row(name: str, key: str, digits: int = 0) -> tuple[str, ...]:
        return (name, *(_summ(d, key, digits) for _, d in cols))

    rows = [
        row("process start -> first check (`verify.started`), wall ms", "to_first_check_ms"),
        row("CPU of the whole verification (user + system) ms", "cpu_ms"),
        row("`-X importtime`: sum of import self times ms", "import_ms"),
        ("modules imported", *(str(d.get("modules", DASH)) for _, d in cols)),
        (
            "of the heavy ones",
            *(", ".join(f"`{m}`" for m in d.get("heavy", [])) or "none" for _, d in cols),
        ),
        (
            "import self time by package (fastest importtime start) ms",
            *(
                ", ".join(f"{k} {float(v):.0f}" for k, v in (d.get("by_package_ms") or {}).items())
                for _, d in cols
            ),
        ),
        (
            "host load average (1 min) after",
            *(f"{float(d.get('loadavg', 0)):.2f}" for _, d in cols),
        ),
    ]
    for f in now.get("floors", []):
        rows.append(
            (
                f"floor: {f['what']}, `-X importtime` ms",
                *(DASH for _ in cols[1:]),
                _summ(f, "import_ms"),
            )
            if len(cols) > 1
            else (f"floor: {f['what']}, `-X importtime` ms", _summ(f, "import_ms"))
        )
    text = (
        "`liveupd --dry-run --verify` on a transition left pending by the old kernel "
        "(bench/verify_startup.py; medians (min-max) of "
        f"{now.get('starts', '?')} starts; importtime from separate starts, which it slows "
        "down). The host is shared: wall times move with its load, CPU and import times "
        "less so.\n\n" + table(("", *(name for name, _ in cols)), rows)
    )
    return text


def daemon_cpu_row(host: Mapping[str, Any] | None) -> tuple[str, str]:
    return ("CPU time at bus name owned", _summ(host, "name_owned_cpu_s", 0, 1000) + " ms")


def baseline_daemon_rows(res: Mapping[str, Any]) -> str:
    host = res.get("host") or {}
    base = (host.get("baseline") or {}).get("daemon")
    now = host.get("daemon")
    if not base or not now:
        return ""
    b_label, n_label = _label(res.get("meta", {}), host["baseline"])
    rows = [
        (
            "process start -> bus name owned ms",
            _summ(base, "name_owned_s", 0, 1000),
            _summ(now, "name_owned_s", 0, 1000),
        ),
        (
            "CPU time at bus name owned ms",
            _summ(base, "name_owned_cpu_s", 0, 1000),
            _summ(now, "name_owned_cpu_s", 0, 1000),
        ),
        ("idle RSS MiB", _summ(base, "idle_rss_mib", 1), _summ(now, "idle_rss_mib", 1)),
        ("idle PSS MiB", _summ(base, "idle_pss_mib", 1), _summ(now, "idle_pss_mib", 1)),
    ]
    return (
        "\n\nThe same start-ups, the baseline and this run measured one after the other "
        "(host, private bus, `--dry-run`):\n\n" + table(("", b_label, n_label), rows)
    )


def verify_import_budget(res: Mapping[str, Any]) -> str | None:
    """What the ``--verify`` start-up target leaves liveupd beside the standard library."""
    host = res.get("host") or {}
    now = host.get("verify_startup")
    floors = (now or {}).get("floors") or []
    floor = _median(floors[0], "import_ms") if floors else None
    n_imp = _median(now, "import_ms")
    b_imp = _median((host.get("baseline") or {}).get("verify_startup"), "import_ms")
    if floor is None or n_imp is None or b_imp is None:
        return None
    allowed = b_imp / 3 - floor
    return (
        f"- **What the `--verify` start-up target leaves**: one third of the baseline's "
        f"{b_imp:.0f} ms is {b_imp / 3:.0f} ms; the standard library it uses takes {floor:.0f} "
        f"ms of that (*floor* in the start-up table), which leaves liveupd {allowed:.0f} ms, "
        f"where it adds {n_imp - floor:.0f} ms now (medians of `-X importtime` sums)."
    )


def host_targets(res: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Issue 19's host targets: (target, measured, verdict)."""
    host = res.get("host") or {}
    now = host.get("verify_startup")
    base = (host.get("baseline") or {}).get("verify_startup")
    out: list[tuple[str, str, str]] = []
    n_imp, b_imp = _median(now, "import_ms"), _median(base, "import_ms")
    if n_imp is None or b_imp is None or b_imp <= 0:
        out.append(("`liveupd --verify` start-up <= 1/3 of the baseline's", DASH, "not measured"))
    else:
        share = n_imp / b_imp
        n_cpu, b_cpu = _median(now, "cpu_ms"), _median(base, "cpu_ms")
        cpu = f"; CPU {n_cpu:.0f} vs {b_cpu:.0f} ms" if n_cpu and b_cpu else ""
        out.append(
            (
                "`liveupd --verify` start-up (`-X importtime`) <= 1/3 of the baseline's",
                f"{n_imp:.0f} vs {b_imp:.0f} ms (medians): {share:.2f}{cpu}",
                "met" if share <= VERIFY_TARGET else "missed",
            )
        )
    daemon = host.get("daemon")
    owned = _median(daemon, "name_owned_s")
    if owned is None:
        out.append(("daemon: bus name owned <= 250 ms after start (host)", DASH, "not measured"))
    else:
        fastest = _min(daemon, "name_owned_s") or owned
        out.append(
            (
                "daemon: bus name owned <= 250 ms after start (host)",
                f"{owned * 1000:.0f} ms median, {fastest * 1000:.0f} ms fastest",
                "met" if owned * 1000 <= NAME_OWNED_TARGET_MS else "missed",
            )
        )
    rss = _median(daemon, "idle_rss_mib")
    out.append(
        (
            "daemon: idle RSS <= 32 MiB (host)",
            f"{rss:.1f} MiB" if rss is not None else DASH,
            DASH if rss is None else ("met" if rss <= IDLE_RSS_TARGET_MIB else "missed"),
        )
    )
    fit = (host.get("orchestration") or {}).get("fit")
    what = "own cost <= 1.5 ms per no-op hook (host, sequential, state on disk)"
    if not fit:
        out.append((what, DASH, "not measured"))
    else:
        per_hook = float(fit["per_hook_ms"])
        out.append(
            (
                what,
                f"{per_hook:.2f} ms per hook (least squares over 0, 10, 100 hooks)",
                "met" if per_hook <= PER_HOOK_TARGET_MS else "missed",
            )
        )
    return out


def provenance(res: Mapping[str, Any]) -> str:
    """Which figures come from this run and which from an earlier one."""
    meta = res.get("meta", {})
    vm_from = meta.get("vm_from")
    if not vm_from:
        return ""
    return (
        "**Two runs on this page.** The host figures (*liveupd's own cost on the host*, "
        "*The daemon*'s host column, *`liveupd --verify` start-up*, *Targets of issue 19 on "
        f"the host*) are from this run ({meta.get('date_utc', '?')}, commit "
        f"`{str(meta.get('commit', '?'))[:12]}`). Every VM figure (downtime, safety, "
        "residual error, liveupd's path, the new kernel, the physical-server model, the "
        "VM's own cost, the daemon's guest column, the targets of issue 7 that need the VM) "
        f"is from an earlier full run ({vm_from.get('date_utc', '?')}, commit "
        f"`{str(vm_from.get('commit', '?'))[:12]}` {vm_from.get('commit_subject', '')}, "
        f"bench wall time {float(vm_from.get('duration_s') or 0):.0f} s) and was not "
        "measured again: it does not reflect the changes since."
    )
