"""liveupctl, a real D-Bus client: output, --json, exit codes, progress, reboot --fallback."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from liveupd.backends.dryrun import DEFAULT_MACHINE
from liveupd.ctl.progress import BarRenderer, Follower, Renderer
from liveupd.errors import ExitCode
from tests.conftest import HookFactory
from tests.dbus import expect
from tests.dbus.buses import (
    LIVEUPCTL,
    NOBODY,
    REPO,
    TRANSITION,
    Daemon,
    PrivateBus,
    Processes,
    Recorder,
    liveupctl,
    wait_until,
)
from tests.dbus.fixtures import DaemonFactory, Polkit
from tests.devices.fakes import OURS
from tests.kernels import make_uki, uki_sections

TARGET = "6.1.0-56-cloud-amd64"
RUNNING = "6.1.0-55-cloud-amd64"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def machine(tmp_path: Path, **changes: Any) -> dict[str, str]:
    """An environment that makes the dry-run daemon simulate another machine."""
    path = tmp_path / "machine.json"
    path.write_text(json.dumps({**DEFAULT_MACHINE, **changes}))
    return {"LIVEUPD_DRY_RUN_MACHINE": str(path)}


# ---------------------------------------------------------------- reading --


def test_status_json_matches_the_daemon(daemon: Daemon, bus: PrivateBus, tmp_path: Path) -> None:
    no_flag = {"LIVEUPCTL_REBOOT_REQUIRED": str(tmp_path / "reboot-required")}
    status = json.loads(ok(liveupctl(bus, "status", "--json", env=no_flag)))
    assert status == {
        "state": bus.get("State"),
        "staged_transition": None,
        "staged": None,
        "running_kernel": bus.get("RunningKernel"),
        "latest_kernel": bus.get("LatestKernel"),
        "unsupported": None,
        "refusals": [],
        "can_live_update": "yes",
        "version": bus.get("Version"),
        "newer_kernel": TARGET,
        "reboot_required": False,
        "reboot_required_file": None,
        "reboot_required_packages": [],
        "corrupt_journals": 0,
        "dry_run": True,
        "transition": None,
        "blockers": [],
        "watchdog": bus.get("Watchdog"),
        "quarantine": {"kernels": [], "problem": None},
    }
    # The dry-run machine has an i6300esb: the jump is guarded, and the text says so.
    assert status["watchdog"] == (
        "watchdog0 (i6300ESB timer, module i6300esb): armed for 120 s before the jump"
    )
    text = ok(liveupctl(bus, "status", env=no_flag))
    assert f"Watchdog:       {status['watchdog']}" in text.splitlines()
    tid, path = bus.call("Stage", "sssa{sv}", "", "", "", "0")
    status = json.loads(ok(liveupctl(bus, "status", "--json")))  # --bus before the command
    assert status["state"] == "staged"
    assert status["staged_transition"] == path
    staged = status["staged"]
    assert staged["id"] == tid
    assert staged["target_release"] == bus.get("TargetRelease", path=path, interface=TRANSITION)
    assert staged["kernel"] == bus.get("KernelPath", path=path, interface=TRANSITION)
    assert staged["cmdline"] == bus.get("CommandLine", path=path, interface=TRANSITION)
    assert staged["report"]["id"] == tid
    text = ok(liveupctl(bus, "status"))
    assert f"Staged:         {TARGET} (transition {tid})" in text
    assert f"Running kernel: {RUNNING}" in text


def test_kernels_json_matches_list_kernels(daemon: Daemon, bus: PrivateBus) -> None:
    kernels = json.loads(ok(liveupctl(bus, "kernels", "--json")))
    [listed] = bus.call("ListKernels")
    assert [(k["release"], k["kernel"], k["initrd"] or "", k["running"]) for k in kernels] == [
        tuple(k) for k in listed
    ]
    text = ok(liveupctl(bus, "kernels"))
    assert f"* {RUNNING}" in text and f"> {TARGET}" in text
    assert all(k["stageable"] and k["source"] == "boot" for k in kernels)
    assert [k["latest"] for k in kernels] == [False, True]


def test_kernels_marks_what_stage_would_refuse_and_latest_skips_it(
    daemon: Daemon, bus: PrivateBus, boot_dir: Path
) -> None:
    """A text file named like a newer kernel is listed, marked, and never the latest."""
    fake = boot_dir / "vmlinuz-9.9.9-text"
    fake.write_text("not a kernel\n" * 200)
    fake.chmod(0o644)
    (boot_dir / "initrd.img-9.9.9-text").write_bytes(b"070701" + bytes(512))
    text = ok(liveupctl(bus, "kernels"))
    assert "! 9.9.9-text" in text, text
    assert f"refused: {fake}: is a text file, not a kernel" in text
    assert f"> {TARGET}" in text
    assert bus.get("LatestKernel") == TARGET
    details = json.loads(ok(liveupctl(bus, "kernels", "--json")))
    [bad] = [k for k in details if k["release"] == "9.9.9-text"]
    assert not bad["stageable"] and not bad["latest"] and "text file" in bad["problem"]


def test_history_json_matches_get_history(
    daemon: Daemon, bus: PrivateBus, recorder: Recorder
) -> None:
    assert json.loads(ok(liveupctl(bus, "history", "--json"))) == []
    assert "no transitions yet" in ok(liveupctl(bus, "history"))
    _, path = bus.call("Stage", "sssa{sv}", "", "", "", "0")
    bus.call("Cancel")
    recorder.wait_for(expect.is_member("TransitionFailed", path), "the cancel")
    history = json.loads(ok(liveupctl(bus, "history", "--json", "--limit", "1")))
    assert history == json.loads(bus.call("GetHistory", "u", "1")[0])
    assert history[0]["state"] == "cancelled"
    assert "cancelled" in ok(liveupctl(bus, "history"))


# -------------------------------------------------------------- changing --


def test_stage_then_exec_follows_progress_until_the_jump(
    daemon: Daemon, bus: PrivateBus, make_hook: HookFactory
) -> None:
    make_hook("10-quiesce", "quiesce", "true")
    make_hook("20-flush", "flush", "true")
    staged = ok(liveupctl(bus, "stage", TARGET, "--append", "quiet"))
    assert f"Staged {TARGET} as transition" in staged
    assert f"quiet {OURS} liveupd.transition=" in staged
    out = ok(liveupctl(bus, "exec"))  # not a terminal: plain lines
    lines = out.splitlines()
    assert lines[0].startswith("Transition ")
    assert f"switching to {TARGET} (direct mode, dry run)" in lines[0]
    phases = [line.split()[1] for line in lines if line.startswith("phase ")]
    assert phases == ["quiesce", "unbind", "checkpoint", "flush", "exec"]
    assert any(line.startswith("hook 10-quiesce (quiesce): success in ") for line in lines)
    assert any(line.startswith("hook 20-flush (flush): success in ") for line in lines)
    # A dry run follows the rehearsal of the new boot to its end (issue 18, case 6).
    assert lines[-2].startswith(f"the jump into {TARGET} was requested (dry run: ")
    assert lines[-1].startswith(f"dry run: the simulated new boot runs {TARGET} and passed")
    assert bus.get("State") == "idle"
    assert "jump" in daemon.ops() and "boot" in daemon.ops()


def test_stage_a_uki_profile_over_the_bus(daemon: Daemon, bus: PrivateBus, boot_dir: Path) -> None:
    """A UKI in EFI/Linux is listed, and Stage's profile option picks its command line."""
    release = "6.1.0-57-cloud-amd64"
    uki = boot_dir / "EFI/Linux/debian.efi"
    uki.parent.mkdir(parents=True)
    uki.write_bytes(
        make_uki(
            [
                *uki_sections(release, cmdline="root=/dev/vda ro"),
                (".profile", b"ID=regular\n"),
                (".profile", b"ID=rescue\nTITLE=Rescue\n"),
                (".cmdline", b"root=/dev/vda ro systemd.unit=rescue.target"),
            ]
        )
    )
    uki.chmod(0o644)
    text = ok(liveupctl(bus, "kernels"))
    assert f"> {release}  uki" in text and "profiles: @0 (regular), @1 (rescue)" in text
    staged = ok(liveupctl(bus, "stage", "--profile", "rescue"))
    assert f"Staged {release} as transition" in staged and str(uki) in staged
    assert (
        f"command line: root=/dev/vda ro systemd.unit=rescue.target {OURS} liveupd.transition="
        in staged
    )
    ok(liveupctl(bus, "cancel"))
    plain = liveupctl(bus, "stage", TARGET, "--profile", "@1")
    assert plain.returncode == ExitCode.USAGE  # InvalidArgument
    assert "the profile option is for unified kernel images" in plain.stderr


