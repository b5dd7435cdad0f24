"""Remote login sessions end before the network goes down (issue 20), on the dry-run machine.

The simulated machine lists logind's sessions (``"sessions"``) and says which
one every caller is in (``"caller_session"``); ending one is recorded in its
calls (``terminate_session``).  A quiesce hook at 20 (where the shipped
``20-network`` takes the links down) copies the machine's state when it runs:
the sessions must already be ended then.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from liveupd.backends.dryrun import DEFAULT_MACHINE
from tests.conftest import HookFactory
from tests.dbus.buses import Daemon, PrivateBus, liveupctl, wait_until
from tests.dbus.fixtures import DaemonFactory

LATEST = "6.1.0-56-cloud-amd64"


def sess(
    sid: str, *, remote: bool = True, state: str = "active", host: str = "10.0.2.2"
) -> dict[str, Any]:
    return {
        "id": sid,
        "uid": 0,
        "user": "root",
        "remote": remote,
        "service": "sshd" if remote else "login",
        "leader": 1000 + int(sid),
        "state": state,
        "remote_host": host if remote else "",
        "scope": f"session-{sid}.scope",
    }


SESSIONS = [
    sess("1", remote=False),  # the console: not through the network
    sess("3"),  # the session the update is started from (caller_session)
    sess("5", host="192.0.2.7"),  # another admin's ssh login
    sess("7", state="closing"),  # its sshd already gone
]


def machine(tmp_path: Path, **changes: Any) -> dict[str, str]:
    path = tmp_path / "machine.json"
    described = {**DEFAULT_MACHINE, "sessions": SESSIONS, "caller_session": "3", **changes}
    path.write_text(json.dumps(described))
    return {"LIVEUPD_DRY_RUN_MACHINE": str(path)}


def network_hook(make_hook: HookFactory, daemon_state: Path, seen: Path) -> None:
    """A quiesce hook where the shipped network hook sits: it records the machine's state."""
    make_hook("20-network", "quiesce", f"cat {daemon_state / 'dry-run' / 'machine.json'} > {seen}")


def ended_calls(daemon: Daemon) -> list[str]:
    return [str(c["session"]) for c in daemon.calls() if c["op"] == "terminate_session"]


def report(bus: PrivateBus) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(bus.call("GetHistory", "u", "0")[0])[0]
    return entry


def test_remote_sessions_end_before_the_network_hook_the_callers_last(
    start_daemon: DaemonFactory, bus: PrivateBus, make_hook: HookFactory, tmp_path: Path
) -> None:
    daemon = start_daemon(env=machine(tmp_path))
    seen = tmp_path / "seen-by-the-network-hook.json"
    network_hook(make_hook, daemon.state_dir, seen)
    assert liveupctl(bus, "stage").returncode == 0
    result = liveupctl(bus, "exec")
    assert result.returncode == 0, result.stderr
    assert ended_calls(daemon) == ["5", "3"]  # remote ones only; the caller's last
    # When the network hook ran, both were already ended.
    assert sorted(json.loads(seen.read_text())["sessions_ended"]) == ["3", "5"]
    entry = report(bus)
    assert entry["state"] == "completed"
    assert [
        (s["id"], s["caller"], s["gone"], s["remote_host"]) for s in entry["sessions_ended"]
    ] == [
        ("5", False, True, "192.0.2.7"),
        ("3", True, True, "10.0.2.2"),
    ]
    shown = liveupctl(bus, "show").stdout
    assert "Remote sessions ended before the network went down:" in shown
    assert "  session 5: root (sshd from 192.0.2.7)\n" in shown
    assert "  session 3: root (sshd from 10.0.2.2), the update's own, ended last" in shown
    # The transition's own log says so too, before the hook started.
    log = [
        json.loads(line)
        for line in (daemon.state_dir / "transitions" / entry["id"] / "log.jsonl")
        .read_text()
        .splitlines()
    ]
    events = [(e["event"], e.get("session") or e.get("hook")) for e in log]
    assert events.index(("sessions.ended", "3")) < events.index(("hook.started", "20-network"))


def test_systemd_mode_ends_them_too_before_its_quiesce_hooks(
    start_daemon: DaemonFactory, bus: PrivateBus, make_hook: HookFactory, tmp_path: Path
) -> None:
    """The quiesce hooks run before kexec.target: systemd's own ordering comes too late."""
    daemon = start_daemon(env=machine(tmp_path))
    seen = tmp_path / "seen.json"
    network_hook(make_hook, daemon.state_dir, seen)
    result = liveupctl(bus, "reboot", "--mode", "systemd")
    assert result.returncode == 0, result.stderr
    assert ended_calls(daemon) == ["5", "3"]
    assert sorted(json.loads(seen.read_text())["sessions_ended"]) == ["3", "5"]
    wait_until(lambda: report(bus)["state"] == "completed", "the rehearsal to complete")
    assert report(bus)["mode"] == "systemd"


def test_end_remote_sessions_false_keeps_them(
    start_daemon: DaemonFactory, bus: PrivateBus, make_hook: HookFactory, tmp_path: Path
) -> None:
    daemon = start_daemon("[exec]\nend-remote-sessions = false\n", env=machine(tmp_path))
    assert liveupctl(bus, "stage").returncode == 0
    assert liveupctl(bus, "exec").returncode == 0
    assert ended_calls(daemon) == []
    entry = report(bus)
    assert entry["state"] == "completed" and entry["sessions_ended"] == []
    assert "Remote sessions ended" not in liveupctl(bus, "show").stdout
    assert "sessions.kept" in daemon.log() and "end-remote-sessions is false" in daemon.log()


def test_a_session_logind_will_not_end_is_reported_and_the_update_goes_on(
    start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path
) -> None:
    env = machine(tmp_path, errors={"terminate_session": {"5": "EPERM"}})
    daemon = start_daemon(env=env)
    assert liveupctl(bus, "stage").returncode == 0
    assert liveupctl(bus, "exec").returncode == 0
    assert ended_calls(daemon) == ["3"]
    entry = report(bus)
    assert entry["state"] == "completed"
    assert [(s["id"], s["gone"], bool(s["error"])) for s in entry["sessions_ended"]] == [
        ("5", False, True),
        ("3", True, False),
    ]
    assert "session 5: root (sshd from 192.0.2.7), NOT ended: " in liveupctl(bus, "show").stdout
