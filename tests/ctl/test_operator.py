"""Issue 18's numbered cases, each as the admin of the issue met it (liveupctl, dry run).

1. the quick start: tests/ctl/test_tryout.py;
2. Ctrl-C during exec: here without a terminal, tests/ctl/test_terminal.py on one;
3. status during and after a transition, show, exec --no-wait;
4. tracebacks: a closed pipe, a full disk (the daemon's: tests/dbus/test_name_refused.py);
5. typos fill the history;
6. the dry run is a one-shot (and its advice);
7. conventions: options before the verb, -q, --no-legend, --no-pager, -j, a bare
   liveupctl, the modes explained, the pager.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from liveupd.backends.dryrun import DEFAULT_MACHINE
from liveupd.errors import ExitCode
from tests.conftest import HookFactory
from tests.ctl.terminal import terminal
from tests.ctl.test_terminal import Gate
from tests.dbus.buses import (
    LIVEUPCTL,
    REPO,
    TRANSITION,
    Daemon,
    PrivateBus,
    Processes,
    liveupctl,
    wait_until,
)
from tests.dbus.fixtures import DaemonFactory
from tests.dbus.test_inhibit import inhibit

RUNNING = "6.1.0-55-cloud-amd64"
TARGET = "6.1.0-56-cloud-amd64"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def history(bus: PrivateBus) -> list[dict[str, Any]]:
    return list(json.loads(bus.call("GetHistory", "u", "0")[0]))


def shell(bus: PrivateBus, script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in bash, with ``$LIVEUPCTL`` the client on ``bus``."""
    return subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=bus.env(LIVEUPCTL=f"{LIVEUPCTL} --bus {bus.address}"),
        timeout=60,
        check=False,
    )


# ------------------------------------------------------------------ case 2 --