def test_exec_no_wait_and_systemd_mode(daemon: Daemon, bus: PrivateBus) -> None:
    ok(liveupctl(bus, "stage"))
    out = ok(liveupctl(bus, "exec", "--mode", "systemd", "--no-wait"))
    assert "(systemd mode, dry run)" in out and "liveupctl status" in out


def test_cancel(daemon: Daemon, bus: PrivateBus) -> None:
    ok(liveupctl(bus, "stage"))
    assert "the staged kernel was unloaded" in ok(liveupctl(bus, "cancel"))
    assert bus.get("State") == "idle"


def test_exec_failure_exits_1_with_the_reason(
    daemon: Daemon, bus: PrivateBus, make_hook: HookFactory
) -> None:
    make_hook("10-broken", "quiesce", "echo 'service refuses to stop' >&2; exit 1")
    ok(liveupctl(bus, "stage"))
    result = liveupctl(bus, "exec")
    assert result.returncode == ExitCode.FAILED
    assert "hook 10-broken (quiesce): failed in" in result.stdout
    assert result.stderr.startswith("liveupctl: hook 10-broken")
    assert "service refuses to stop" in result.stderr


def test_exec_reports_the_daemon_going_away(
    daemon: Daemon, bus: PrivateBus, make_hook: HookFactory, procs: Processes, tmp_path: Path
) -> None:
    pidfile = tmp_path / "hook.pid"
    make_hook("10-slow", "quiesce", f"echo $$ > {pidfile}; exec sleep 60")
    ok(liveupctl(bus, "stage"))
    client = procs.start(
        [LIVEUPCTL, "--bus", bus.address, "exec"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=bus.env(),
    )
    hook = int(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), "the hook"))
    try:
        assert daemon.proc is not None
        os.kill(daemon.proc.pid, signal.SIGKILL)  # as if it died (or the machine jumped)
        out, err = client.communicate(timeout=60)
    finally:
        os.killpg(hook, signal.SIGKILL)  # the hook runs in its own session: not left behind
    assert client.returncode == ExitCode.FAILED, (out, err)
    assert "liveupd went away during the quiesce phase" in err


