"""The verdicts on the issue's targets and what the numbers say, computed from the results."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.analysis import by_method, count, orchestration_own_ms, phase_breakdown, summary
from bench.startup import verify_import_budget
from bench.stats import Summary, fmt_num, fmt_ratio, fmt_summary, ratio
from bench.tables import (
    FLOOR,
    Run,
    frac,
    median_of,
    ok_runs,
    vm_hook_fit,
)

# --------------------------------------------------------------------- targets --


def targets(res: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(target, where it stands, verdict) for each target of the issue."""
    vm = res.get("vm") or {}
    runs: list[Run] = list(vm.get("runs", []))
    groups = by_method(runs)
    out: list[tuple[str, str, str]] = []
    direct = ok_runs(groups.get("liveupd-direct", []))
    floor = median_of(groups.get(FLOOR, []), "total_s")
    d_med = median_of(direct, "total_s")
    sk_med = median_of(groups.get("systemctl-kexec", []), "total_s")
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
                f"{frac(intact)}, transitions completed {completed}/{len(direct)}",
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


def findings(res: Mapping[str, Any]) -> str:
    """What the numbers say, and what to change in liveupd (what was done, what is proposed)."""
    out: list[str] = []
    vm = res.get("vm") or {}
    groups = by_method(vm.get("runs", []))
    med = {k: median_of(ok_runs(v), "total_s") for k, v in groups.items()}
    old = {k: median_of(ok_runs(v), "old_side_s") for k, v in groups.items()}
    new = {k: median_of(ok_runs(v), "new_side_s") for k, v in groups.items()}
    d, f = med.get("liveupd-direct"), med.get(FLOOR)
    if d is not None and f is not None:
        out.append(
            f"- **Downtime.** liveupd `direct` is {d:.2f} s against {f:.2f} s for `kexec -e` "
            f"({d / f:.2f}x). Old side {fmt_num(old.get('liveupd-direct'))} s vs "
            f"{fmt_num(old.get(FLOOR))} s: the difference is liveupd's quiesce, unbind, "
            "checkpoint, sync and freeze (see *liveupd's path*); new side "
            f"{fmt_num(new.get('liveupd-direct'))} s vs {fmt_num(new.get(FLOOR))} s, i.e. "
            "the new kernel's boot dominates every kexec method and is the same work for all."
        )
    sk = med.get("systemctl-kexec")
    if d is not None and sk is not None:
        out.append(
            f"- liveupd `direct` against `systemctl kexec`: {d:.2f} s vs {sk:.2f} s. Old side "
            f"{fmt_num(old.get('liveupd-direct'))} s vs {fmt_num(old.get('systemctl-kexec'))} s "
            "(liveupd quiesces, unbinds, checkpoints and freezes where systemd stops every "
            f"service and unmounts); new side {fmt_num(new.get('liveupd-direct'))} s vs "
            f"{fmt_num(new.get('systemctl-kexec'))} s, where liveupd adds `liveupd --verify` "
            "to the new boot, competing for the two emulated CPUs (*On the new kernel* "
            "above); compare the difference with the spread of the new side across runs."
        )
    sd = med.get("liveupd-systemd")
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
    cases = orch.get("cases", [])
    disk0, tmp0 = orchestration_own_ms(cases, 0), orchestration_own_ms(cases, 0, tmpfs=True)
    disk100 = orchestration_own_ms(cases, 100)
    tmp100 = orchestration_own_ms(cases, 100, tmpfs=True)
    if disk0 is not None and tmp0 is not None and disk100 is not None and tmp100 is not None:
        share = (disk100 - tmp100) / disk100 if disk100 > 0 else 0.0
        out.append(
            f"- With the state directory on tmpfs (no real fsync) the own cost falls from "
            f"{disk0:.0f} to {tmp0:.0f} ms with no hooks and from {disk100:.0f} to "
            f"{tmp100:.0f} ms with 100 hooks without an undo: the disk's share of the own "
            f"cost with 100 hooks is {share:.0%}."
        )
    parts: dict[str, list[float]] = {}
    for r in ok_runs(groups.get("liveupd-direct", [])):
        for part, seconds in phase_breakdown(r.get("timeline") or []).items():
            parts.setdefault(part, []).append(seconds)
    plan = Summary.of(parts.get("unbind: planning (prepare)", []))
    step = Summary.of(parts.get("unbind: the step", []))
    execute = summary(ok_runs(groups.get("liveupd-direct", [])), "exec_stamp_at_s")
    if plan and step and execute:
        enum = orch.get("enumeration") or {}
        host_enum = (
            f"; enumerating every device, as planning did before, takes "
            f"{Summary.from_json(enum['ms']).median:.0f} ms for this host's own "
            f"{enum['devices']} devices"
            if enum.get("ms")
            else ""
        )
        out.append(
            f"- **Where liveupd's old side goes** (direct mode, VM): of "
            f"{execute.median:.1f} s from the request to the exec stamp, planning the unbind "
            f"takes {plan.median:.1f} s and the devices step {step.median:.1f} s. Planning "
            "enumerates, once, the subsystems the selectors can match and their ancestors "
            "(`devices/select.py:subsystems_needed`, from `devices/steps.py:plan_for` in the "
            "step's `prepare`); the step names the processes holding nodes below each "
            "binding (its sysfs subtree), sets the link down, unbinds and waits for udev's "
            f"remove event{host_enum}."
        )
    waits = [
        r["verify"]["verify_started"] - r["verify"]["unit_started"]
        for r in ok_runs(runs_of(groups, "liveupd-direct", "liveupd-systemd"))
        if (r.get("verify") or {}).get("verify_started") is not None
        and (r.get("verify") or {}).get("unit_started") is not None
    ]
    wait = Summary.of(waits)
    if wait:
        out.append(
            f"- **Recovery is reported late because of start-up**: `liveupd --verify` begins "
            f"verifying {wait.median:.1f} s (median) after its unit starts, i.e. after Python "
            "has imported liveupd under TCG; on hardware the same imports take a few hundred "
            "ms (see the daemon's start-up below)."
        )
    network = network_finding(groups)
    if network:
        out.append(network)
    budget = verify_import_budget(res)
    if budget:
        out.append(budget)
    out.append(PROPOSALS)
    return "\n".join(out)


