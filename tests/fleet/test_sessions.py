"""Remote login sessions end before the network goes down (issue 20), on the dry-run machine.

The simulated machine lists logind's sessions (``"sessions"``) and says which
one every caller is in (``"caller_session"``); ending one is recorded in its
calls (``terminate_session``), and so is stopping or starting a unit
(``stop_unit``, ``start_unit``; ``"units"`` says which are active).  A quiesce
hook at 20 (where the shipped ``20-network`` takes the links down) copies the
machine's state when it runs: the sessions must already be ended then, and the
listeners stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from liveupd import schema
from liveupd.backends.dryrun import DEFAULT_MACHINE
from liveupd.config.load import load_config
from liveupd.errors import ConfigError
from liveupd.transition.journal import read, transitions_dir
from liveupd.transition.undo import StartUnitsUndo
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


# Debian 13's sshd without socket activation: ssh.socket is there, inactive.
UNITS = {"ssh.socket": "inactive", "ssh.service": "active"}


def machine(tmp_path: Path, **changes: Any) -> dict[str, str]:
    path = tmp_path / "machine.json"
    described = {
        **DEFAULT_MACHINE,
        "sessions": SESSIONS,
        "caller_session": "3",
        "units": UNITS,
        **changes,
    }
    path.write_text(json.dumps(described))
    return {"LIVEUPD_DRY_RUN_MACHINE": str(path)}


def network_hook(make_hook: HookFactory, daemon_state: Path, seen: Path) -> None:
    """A quiesce hook where the shipped network hook sits: it records the machine's state."""
    make_hook("20-network", "quiesce", f"cat {daemon_state / 'dry-run' / 'machine.json'} > {seen}")


def ended_calls(daemon: Daemon) -> list[str]:
    return [str(c["session"]) for c in daemon.calls() if c["op"] == "terminate_session"]


def unit_calls(daemon: Daemon) -> list[tuple[str, str]]:
    return [(c["op"], c["unit"]) for c in daemon.calls() if c["op"] in ("stop_unit", "start_unit")]


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


# ------------------------------------------- the remote-login listeners --


def test_active_listeners_are_stopped_before_the_sessions_are_ended(
    start_daemon: DaemonFactory, bus: PrivateBus, make_hook: HookFactory, tmp_path: Path
) -> None:
    """No new login can start between the sessions being ended and the network going
    down: the active listener units are stopped first, in the configured order."""
    units = {"ssh.socket": "active", "ssh.service": "active", "dropbear.service": "inactive"}
    daemon = start_daemon(
        '[exec]\nremote-login-units = ["ssh.socket", "dropbear.service", "ssh.service"]\n',
        env=machine(tmp_path, units=units),
    )
    seen = tmp_path / "seen.json"
    network_hook(make_hook, daemon.state_dir, seen)
    assert liveupctl(bus, "stage").returncode == 0
    assert liveupctl(bus, "exec").returncode == 0
    ops = [(c["op"], c.get("unit") or c.get("session")) for c in daemon.calls()]
    relevant = [o for o in ops if o[0] in ("stop_unit", "start_unit", "terminate_session")]
    assert relevant == [
        ("stop_unit", "ssh.socket"),  # only the active ones, in the configured order
        ("stop_unit", "ssh.service"),
        ("terminate_session", "5"),
        ("terminate_session", "3"),
    ]
    state = json.loads(seen.read_text())  # what the network hook found
    assert state["units"] == {**units, "ssh.socket": "inactive", "ssh.service": "inactive"}
    entry = report(bus)
    assert entry["state"] == "completed"
    assert entry["units_stopped"] == ["ssh.socket", "ssh.service"]
    shown = liveupctl(bus, "show").stdout
    assert "Remote-login listeners stopped (no new logins): ssh.socket, ssh.service\n" in shown
    # The undo record was journaled, durably, before the first stop.
    journal = transitions_dir(daemon.state_dir) / entry["id"] / "journal.json"
    (step,) = [s for s in read(journal).steps if s.key == "sessions:end-remote-sessions"]
    assert step.undo == StartUnitsUndo(units=("ssh.socket", "ssh.service"))
    log = (daemon.state_dir / "transitions" / entry["id"] / "log.jsonl").read_text()
    events = [json.loads(line)["event"] for line in log.splitlines()]
    assert events.index("sessions.listener-stopped") < events.index("sessions.ending")


def test_a_rollback_starts_the_stopped_listeners_again(
    start_daemon: DaemonFactory, bus: PrivateBus, make_hook: HookFactory, tmp_path: Path
) -> None:
    daemon = start_daemon(env=machine(tmp_path))
    make_hook("30-refuses", "quiesce", "echo no >&2; exit 1")
    assert liveupctl(bus, "stage").returncode == 0
    assert liveupctl(bus, "exec").returncode != 0
    # ssh.socket was not active: neither stopped nor started.
    assert unit_calls(daemon) == [("stop_unit", "ssh.service"), ("start_unit", "ssh.service")]
    entry = report(bus)
    assert entry["state"] == "failed"
    assert entry["units_stopped"] == ["ssh.service"]
    assert "sessions:end-remote-sessions" in entry["undone"]
    state = json.loads((daemon.state_dir / "dry-run" / "machine.json").read_text())
    assert state["units"]["ssh.service"] == "active"
    assert "event=sessions.listener-started" in daemon.log()