# ------------------------------------------------------------ exit codes --


def test_exit_codes(daemon: Daemon, bus: PrivateBus, polkit: Polkit) -> None:
    nothing = liveupctl(bus, "exec")
    assert nothing.returncode == ExitCode.NOTHING_TO_DO
    assert "stage a kernel first" in nothing.stderr
    assert liveupctl(bus, "cancel").returncode == ExitCode.NOTHING_TO_DO
    denied = liveupctl(bus, "stage", uid=NOBODY)
    assert denied.returncode == ExitCode.NOT_AUTHORIZED
    assert "not allowed" in denied.stderr
    assert liveupctl(bus, "status", "--json", uid=NOBODY).returncode == 0  # reading is open
    bad = liveupctl(bus, "stage", "/nonexistent/vmlinuz")
    assert bad.returncode == ExitCode.FAILED
    usage = liveupctl(bus, "stage", "--cmdline", "a", "--append", "b")
    assert usage.returncode == ExitCode.USAGE
    assert liveupctl(bus, "frobnicate").returncode == ExitCode.USAGE
    invalid = liveupctl(bus, "stage", "--sha256", "abc")
    assert invalid.returncode == ExitCode.USAGE  # InvalidArgument
    assert "sha256sum" in invalid.stderr


def test_unsupported_exits_5(start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path) -> None:
    start_daemon(env=machine(tmp_path, preflight=["this kernel was built without kexec"]))
    for args in (["stage"], ["reboot"]):
        result = liveupctl(bus, *args)
        assert result.returncode == ExitCode.UNSUPPORTED, result.stderr
        assert "built without kexec" in result.stderr
    status = json.loads(ok(liveupctl(bus, "status", "--json")))
    assert status["can_live_update"] == "na"
    assert status["unsupported"] == "this kernel was built without kexec"
    assert status["refusals"] == [
        {"reason": "preflight", "message": "this kernel was built without kexec"}
    ]


