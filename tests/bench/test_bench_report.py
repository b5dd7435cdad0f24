"""The benchmark's pure parts: statistics, clock placement, journal analysis, the report.

Host only and fast: no VM, no daemon.  The full benchmark is `make bench`.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.analysis import by_method, count, hooks_seconds, own_cost, phase_breakdown
from bench.clock import PingSample, offset_interval
from bench.findings import targets
from bench.report import render
from bench.stats import Summary, fmt_summary, linear_fit
from bench.tables import paired_ratios


def test_summary_skips_missing_values() -> None:
    s = Summary.of([3.0, None, 1.0, 2.0])
    assert s == Summary(n=3, median=2.0, min=1.0, max=3.0, missing=1)
    assert Summary.of([None]) is None
    assert fmt_summary(s, 1) == "2.0 (1.0\u20133.0)"
    assert Summary.from_json(s.to_json()) == s


def test_linear_fit() -> None:
    assert linear_fit([(0, 40.0), (10, 80.0), (100, 440.0)]) == pytest.approx((40.0, 4.0))
    assert linear_fit([(10, 1.0), (10, 2.0)]) is None


def test_offset_is_the_intersection_of_the_pings() -> None:
    # True offset 100.0: a guest reading at host time t prints floor((t - 100) * 100) / 100.
    samples = []
    for i in range(20):
        sent = 105.0 + i * 0.0137
        read = sent + 0.002
        received = read + 0.002
        uptime = int((read - 100.0) * 100) / 100
        samples.append(PingSample(sent, received, uptime))
    off = offset_interval(samples)
    assert off.consistent
    assert off.value == pytest.approx(100.0, abs=off.error + 1e-9)
    assert off.error < 0.005
    assert off.host_time(1.5) == pytest.approx(101.5, abs=0.005)


def test_offset_falls_back_on_the_tightest_ping_when_the_clock_jumped() -> None:
    samples = [PingSample(10.0, 10.01, 5.0), PingSample(11.0, 11.002, 9.0)]
    off = offset_interval(samples)
    assert not off.consistent
    assert off.min_rtt == pytest.approx(0.002)
    assert off.value == pytest.approx((11.0 - 9.0 - 0.01 + 11.002 - 9.0) / 2)


JOURNAL: dict[str, Any] = {
    "execute_requested": 1000.0,
    "steps": [
        {"key": "kernel-check:kernel-check", "phase": "check", "started": 990.0, "usec": 900_000},
        {"key": "hook:20-a", "phase": "quiesce", "started": 1000.1, "usec": 100_000},
        {"key": "hook:30-b", "phase": "quiesce", "started": 1000.3, "usec": 200_000},
        {"key": "hook:30-c", "phase": "quiesce", "started": 1000.3, "usec": 300_000},
        {"key": "devices:devices", "phase": "unbind", "started": 1000.7, "usec": 400_000},
        {"key": "storage:storage", "phase": "flush", "started": 1001.5},
    ],
}


def test_hooks_sharing_a_prefix_cost_their_longest() -> None:
    assert hooks_seconds(JOURNAL["steps"], ("quiesce",)) == pytest.approx(0.4)
    assert hooks_seconds(JOURNAL["steps"], ("verify",)) == 0


def test_own_cost_is_execute_to_stamp_minus_hooks() -> None:
    cost = own_cost(JOURNAL, 1002.0)
    assert cost["execute_to_stamp"] == pytest.approx(2.0)
    assert cost["hooks"] == pytest.approx(0.4)
    assert cost["own"] == pytest.approx(1.6)
    assert cost["hook_count"] == 3
    assert "kernel-check:kernel-check" not in cost["steps"]  # staging is not Execute
    assert cost["steps"]["storage:storage (to the stamp)"] == pytest.approx(0.5)
    # Covered: 0.1-0.2, 0.3-0.6, 0.7-1.1, 1.5-2.0 = 1.3 s of 2.0 s.
    assert cost["between_steps"] == pytest.approx(0.7)
    assert own_cost(JOURNAL, None)["own"] is None


def _run(method: str, rnd: int, total: float, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "method": method,
        "round": rnd,
        "total_s": total,
        "old_side_s": 1.0,
        "handover_s": 0.5,
        "new_side_s": total - 1.6,
        "serial_latency_s": 0.1,
        "agent_latency_s": 0.05,
        "calibration_error_s": 0.004,
        "payload": "intact",
        "payload_intact": True,
        "ext4_recovery": [],
        "journal_replayed": False,
        "boot_state": "running",
        "from_release": "a",
        "new_release": "b",
    }
    base.update(kw)
    return base


def results() -> dict[str, Any]:
    cost = {"execute_to_stamp": 1.2, "hooks": 0.3, "own": 0.9, "steps": {"hook:20-x": 0.3}}
    runs = []
    for rnd in range(3):
        runs += [
            _run(
                "liveupd-direct",
                rnd,
                22.0 + rnd,
                own_cost=cost,
                transition_state="completed",
                recovered_s=25.0,
                execute_at_s=0.1,
                exec_stamp_at_s=1.3,
            ),
            _run("kexec-e", rnd, 20.0 + rnd, ext4_recovery=["vda"], journal_replayed=True),
            _run("systemctl-kexec", rnd, 30.0),
            _run("reboot", rnd, 31.0, handover_s=2.0),
            _run("kexec-e-nosync", rnd, 19.0, payload="missing", payload_intact=False),
        ]
    runs.append(_run("reboot", 3, 0.0, error="RunFailed: boom"))
    hook_runs = [
        {
            "case": "0 hooks",
            "hooks": 0,
            "shared_prefix": False,
            "total_s": 20.0,
            "own_cost": {"execute_to_stamp": 0.5, "hooks": 0.0, "own": 0.5},
        },
        {
            "case": "10 seq",
            "hooks": 10,
            "shared_prefix": False,
            "total_s": 21.0,
            "own_cost": {"execute_to_stamp": 1.5, "hooks": 0.5, "own": 1.0},
        },
        {
            "case": "10 conc",
            "hooks": 10,
            "shared_prefix": True,
            "total_s": 21.0,
            "own_cost": {"execute_to_stamp": 1.0, "hooks": 0.1, "own": 0.9},
        },
    ]
    summ = Summary.of([40.0, 42.0]).to_json()  # type: ignore[union-attr]
    return {
        "meta": {
            "date_utc": "2026-01-01 00:00",
            "commit": "abc",
            "rounds": 3,
            "methods": ["liveupd-direct", "kexec-e"],
        },
        "host": {
            "orchestration": {
                "repeat": 3,
                "state_fs": "ext4",
                "cases": [
                    {
                        "case": "0 hooks",
                        "hooks": 0,
                        "shared_prefix": False,
                        "program": ["/bin/true"],
                        "tmpfs": False,
                        "total_ms": summ,
                        "inside_hooks_ms": summ,
                        "own_cost_ms": summ,
                    }
                ],
                "fit": {"base_ms": 40.0, "per_hook_ms": 4.0},
                "profile": {
                    "hooks": 100,
                    "profiled_total_ms": 100.0,
                    "top_self": [
                        {"where": "fsync", "calls": 3, "self_ms": 50.0, "cumulative_ms": 50.0}
                    ],
                    "top_cumulative_liveupd": [],
                },
            },
            "daemon": {
                "name_owned_s": Summary.of([0.3, 0.4]).to_json(),  # type: ignore[union-attr]
                "idle_rss_mib": Summary.of([39.0]).to_json(),  # type: ignore[union-attr]
                "loads": [{"clients": 16, "procs": 1, "rate": 5000.0}],
            },
        },
        "vm": {
            "runs": runs,
            "hook_runs": hook_runs,
            "kernels": [{"release": "a", "version": "1"}, {"release": "b", "version": "2"}],
        },
    }


def test_grouping_and_counting() -> None:
    runs = results()["vm"]["runs"]
    groups = by_method(runs)
    assert list(groups) == [
        "liveupd-direct",
        "kexec-e",
        "systemctl-kexec",
        "reboot",
        "kexec-e-nosync",
    ]
    assert count(groups["kexec-e-nosync"], "payload_intact") == (0, 3)
    assert paired_ratios(runs, "liveupd-direct") == pytest.approx([1.1, 23 / 21, 24 / 22])


def test_targets_are_judged_from_the_numbers() -> None:
    rows = targets(results())
    verdict = {target: v for target, _measured, v in rows}
    assert verdict["liveupd `direct` below `systemctl kexec`"] == "met"
    assert rows[0][1].startswith("1.10x") and rows[0][2] == "met"
    rss = next(r for r in rows if "RSS" in r[0])
    assert rss[2] == "met only if MB means MiB"  # 39 MiB is 40.9 MB
    orchestration = next(r for r in rows if r[0].startswith("orchestration"))
    assert orchestration[1:] == ("40.0 ms + 4.00 ms/hook", "met")


def test_report_renders_every_section() -> None:
    text = render(results())
    for heading in (
        "## Downtime",
        "## Safety beside speed",
        "## Residual error",
        "## A physical server",
        "## liveupd's own cost",
        "## The daemon",
        "## Targets of issue 7",
        "## All runs",
    ):
        assert heading in text
    assert "| `kexec -e --no-sync` | 3/3 lost it (missing)" in text
    assert "1.10x" in text
    assert render({}).startswith("# Benchmarks")  # an empty result still renders


def test_phase_breakdown_from_a_timeline() -> None:
    timeline = [
        [0.05, "log transition.execute"],
        [0.4, "log phase.started quiesce"],
        [1.4, "log phase.started unbind"],
        [3.6, "start devices:devices"],
        [6.1, "log phase.started checkpoint"],
        [6.2, "log phase.started flush"],
        [6.5, "exec stamp"],
        [30.0, "log phase.started verify"],
    ]
    got = phase_breakdown(timeline)
    assert got == pytest.approx(
        {
            "before the first phase": 0.4,
            "quiesce": 1.0,
            "unbind: planning (prepare)": 2.2,
            "unbind: the step": 2.5,
            "checkpoint": 0.1,
            "flush": 0.3,
        }
    )


def test_confinement_section_and_verdicts() -> None:
    from bench.confinement_report import section, verdicts

    def s(v: float) -> dict[str, float]:
        return {"n": 1, "median": v, "min": v, "max": v, "missing": 0}

    res = {
        "meta": {"date_utc": "2026-11-30 08:00", "commit": "abc", "python": "3.11"},
        "kernel": {"origin": "linux-image-x", "size_mib": 13.5, "initrd_mib": 64},
        "start_rss_mib": 40.0,
        "idle_rss_mib": 42.0,
        "refuse_sparse": {"file_gib": 2, "message": "too big", "peak_above_idle_mib": s(0.1)},
        "stage_real": {"peak_above_idle_mib": s(70.0), "seconds": s(0.4)},
        "flood": {
            "size": 10_000_000,
            "idle_rss_mib": 42.0,
            "rounds": [
                {
                    "calls": 48,
                    "seconds": 5.0,
                    "log_bytes": 600,
                    "rss_after_mib": 43.0,
                    "peak_mib": 90.0,
                    "replies": {"org.liveupd.LiveUpdate1.Error.InvalidArgument": 48},
                    "longest_reply_chars": 85,
                }
            ],
            "log_bytes_total": 800,
            "suppressed_lines": ["level=warning event=refusals.suppressed count=45"],
        },
    }
    assert [v[2] for v in verdicts(res)] == ["met", "MISSED", "met", "met"]
    text = section(res)
    assert "InvalidArgument x48 (longest 85 characters)" in text
    assert "`refusals.suppressed count=45`" in text
    assert "not measured in this result" in section(None)
    assert "## Confinement" in render({"host": {"confinement": res}})


def orchestration_case(hooks: int, own_ms: float, *, undo: bool = False) -> dict[str, Any]:
    summ = Summary.of([own_ms]).to_json()  # type: ignore[union-attr]
    return {
        "case": f"{hooks} hooks",
        "hooks": hooks,
        "shared_prefix": False,
        "program": ["/bin/true"],
        "tmpfs": False,
        "undo": undo,
        "total_ms": summ,
        "inside_hooks_ms": summ,
        "own_cost_ms": summ,
    }


@pytest.mark.parametrize(("per_hook", "verdict"), [(1.62, "missed"), (1.5, "met"), (0.8, "met")])
def test_the_per_hook_target_is_judged_from_the_fit(per_hook: float, verdict: str) -> None:
    from bench.startup import host_targets

    res = {"host": {"orchestration": {"fit": {"base_ms": 30.0, "per_hook_ms": per_hook}}}}
    row = next(r for r in host_targets(res) if "per no-op hook" in r[0])
    assert row[1].startswith(f"{per_hook:.2f} ms per hook") and row[2] == verdict
    assert next(r for r in host_targets({}) if "per no-op hook" in r[0])[2] == "not measured"


def test_what_an_undo_adds_per_hook_comes_from_the_two_100_hook_cases() -> None:
    from bench.report import host_orchestration_section, undo_cost_ms

    cases = [orchestration_case(100, 90.0), orchestration_case(100, 200.0, undo=True)]
    assert undo_cost_ms(cases) == pytest.approx(1.1)
    assert undo_cost_ms(cases[:1]) is None  # no case with an undo: nothing said
    text = host_orchestration_section({"cases": cases, "fit": None})
    assert "A hook with an undo costs +1.10 ms more" in text


def test_kept_vm_figures_name_the_run_that_measured_them() -> None:
    from bench.report import machine_section
    from bench.run import vm_source

    measured = {"date_utc": "2026-11-25 18:35", "commit": "f" * 40, "guest_os": "Debian 12"}
    first_keep = {"date_utc": "2026-11-30 11:46", "commit": "a" * 40, "vm_from": measured}
    assert vm_source(first_keep) is measured  # a second host-only run keeps the same source
    assert vm_source(measured) is measured
    meta: dict[str, Any] = {
        "date_utc": "2026-12-02 06:31",
        "commit": "b" * 40,
        "guest_os": "Debian 13",
        "guest_cpu": "max,-avx",
        "vm_from": {**measured, "guest_cpu": "max", "rounds": 5},
    }
    res = {"meta": meta, "vm": {"guest": {"systemd": "systemd 252"}}}
    text = machine_section(res)
    assert "| VM figures from | 2026-11-25 18:35, commit `ffffffffffff`" in text
    assert "| guest | Debian 12, systemd 252," in text
    assert "-cpu max -smp 2" in text and "| rounds | 5 per method" in text
    del meta["vm_from"]  # measured in this run: its own guest
    text = machine_section(res)
    assert "VM figures from" not in text and "| guest | Debian 13," in text


def test_the_disks_share_of_the_own_cost_comes_from_the_tmpfs_cases() -> None:
    from bench.findings import findings

    cases = [
        orchestration_case(0, 28.0),
        orchestration_case(100, 80.0),
        {**orchestration_case(0, 10.0), "tmpfs": True},
        {**orchestration_case(100, 60.0), "tmpfs": True},
    ]
    text = findings({"host": {"orchestration": {"cases": cases}}})
    assert "falls from 28 to 10 ms with no hooks and from 80 to 60 ms" in text
    assert "the disk's share of the own cost with 100 hooks is 25%" in text


def test_issue_19_vm_targets_are_judged_from_the_downtime_runs() -> None:
    from bench.vm_targets import vm_targets

    def run(method: str, rnd: int, total: float, new: float, **kw: Any) -> dict[str, Any]:
        return {"method": method, "round": rnd, "total_s": total, "new_side_s": new, **kw}

    runs = [
        run("liveupd-direct", 0, 30.0, 20.0, recovered_s=30.5, own_cost={"own": 0.4}),
        run("liveupd-direct", 1, 32.0, 22.0, recovered_s=34.0, own_cost={"own": 0.6}),
        run("liveupd-direct", 2, 31.0, 21.0, recovered_s=31.8, own_cost={"own": 0.5}),
        *(run("kexec-e", i, 30.0, 20.0) for i in range(3)),
        *(run("systemctl-kexec", i, 31.0, 21.0) for i in range(3)),
    ]
    rows = {
        what: (measured, verdict) for what, measured, verdict in vm_targets({"vm": {"runs": runs}})
    }
    late = rows["recovery reported <= 1.0 s after the boot marker (`direct`, median)"]
    assert late == ("0.80 (0.50\u20132.00) s after it", "met")  # an en dash, as fmt_summary
    assert rows["old side: liveupd's own cost <= 0.5 s (`direct`, TCG)"][1] == "met"
    assert rows["new side <= 1.05x `systemctl kexec`'s"][1] == "met"  # 21 vs 21
    downtime = rows["`direct` downtime <= 1.05x raw `kexec -e`"]
    assert downtime[0].startswith("31.00 vs 30.00 s (medians): 1.03x") and downtime[1] == "met"
    assert rows["`direct` downtime no more than `systemctl kexec`'s"][1] == "met"  # 31 vs 31
    slower = [run("liveupd-direct", 0, 40.0, 30.0, recovered_s=52.0), run("kexec-e", 0, 30.0, 20.0)]
    verdicts = {what: v for what, _, v in vm_targets({"vm": {"runs": slower}})}
    assert verdicts["`direct` downtime <= 1.05x raw `kexec -e`"] == "missed"
    assert (
        verdicts["recovery reported <= 1.0 s after the boot marker (`direct`, median)"] == "missed"
    )
    assert verdicts["old side: liveupd's own cost <= 0.5 s (`direct`, TCG)"] == "not measured"
    assert verdicts["new side <= 1.05x `systemctl kexec`'s"] == "not measured"


def test_the_page_says_when_a_defect_needed_a_fresh_guest() -> None:
    res = results()
    assert "TCG defect" not in render(res)
    res["vm"]["defect_restarts"] = 1
    assert "ended 1 run(s), counted as failed in *runs ok*" in render(res)


def test_the_verify_import_budget_is_computed_from_the_run() -> None:
    from bench.startup import verify_import_budget

    assert verify_import_budget({}) is None
    res = {
        "host": {
            "verify_startup": {
                "import_ms": {"median": 200.0},
                "floors": [{"import_ms": {"median": 70.0}}],
            },
            "baseline": {"verify_startup": {"import_ms": {"median": 390.0}}},
        }
    }
    text = verify_import_budget(res)
    assert text is not None
    assert "one third of the baseline's 390 ms is 130 ms" in text
    assert "leaves liveupd 60 ms, where it adds 130 ms now" in text


# ------------------------------------------------------ network back (DHCPv4 lease) --

NETWORKD_JOURNAL = "\n".join(
    [
        "-- No entries --",  # not JSON: skipped
        '{"__MONOTONIC_TIMESTAMP": "4100000", "MESSAGE": "ens3: Link UP"}',
        # A binary MESSAGE (journald writes a list of byte values), earlier: skipped.
        '{"__MONOTONIC_TIMESTAMP": "4200000", "MESSAGE": '
        + str(list(b"ens3: DHCPv4 address \xff"))
        + "}",
        '{"__MONOTONIC_TIMESTAMP": "4300000"}',  # no MESSAGE
        '{"MESSAGE": "ens3: DHCPv4 address 10.0.2.99/24 (no timestamp)"}',
        '{"__MONOTONIC_TIMESTAMP": "5123456", "MESSAGE": '
        '"ens3: DHCPv4 address 10.0.2.15/24, gateway 10.0.2.2 acquired from 10.0.2.2"}',
        '{"__MONOTONIC_TIMESTAMP": "9000000", "MESSAGE": '
        '"ens3: DHCPv4 address 10.0.2.15/24, gateway 10.0.2.2 acquired from 10.0.2.2"}',
    ]
)


def test_the_network_is_back_at_networkds_first_dhcpv4_lease() -> None:
    from bench.vm import dhcp_lease_uptime

    assert dhcp_lease_uptime(NETWORKD_JOURNAL) == pytest.approx(5.123456)
    binary_only = "\n".join(NETWORKD_JOURNAL.splitlines()[:5])
    assert dhcp_lease_uptime(binary_only) is None  # the binary entry is not taken
    assert (
        dhcp_lease_uptime('{"__MONOTONIC_TIMESTAMP": "1", "MESSAGE": "ens3: Gained carrier"}')
        is None
    )
    assert dhcp_lease_uptime("") is None
    assert dhcp_lease_uptime("[]\nnull\n{broken") is None


class _JournalVM:
    """A guest whose `journalctl` prints ``outputs`` in turn (an exception is raised)."""

    def __init__(self, *outputs: str | Exception) -> None:
        self.outputs = list(outputs)
        self.scripts: list[str] = []

    def run(self, cmd: str, *, timeout: float = 0.0, check: bool = True) -> Any:
        from tests.vm.guest_vm import RunResult

        self.scripts.append(cmd)
        out = self.outputs.pop(0)
        if isinstance(out, Exception):
            raise out
        return RunResult(cmd, 0, out.encode(), b"", False, "boot", 0.1)


def _session(vm: _JournalVM, logged: list[str]) -> Any:
    from bench.vm import Session

    session = Session.__new__(Session)
    session.vm = vm  # type: ignore[assignment]
    session.log = logged.append
    return session


def test_network_back_is_read_from_this_boots_networkd_journal() -> None:
    from tests.vm.agent_client import AgentTimeoutError

    logged: list[str] = []
    vm = _JournalVM(NETWORKD_JOURNAL)
    assert _session(vm, logged).network_back() == pytest.approx(5.123456)
    # networkd's own wait for a link online first: the lease may come after the boot settled.
    (script,) = vm.scripts
    assert script.index("systemd-networkd-wait-online --any") < script.index(
        "journalctl -b -o json"
    )
    assert "-u systemd-networkd.service" in script
    assert _session(_JournalVM(""), logged).network_back() is None
    assert "no DHCPv4 lease" in logged[-1]
    vm = _JournalVM(AgentTimeoutError("no reply"))
    assert _session(vm, logged).network_back() is None  # recorded as unknown, the run goes on


def _with_network(res: dict[str, Any]) -> dict[str, Any]:
    """results() with the network back recorded, and liveupd `direct`'s verification times."""
    back = {"liveupd-direct": 20.0, "systemctl-kexec": 19.0, "kexec-e": 18.0}
    for r in res["vm"]["runs"]:
        method, rnd = r["method"], r["round"]
        if method in back:
            r["network_back_s"] = back[method] + rnd * (1.0 if method == "liveupd-direct" else 0.5)
        if method == "liveupd-direct":
            r["verify"] = {
                "unit_started": 17.5,
                "verify_started": 22.5,
                "verify_finished": 23.0 + rnd * 0.5,
                "unit_exited": 24.5,
                "marker": 20.5,
            }
    return res