def network_finding(groups: Mapping[str, list[Run]]) -> str | None:
    """Network back (DHCPv4 lease) against liveupd's verification end and `systemctl kexec`.

    None when no run recorded when the network came back (results older than the field).
    """
    direct = ok_runs(groups.get("liveupd-direct", []))
    gaps = Summary.of(
        r["verify"]["verify_finished"] - r["network_back_s"]
        for r in direct
        if r.get("network_back_s") is not None
        and (r.get("verify") or {}).get("verify_finished") is not None
    )
    back = summary(direct, "network_back_s")
    sk_back = summary(ok_runs(groups.get("systemctl-kexec", [])), "network_back_s")
    said: list[str] = []
    if gaps:
        said.append(
            f"with liveupd `direct` verification ends {fmt_summary(gaps, 2)} s after "
            "systemd-networkd's DHCPv4 lease (median (min-max) over the runs; the shipped "
            "network verify hook waits for a default route, so a gap near zero would mean "
            "DHCP is what recovery waits for, a larger one that liveupd itself is)"
        )
    if back and sk_back:
        said.append(
            f"the lease comes at {fmt_summary(back, 2)} s of uptime under liveupd `direct` "
            f"and {fmt_summary(sk_back, 2)} s after `systemctl kexec`, whose new boot has no "
            f"`liveupd --verify` competing for the two emulated CPUs: "
            f"{back.median - sk_back.median:+.2f} s (medians)"
        )
    elif back:
        said.append(f"the lease comes at {fmt_summary(back, 2)} s of uptime (liveupd `direct`)")
    if not said:
        return None
    return "- **When the network is back** (new kernel's uptime): " + "; ".join(said) + "."


def runs_of(groups: Mapping[str, list[Run]], *keys: str) -> list[Run]:
    return [r for k in keys for r in groups.get(k, [])]