def test_2_sigint_without_a_terminal_cancels_then_exits_130(
    daemon: Daemon, bus: PrivateBus, make_hook: HookFactory, procs: Processes, tmp_path: Path
) -> None:
    hold = Gate(tmp_path, "hold")
    make_hook("10-hold", "quiesce", hold.script)
    tid, _ = bus.call("Stage", "sssa{sv}", TARGET, "", "", "0")
    client = procs.start(
        [LIVEUPCTL, "--bus", bus.address, "exec"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=bus.env(),
    )
    hold.wait_started()
    wait_until(lambda: bus.get("State") == "running", "the transition to run")
    assert client.stdout is not None
    assert client.stdout.readline().startswith(f"Transition {tid}: switching to")
    client.send_signal(signal.SIGINT)  # kill -INT: no terminal, no ^C echo
    out, err = client.communicate(timeout=60)
    assert client.returncode == 130, (out, err)
    assert err.startswith("cancelling: rolling back ...")
    assert "liveupctl: cancelled: transition" in err and "Traceback" not in err
    assert [(e["id"], e["state"]) for e in history(bus)] == [(tid, "cancelled")]


# ------------------------------------------------------------------ case 3 --


def test_3_status_during_a_transition_says_which_phase_and_how_far(
    daemon: Daemon, bus: PrivateBus, make_hook: HookFactory, tmp_path: Path
) -> None:
    hold = Gate(tmp_path, "hold")
    make_hook("05-first", "quiesce", "true")
    make_hook("10-hold", "quiesce", hold.script)
    ok(liveupctl(bus, "stage", TARGET))
    started = ok(liveupctl(bus, "exec", "--no-wait"))
    assert "follow it with 'liveupctl status'" in started
    hold.wait_started()
    status = json.loads(ok(liveupctl(bus, "status", "--json")))
    t = status["transition"]
    assert status["state"] == "running" and status["dry_run"] is True
    assert t["state"] == "running" and t["phase"] == "quiesce"
    assert isinstance(t["progress"], int) and t["progress"] > 0
    assert (t["old_release"], t["new_release"], t["mode"]) == (RUNNING, TARGET, "direct")
    assert t["elapsed_s"] >= 0
    assert status["blockers"] == [
        {"kind": "busy", "message": f"transition {t['id']} is running (quiesce)"}
    ]
    text = ok(liveupctl(bus, "status"))
    assert f"Transition:     {t['id']}: running (dry run)" in text
    assert f"  kernel:       {RUNNING} -> {TARGET} (direct mode)" in text
    assert "  phase:        quiesce, " in text and "% done, for " in text
    live = ok(liveupctl(bus, "show"))
    assert f"Transition {t['id']}: running" in live and "% done" in live
    assert hold.release()
    wait_until(lambda: history(bus)[0]["state"] == "completed", "the rehearsal to end")


def test_3_status_after_a_failure_names_the_step_and_the_reason(
    daemon: Daemon, bus: PrivateBus, make_hook: HookFactory
) -> None:
    make_hook("10-db", "quiesce", "echo 'the database refuses to stop' >&2; exit 3")
    ok(liveupctl(bus, "stage", TARGET))
    failed = liveupctl(bus, "exec")
    assert failed.returncode == ExitCode.FAILED
    status = json.loads(ok(liveupctl(bus, "status", "--json")))
    t = status["transition"]
    assert status["state"] == "failed" and t["state"] == "failed"
    assert t["error"]["step"] == "hook:10-db" and t["error"]["kind"] == "HookFailed"
    assert "the database refuses to stop" in t["error"]["message"]
    text = ok(liveupctl(bus, "status"))
    assert "  failed at:    hook 10-db" in text
    assert "  reason:       hook 10-db" in text and "the database refuses to stop" in text
    assert f"liveupctl show {t['id']}" in text
    report = ok(liveupctl(bus, "show", t["id"][:12]))  # a unique prefix will do
    assert f"Transition {t['id']}: failed (dry run: a simulated machine)" in report
    assert "Failed at: hook 10-db (HookFailed)" in report
    assert "Undone (most recent first): kernel-load:kernel-load" in report


def test_3_show_prints_the_report_from_the_daemons_data(
    daemon: Daemon, bus: PrivateBus, make_hook: HookFactory
) -> None:
    make_hook("20-network", "quiesce", "true")
    make_hook("50-network-verify", "verify", "true")
    ok(liveupctl(bus, "stage", TARGET))
    ok(liveupctl(bus, "exec"))
    [entry] = history(bus)
    tid = entry["id"]
    assert json.loads(ok(liveupctl(bus, "show", "--json"))) == entry
    path = f"/org/liveupd/LiveUpdate1/transition/{tid}"
    report = json.loads(bus.get("Report", path=path, interface=TRANSITION))
    assert json.loads(ok(liveupctl(bus, "--json", "show", tid))) == report
    text = ok(liveupctl(bus, "show"))
    lines = text.splitlines()
    assert lines[0] == f"Transition {tid}: completed (dry run: a simulated machine)"
    assert lines[1] == f"  kernel     {RUNNING} -> {TARGET} (direct mode)"
    for phase in ("check", "load", "quiesce", "unbind", "checkpoint", "flush", "exec", "verify"):
        assert any(line.startswith(f"  {phase:<11} ") and line.endswith(" ms") for line in lines)
    assert any(line.startswith("  20-network ") and "quiesce" in line for line in lines)
    assert any(line.startswith("  50-network-verify ") and "verify" in line for line in lines)
    assert "    driver virtio_net, interfaces eth0 52:54:00:12:34:56: bound again" in lines
    assert "Filesystems frozen (in order): /data, /" in lines
    assert "Verification on the new kernel (simulated): passed" in lines
    assert any(line.startswith("  total (liveupd's clock) ") for line in lines)
    unknown = liveupctl(bus, "show", "19990101")
    assert unknown.returncode == ExitCode.FAILED
    assert "no transition '19990101'; 'liveupctl history' lists them" in unknown.stderr


def test_3_show_with_no_transitions(daemon: Daemon, bus: PrivateBus) -> None:
    result = liveupctl(bus, "show")
    assert result.returncode == ExitCode.NOTHING_TO_DO
    assert "no transitions yet" in result.stderr


def test_3_status_names_a_blocking_inhibitor(
    daemon: Daemon, bus: PrivateBus, logind: PrivateBus, procs: Processes
) -> None:
    inhibit(procs, bus, "block")
    status = json.loads(ok(liveupctl(bus, "status", "--json")))
    assert [b["kind"] for b in status["blockers"]] == ["inhibitor"]
    assert "db-migration" in status["blockers"][0]["message"]
    text = ok(liveupctl(bus, "status"))
    assert "Blocked by:     a shutdown inhibitor is held by db-migration" in text


def test_3_status_names_invalid_hooks(
    daemon: Daemon, bus: PrivateBus, make_hook: HookFactory
) -> None:
    make_hook("30-typo", "sometime", "true")
    status = json.loads(ok(liveupctl(bus, "status", "--json")))
    assert [b["kind"] for b in status["blockers"]] == ["hooks"]
    assert "30-typo" in status["blockers"][0]["message"]


# ------------------------------------------------------------------ case 4 --


def test_4_a_closed_pipe_is_no_traceback(daemon: Daemon, bus: PrivateBus) -> None:
    ok(liveupctl(bus, "stage"))
    for verb in ("status", "history", "kernels", "show", "status --json"):
        result = shell(bus, f"$LIVEUPCTL {verb} | head -1; echo ${{PIPESTATUS[0]}}")
        assert result.stderr == "", (verb, result.stderr)
        lines = result.stdout.splitlines()
        assert len(lines) == 2 and lines[-1] in ("0", "141"), (verb, result.stdout)


def test_4_a_full_disk_is_one_clear_line(daemon: Daemon, bus: PrivateBus) -> None:
    for verb in ("kernels", "status", "kernels --json"):
        result = shell(bus, f"$LIVEUPCTL {verb} > /dev/full")
        assert result.returncode == ExitCode.FAILED, (verb, result.stderr)
        assert result.stderr == (
            "liveupctl: cannot write to standard output: No space left on device\n"
        ), verb


# ------------------------------------------------------------------ case 5 --


def test_5_typos_are_refused_and_never_recorded(daemon: Daemon, bus: PrivateBus) -> None:
    release = liveupctl(bus, "stage", "6.1.0-40")
    assert release.returncode == ExitCode.FAILED
    assert "no installed kernel '6.1.0-40'" in release.stderr
    path = liveupctl(bus, "stage", "/boot/vmlinuz-6.1.0-40-cloud-amd64")
    assert path.returncode == ExitCode.FAILED
    assert "no such file; nothing was staged or recorded" in path.stderr
    assert history(bus) == []
    assert "no transitions yet" in ok(liveupctl(bus, "history"))
    assert bus.get("State") == "idle"


# ------------------------------------------------------------------ case 6 --


def test_6_the_dry_run_can_be_rehearsed_again_and_again(
    daemon: Daemon, bus: PrivateBus, make_hook: HookFactory
) -> None:
    make_hook("10-quiesce", "quiesce", "true")
    for kernel in (TARGET, RUNNING, TARGET):
        ok(liveupctl(bus, "stage", kernel))
        out = ok(liveupctl(bus, "exec"))
        assert f"the simulated new boot runs {kernel} and passed verification" in out
        status = json.loads(ok(liveupctl(bus, "status", "--json")))
        assert status["state"] == "idle" and status["running_kernel"] == kernel
        assert (status["transition"]["state"], status["transition"]["dry_run"]) == (
            "completed",
            True,
        )
    rows = ok(liveupctl(bus, "history", "--no-legend")).splitlines()
    assert len(rows) == 3 and all(" completed " in r and r.endswith("dry run") for r in rows)
    tid = history(bus)[0]["id"]
    assert f"Transition:     {tid}: completed (dry run)" in ok(liveupctl(bus, "status"))
    # The simulated jump undid what the old boot had frozen, unbound and loaded.
    machine = json.loads((daemon.state_dir / "dry-run" / "machine.json").read_text())
    assert (machine["frozen"], machine["unbound"], machine["loaded"]) == ([], {}, None)


def test_6_advice_for_a_simulated_machine_and_the_config_in_use(
    start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path
) -> None:
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps({**DEFAULT_MACHINE, "errors": {"freeze": {"/data": "EIO"}}}))
    daemon = start_daemon(env={"LIVEUPD_DRY_RUN_MACHINE": str(machine)})
    ok(liveupctl(bus, "stage", TARGET))
    failed = liveupctl(bus, "exec")
    assert failed.returncode == ExitCode.FAILED
    assert "freezing /data failed" in failed.stderr
    assert "fsfreeze" not in failed.stderr
    assert "The machine is simulated (liveupd --dry-run)" in failed.stderr
    assert f"[storage] freeze in {daemon.config}" in failed.stderr
    assert "/etc/liveupd/liveupd.conf" not in failed.stderr