def _column(text: str, header: str, row_label: str) -> str:
    """The cell of ``row_label``'s row under ``header`` in the Markdown table having it."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if f"| {header} |" in line)
    col = [c.strip() for c in lines[start].strip("|").split("|")].index(header)
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == row_label:
            return cells[col]
    raise AssertionError(f"no row {row_label!r} under {header!r}")


def test_the_report_shows_when_the_network_is_back() -> None:
    text = render(_with_network(results()))
    column = "network back s (uptime)"
    assert _column(text, column, "liveupd `direct`") == "21.00 (20.00\u201322.00)"
    assert _column(text, column, "`systemctl kexec`") == "19.50 (19.00\u201320.00)"
    assert _column(text, column, "`kexec -e` (floor)") == "18.50 (18.00\u201319.00)"
    assert _column(text, column, "`kexec -e --no-sync`") == "\u2013"  # not recorded
    # One row: unit started, verification began, network back, verified, boot marker.
    assert (
        "| liveupd `direct` | 17.50 (17.50\u201317.50) | 22.50 (22.50\u201322.50) "
        "| 21.00 (20.00\u201322.00) | 23.50 (23.00\u201324.00) | 20.50 (20.50\u201320.50) |"
    ) in text
    assert "systemd-networkd's DHCPv4 lease on the new boot, uptime from the journal" in text


def test_results_without_the_network_back_render_a_dash() -> None:
    res = results()
    for r in res["vm"]["runs"]:
        if r["method"] == "liveupd-direct":
            r["verify"] = {"unit_started": 17.5, "verify_finished": 23.0, "marker": 20.5}
    text = render(res)
    for row in ("liveupd `direct`", "`systemctl kexec`", "`kexec -e` (floor)"):
        assert _column(text, "network back s (uptime)", row) == "\u2013"
    assert _column(text, "network back (DHCPv4 lease)", "liveupd `direct`") == "\u2013"
    assert "When the network is back" not in text


def test_the_network_finding_is_computed_from_the_runs() -> None:
    from bench.findings import findings

    text = findings({"vm": _with_network(results())["vm"]})
    assert "verification ends 2.50 (2.00\u20133.00) s after systemd-networkd's DHCPv4 lease" in text
    assert "21.00 (20.00\u201322.00) s of uptime under liveupd `direct`" in text
    assert "19.50 (19.00\u201320.00) s after `systemctl kexec`" in text
    assert "+1.50 s (medians)" in text
    assert "When the network is back" not in findings({"vm": results()["vm"]})