def test_status_names_a_volume_a_tpm_unlocks(
    start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path
) -> None:
    volume = {
        "device": "/dev/vda3",
        "names": ["vda3_crypt"],
        "root": True,
        "crypttab": "UUID=5f1c",
        "tokens": ["systemd-tpm2"],
    }
    start_daemon(env=machine(tmp_path, luks_volumes=[volume]))
    status = json.loads(ok(liveupctl(bus, "status", "--json")))
    [refusal] = status["refusals"]
    assert refusal["reason"] == "tpm2-unlock"
    assert refusal["message"].startswith(
        "/dev/vda3 (the root filesystem's volume; crypttab name 'vda3_crypt'; listed as "
        "'UUID=5f1c') is LUKS2 with a systemd-tpm2 token"
    )
    assert status["unsupported"] == refusal["message"] and status["can_live_update"] == "na"
    lines = ok(liveupctl(bus, "status")).splitlines()
    at = lines.index("Live update:    not possible here:")
    assert lines[at + 1] == f"                tpm2-unlock: {refusal['message']}"
    stage = liveupctl(bus, "stage")
    assert stage.returncode == ExitCode.UNSUPPORTED
    assert "tpm2-unlock: /dev/vda3 (the root filesystem's volume" in stage.stderr
    assert "[exec] allow-tpm2-unlock = true" in stage.stderr


def test_cannot_reach_the_daemon(bus: PrivateBus) -> None:
    result = liveupctl(bus, "status")
    assert result.returncode == ExitCode.FAILED
    assert "cannot reach liveupd" in result.stderr and "systemctl status liveupd" in result.stderr


# ---------------------------------------------------------------- reboot --


def settled_history(bus: PrivateBus) -> list[dict[str, Any]]:
    """``reboot`` (output not a terminal) returns at the point of no return; the dry-run
    daemon goes on with the rehearsal of the new boot."""

    def settled() -> list[dict[str, Any]] | None:
        entries: list[dict[str, Any]] = json.loads(bus.call("GetHistory", "u", "0")[0])
        return None if any(e["state"] in ("running", "exec") for e in entries) else entries

    result: list[dict[str, Any]] = wait_until(settled, "the rehearsal to end")
    return result


def test_reboot_stages_the_latest_and_jumps(daemon: Daemon, bus: PrivateBus) -> None:
    out = ok(liveupctl(bus, "reboot", "--mode", "direct"))
    assert f"Staged {TARGET} as transition" in out
    assert f"the jump into {TARGET} was requested" in out
    history = settled_history(bus)
    assert [(h["state"], h["new_release"]) for h in history] == [("completed", TARGET)]


def test_reboot_executes_what_is_staged(daemon: Daemon, bus: PrivateBus) -> None:
    tid, _ = bus.call("Stage", "sssa{sv}", "", "", "", "0")
    ok(liveupctl(bus, "reboot"))
    history = settled_history(bus)
    assert [(h["id"], h["state"], h["mode"]) for h in history] == [(tid, "completed", "systemd")]


def test_reboot_if_needed_nothing_to_do_on_the_latest_kernel(
    start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path
) -> None:
    system = {**DEFAULT_MACHINE["system"], "release": TARGET}
    start_daemon(env=machine(tmp_path, system=system))
    no_flag = {"LIVEUPCTL_REBOOT_REQUIRED": str(tmp_path / "reboot-required")}
    result = liveupctl(bus, "reboot", "--if-needed", "--fallback", env=no_flag)
    assert result.returncode == ExitCode.NOTHING_TO_DO
    assert f"No reboot needed: running the newest installed kernel ({TARGET})" in result.stdout
    assert bus.get("State") == "idle"


def test_reboot_fallback_runs_the_injected_command(
    start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path
) -> None:
    start_daemon(env=machine(tmp_path, preflight=["kexec_load_disabled is set"]))
    marker = tmp_path / "rebooted"
    result = liveupctl(
        bus, "reboot", "--fallback", env={"LIVEUPCTL_FALLBACK_COMMAND": f"touch {marker}"}
    )
    assert result.returncode == 0, result.stderr
    assert marker.exists()
    assert "kexec_load_disabled is set; rebooting the normal way (touch" in result.stderr


def test_reboot_fallback_after_a_failed_stage(
    daemon: Daemon, bus: PrivateBus, tmp_path: Path
) -> None:
    marker = tmp_path / "rebooted"
    env = {"LIVEUPCTL_FALLBACK_COMMAND": f"touch {marker}"}
    result = liveupctl(bus, "reboot", "/nonexistent/vmlinuz-9", "--fallback", env=env)
    assert result.returncode == 0, result.stderr
    assert marker.exists() and "staging failed" in result.stderr


def test_reboot_fallback_refuses_the_real_reboot_on_a_test_host(
    start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path
) -> None:
    start_daemon(env=machine(tmp_path, preflight=["no kexec here"]))
    result = liveupctl(bus, "reboot", "--fallback", env={"LIVEUPD_HOST_TEST": "1"})
    assert result.returncode == ExitCode.FAILED
    assert "refusing to run 'systemctl reboot'" in result.stderr