# ------------------------------------------------------------------ case 7 --


def test_7_options_go_before_or_after_the_verb(daemon: Daemon, bus: PrivateBus) -> None:
    after = json.loads(ok(liveupctl(bus, "status", "--json")))
    for args in (["--json", "status"], ["-j", "status"], ["status", "-j"], ["-j"]):
        assert json.loads(ok(liveupctl(bus, *args))).keys() == after.keys(), args
    kernels = json.loads(ok(liveupctl(bus, "--json", "kernels", "--no-pager")))
    assert [k["release"] for k in kernels] == [RUNNING, TARGET]
    assert (
        ok(liveupctl(bus, "--no-pager", "--no-legend", "kernels"))
        .splitlines()[0]
        .startswith(f"* {RUNNING}  ")
    )
    bare = ok(liveupctl(bus))
    assert bare.startswith("State:          idle (dry run: a simulated machine)")
    assert bare == ok(liveupctl(bus, "status"))
    assert ok(liveupctl(bus, "--no-pager")) == bare


def test_7_quiet_and_no_legend(daemon: Daemon, bus: PrivateBus) -> None:
    assert ok(liveupctl(bus, "-q", "stage")) == ""
    assert ok(liveupctl(bus, "exec", "--quiet")) == ""
    assert history(bus)[0]["state"] == "completed"
    assert ok(liveupctl(bus, "stage", "--quiet")) == ""
    assert ok(liveupctl(bus, "cancel", "-q")) == ""
    # As in systemctl, a reading verb's output is its result: -q leaves it.
    assert ok(liveupctl(bus, "-q", "history")).startswith("ID ")
    table = ok(liveupctl(bus, "history", "--no-legend")).splitlines()
    assert len(table) == 2 and not table[0].startswith("ID ")
    kernels = ok(liveupctl(bus, "kernels", "--no-legend"))
    assert "RELEASE" not in kernels and "* running" not in kernels