def test_after_a_crash_the_next_daemon_starts_them_again(
    start_daemon: DaemonFactory, bus: PrivateBus, make_hook: HookFactory, tmp_path: Path
) -> None:
    env = machine(tmp_path)
    first = start_daemon(env=env)
    blocked = tmp_path / "blocked"
    make_hook("30-blocks", "quiesce", f"touch {blocked}; exec sleep 60")
    assert liveupctl(bus, "stage").returncode == 0
    bus.call("Execute", "a{sv}", "1", "mode", "s", "direct")
    wait_until(blocked.exists, "the transition to be in its quiesce hook")
    assert unit_calls(first) == [("stop_unit", "ssh.service")]
    assert first.proc is not None
    first.proc.kill()  # a crash: the journal has the undo record
    first.proc.wait()
    second = start_daemon(env=env)
    assert unit_calls(second) == [("stop_unit", "ssh.service"), ("start_unit", "ssh.service")]
    entry = report(bus)
    assert entry["state"] == "aborted", entry
    assert "sessions:end-remote-sessions" in entry["undone"]


def test_a_listener_that_will_not_stop_is_a_warning_and_the_update_goes_on(
    start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path
) -> None:
    units = {"ssh.socket": "active", "ssh.service": "active"}
    env = machine(tmp_path, units=units, errors={"stop_unit": {"ssh.socket": "EIO"}})
    daemon = start_daemon(env=env)
    assert liveupctl(bus, "stage").returncode == 0
    assert liveupctl(bus, "exec").returncode == 0
    assert unit_calls(daemon) == [("stop_unit", "ssh.service")]  # the socket's failed
    assert ended_calls(daemon) == ["5", "3"]  # the sessions were still ended
    entry = report(bus)
    assert entry["state"] == "completed" and entry["units_stopped"] == ["ssh.service"]
    journal = transitions_dir(daemon.state_dir) / entry["id"] / "journal.json"
    (step,) = [s for s in read(journal).steps if s.key == "sessions:end-remote-sessions"]
    (warning,) = step.warnings
    assert warning.startswith("could not stop ssh.socket (stop_unit ssh.socket: ")
    assert "new remote logins may start" in warning
    assert step.undo == StartUnitsUndo(units=("ssh.service",))  # narrowed to the stopped


def test_listeners_systemd_cannot_tell_about_are_a_warning_and_the_update_goes_on(
    start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path
) -> None:
    env = machine(tmp_path, errors={"list_units": {"ssh.service": "EIO"}})
    daemon = start_daemon(env=env)
    assert liveupctl(bus, "stage").returncode == 0
    assert liveupctl(bus, "exec").returncode == 0
    assert unit_calls(daemon) == []  # none stopped: it is not known which are active
    assert ended_calls(daemon) == ["5", "3"]  # the sessions were still ended
    entry = report(bus)
    assert entry["state"] == "completed" and entry["units_stopped"] == []
    journal = transitions_dir(daemon.state_dir) / entry["id"] / "journal.json"
    (step,) = [s for s in read(journal).steps if s.key == "sessions:end-remote-sessions"]
    (warning,) = step.warnings
    assert warning.startswith("cannot tell which of ssh.socket ssh.service are active (")
    assert warning.endswith("): none stopped")
    assert step.undo is None


def test_remote_login_units_empty_stops_nothing(
    start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path
) -> None:
    daemon = start_daemon("[exec]\nremote-login-units = []\n", env=machine(tmp_path))
    assert liveupctl(bus, "stage").returncode == 0
    assert liveupctl(bus, "exec").returncode == 0
    assert unit_calls(daemon) == []
    assert ended_calls(daemon) == ["5", "3"]
    assert report(bus)["units_stopped"] == []
    assert "remote-login-units is []" in daemon.log()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('["ssh.socket", "-x.service"]', "'-x.service': expected a systemd .service or .socket"),
        ('["ssh.target"]', "'ssh.target': expected a systemd .service or .socket unit name"),
        ('["../ssh.service"]', "expected a systemd .service or .socket unit name"),
        ('["sshd@.service"]', "expected a systemd .service or .socket unit name"),
        ('["ssh.service", "ssh.service"]', "expected each unit once"),
        ('"ssh.service"', "exec.remote-login-units: Input should be a valid list"),
    ],
)
def test_remote_login_units_are_validated(tmp_path: Path, value: str, expected: str) -> None:
    conf = tmp_path / "liveupd.conf"
    conf.write_text(f"[exec]\nremote-login-units = {value}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(conf)
    assert f"{conf}: exec.remote-login-units" in raised.value.message
    assert expected in raised.value.message


def test_a_start_units_record_is_validated_when_read() -> None:
    assert schema.load(StartUnitsUndo, {"units": ["ssh.socket"]}).units == ("ssh.socket",)
    for bad in (["../../bin/sh.service"], ["--now.service"], ["x.service\n"], "ssh.service"):
        with pytest.raises(ValueError):
            schema.load(StartUnitsUndo, {"units": bad})