def test_reboot_fallback_when_the_daemon_is_unreachable(bus: PrivateBus, tmp_path: Path) -> None:
    marker = tmp_path / "rebooted"
    env = {"LIVEUPCTL_FALLBACK_COMMAND": f"touch {marker}"}
    assert liveupctl(bus, "reboot", "--fallback", env=env).returncode == 0
    assert marker.exists()
    assert liveupctl(bus, "reboot").returncode == ExitCode.FAILED


# ------------------------------------------------------------------ hooks --


def test_hooks_lists_effective_hooks(
    make_hook: HookFactory, hook_dirs: tuple[Path, Path], write_config: Any, tmp_path: Path
) -> None:
    write_config("")
    make_hook("10-db", "quiesce", "true")
    make_hook("10-db", "quiesce", "true", admin=True)  # the admin's copy overrides
    make_hook("50-net", "unbind", "true")
    make_hook("20-cache", "flush", "true")
    (hook_dirs[1] / "20-cache.hook").symlink_to("/dev/null")  # masked by the admin
    conf = tmp_path / "liveupd.conf"
    result = subprocess.run(
        [LIVEUPCTL, "hooks", "--config", str(conf), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    assert entries["10-db"]["path"] == str(hook_dirs[1] / "10-db.hook")
    assert entries["10-db"]["overrides"] == [str(hook_dirs[0] / "10-db.hook")]
    assert (entries["10-db"]["phase"], entries["10-db"]["order"]) == ("quiesce", 10)
    assert entries["50-net"]["status"] == "active"
    assert entries["20-cache"]["status"] == "masked"
    assert [e["name"] for e in json.loads(result.stdout)] == ["10-db", "50-net", "20-cache"]
    text = subprocess.run(
        [LIVEUPCTL, "hooks", "--config", str(conf)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    ).stdout
    assert "masked" in text and "(overrides " in text


def test_hooks_check(make_hook: HookFactory, tmp_path: Path) -> None:
    good = make_hook("30-app", "checkpoint", "true")
    bad = tmp_path / "40-bad.hook"
    bad.write_text('phase = "sometime"\nrun = ["/bin/true"]\n')

    def check(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [LIVEUPCTL, "hooks", "check", str(path), "--json"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            check=False,
        )

    valid = check(good)
    assert valid.returncode == 0, valid.stderr
    assert json.loads(valid.stdout)["phase"] == "checkpoint"
    invalid = check(bad)
    assert invalid.returncode == ExitCode.FAILED
    report = json.loads(invalid.stdout)
    assert not report["valid"] and any("phase" in p for p in report["problems"])


# -------------------------------------------------------------- progress --


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal() -> None:
    out = Tty()
    bar = BarRenderer(out)
    bar.update(phase="quiesce", progress=0)
    bar.hook("10-db", "quiesce", "success", 1200)
    bar.update(phase="unbind", progress=40)
    bar.hook("20-net", "unbind", "failed", 2_500_000)
    bar.finish()
    text = out.getvalue()
    assert "\r\x1b[2K[" in text
    assert "  0%  quiesce" in text and " 40%  unbind" in text
    assert "hook 20-net (unbind): failed after 2.5 s\n" in text
    assert text.endswith("\n")


def test_follower_outcomes() -> None:
    import asyncio

    async def run() -> list[Any]:
        outcomes = []
        f = Follower("/p", Renderer(io.StringIO()))
        f.phase, f.target = "exec", TARGET
        f.vanished()
        outcomes.append(await f.done)
        g = Follower("/p", Renderer(io.StringIO()))
        g.phase = "flush"
        g.vanished()
        outcomes.append(await g.done)
        return outcomes

    jumped, died = asyncio.run(run())
    assert jumped.code == ExitCode.OK and f"booting {TARGET}" in jumped.message
    assert died.code == ExitCode.FAILED and "during the flush phase" in died.message


def test_a_missing_or_bad_bus_address_is_a_clear_error_not_a_traceback() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    env.pop("DISPLAY", None)
    for args, expected in (
        (["--session"], "cannot connect to the session bus: DBUS_SESSION_BUS_ADDRESS not set"),
        (["--bus", "nonsense:"], "cannot connect to the bus at nonsense:"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "liveupd.ctl.main", *args, "status"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert out.returncode == 1, out.stderr
        assert out.stderr.startswith("liveupctl: ") and expected in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