def test_7_json_where_there_is_none_is_a_usage_error(daemon: Daemon, bus: PrivateBus) -> None:
    result = liveupctl(bus, "--json", "exec")
    assert result.returncode == ExitCode.USAGE
    assert "--json: exec prints no JSON" in result.stderr


def test_7_help_explains_the_default_modes() -> None:
    for args in (["--help"], ["exec", "--help"], ["reboot", "--help"]):
        out = subprocess.run(
            [LIVEUPCTL, *args], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        flat = " ".join(out.split())
        assert "exec defaults to direct mode and reboot to systemd mode" in flat, args
        assert "stands in for 'systemctl reboot'" in flat, args
    exe = subprocess.run(
        [LIVEUPCTL, "exec", "--help"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert "Ctrl-C" in exe and "--no-pager" in exe and "--quiet" in exe


def test_7_long_output_on_a_terminal_is_paged_unless_no_pager(
    daemon: Daemon, bus: PrivateBus, make_hook: HookFactory
) -> None:
    make_hook("10-quiesce", "quiesce", "true")
    for _ in range(3):
        ok(liveupctl(bus, "stage"))
        ok(liveupctl(bus, "exec"))
    pager = {"PATH": os.environ["PATH"], "LIVEUPCTL_PAGER": "sed s/^/PAGED:/"}
    show = [LIVEUPCTL, "--bus", bus.address, "show"]
    with terminal(show, term="screen", env=pager, height=20) as pane:
        assert pane.exit_status() == 0
        assert "PAGED:Transition " in pane.screen()
    with terminal([*show, "--no-pager"], term="screen", env=pager, height=20) as pane:
        assert pane.exit_status() == 0
        screen = pane.screen()
        assert "PAGED:" not in screen and "Transition " in screen
    with terminal(show, term="dumb", env=pager, height=20) as pane:  # dumb: never paged
        assert pane.exit_status() == 0
        assert "PAGED:" not in pane.screen()