PROPOSALS = """\
- **Done after the first measurements** (in liveupd/, kept here so the numbers can be
  read against them): the unbind step enumerated every device udev knows to plan, then
  again for each device it unbound (the holders check). Planning now enumerates only the
  subsystems the selectors can match (`devices/select.py:subsystems_needed`; the same
  plan, tested), and the holders check reads the binding's own sysfs subtree; the first
  full run (commit 090cd95, before this) measured planning at 1.92 s (median) and
  liveupd `direct` at 29.81 s, 1.21x the floor. Each hook
  cost two durable rewrites of the whole journal; the journal is now one JSON line per
  change, appended with one write and folded on load (compacted once the transition
  ends), a group's steps are journaled with one write before any starts, and a step's
  end is written without fsync, carried to disk by the next durable write
  (`transition/groups.py`, `transition/journal.py`). Since 2026-12-02 a group's start is
  fsync'd only when one of its steps has an undo (nothing else needs it on disk before the
  step runs; see the case with an undo above), and the transition's own log costs one
  write per line (it made its directory and opened a text file for every line): 1.62 ms
  per no-op hook before, on this host. Also since 2026-12-02 (commits c172e23 to a544a45):
  no pydantic (the configuration, the journal and the manifests are dataclasses checked by
  `liveupd/schema.py`: pydantic and its schemas were ~200 ms of every start on this host);
  cffi's declarations come parsed (`liveupd/_libc.py`, out-of-line ABI mode: the first
  mallopt and the first safe open no longer import pycparser, ~20 ms each); and the
  remote-login listeners are asked about, stopped and started over systemd's D-Bus API
  on the connection already open for logind, where three `systemctl` processes took
  0.82 s of the old side's own cost under TCG (`sessions/units.py`). Since the run of
  e614bce (commits 861674e to d0acd21): the daemon imports the transition machinery
  (engine, steps, hooks runner, recovery, post-boot verification) after it owns its bus
  name, in its recovery or at the first call that needs it (`manager.py`: 217 -> ~185 ms
  of `-X importtime` before the name on this host); verification enumerates only the
  subsystems of the devices the checkpoint recorded, and net, instead of every device
  udev knows, every 0.25 s until they are back (`verify/postboot.py`; from the first
  check to the verify hooks took 2.7 s under TCG before); and the shipped network hook
  no longer starts a process per interface at each look while verify waits, and looks
  every 0.2 s instead of every second (`hooks.d/network`). Since the run of 658c751
  (commits 83acf15 to 44697cf): `liveupd-verify.service` has ten times the default CPU
  weight (`CPUWeight=1000`: its start-up competed with the rest of the boot, 6 s from the
  unit's start to the first check) and starts right after `local-fs.target` (it waited
  for `systemd-tmpfiles-setup.service`, 0.7-1.5 s later under TCG, through
  `PrivateTmp=`; its hooks get an empty tmpfs `/tmp` and `/var/tmp` instead); the network
  hook reads the routing tables and link flags with shell built-ins (it ran `ip` twice
  at every look and `tr` per interface; `network up` leaves a link that is up already);
  the quiesce step asks systemd about every remote-login listener in one
  `ListUnitsByNames` call (four round trips before); the flush step logs the mount points
  it skips in one line (twelve in this guest); and verification imports the fall-back to
  the old kernel only when a boot fell back.
- **Proposals for liveupd/** (open), biggest first:
  1. *Classes at import*: what the daemon and `liveupd --verify` still import is mostly
     liveupd's own modules, and much of their import time is defining classes: the
     verify path defines 88 dataclasses, 63 of its ~200 ms of imports on this host
     (measured by wrapping `dataclasses._process_class`); a frozen dataclass costs
     0.7-0.8 ms to create here (`dataclasses` writes and compiles its methods). In the TCG
     guest, idle (Debian 13's Python 3.13), importing the verify path takes 1.6-1.8 s of
     `-X importtime` (2.3-2.7 s of wall time, cold or warm page cache), the standard
     library it uses alone 0.7 s, and `cProfile` puts 0.79 s of 1.8 s in
     `dataclasses._process_class` (0.54 s compiling the generated methods; 34 classes
     without a docstring also pay an `inspect.signature` for one). The unit used 4.6-5.0 s
     of CPU time in total on the new boot. The host target (above) needs a verify program
     that defines a fraction of the classes it defines now (records, configuration sections
     and backends' interfaces it does not use), not more lazy imports.
  2. *Every journal read at every start*: recovery (the daemon's and `liveupd --verify`'s)
     loads and validates every transition's journal, finished ones included, to find the
     unfinished ones and the corrupt ones: 0.7 ms each on this host (20 journals: 13.5 ms),
     so up to 70 ms with `history-limit = 100`, and some ten times that under TCG.
     Finished journals could be validated when history is read, not at start.
  3. *No thread per hook*: on the host's Python 3.11 asyncio's `ThreadedChildWatcher`
     starts one thread per child process (Debian 13's Python 3.13 waits on a pidfd in the
     event loop instead), and the program verification before each hook runs in a thread
     of its own (`bounded.py`: a thread that hangs on a dead filesystem must not hold a
     pool's worker); idle threads could be kept for the next hook.
"""
