"""Authorization: root always; anyone else as polkit (python-dbusmock's polkitd) says."""

from __future__ import annotations

import json
import re
import subprocess

from liveupd.kernel import quarantine
from tests.dbus.buses import NOBODY, PYTHON, REPO, Daemon, PrivateBus, Processes, as_user
from tests.dbus.fixtures import Polkit

M = "org.liveupd.LiveUpdate1.Manager."
DENIED = "org.freedesktop.DBus.Error.AccessDenied"
BUSY = "org.liveupd.LiveUpdate1.Error.Busy"
TARGET = "6.1.0-56-cloud-amd64"  # installed on the dry-run machine


def test_nobody_is_denied_when_polkit_says_no(
    daemon: Daemon, bus: PrivateBus, polkit: Polkit
) -> None:
    stage = bus.gdbus(M + "Stage", "", "", "", "{}", uid=NOBODY)
    assert stage.error == DENIED
    assert "uid 65534 is not allowed" in stage.message
    assert "org.liveupd.stage" in stage.message and "run the command as root" in stage.message
    quarantined = write_quarantine(daemon)
    for result in (
        bus.gdbus(M + "Execute", "{}", uid=NOBODY),
        bus.gdbus(M + "Cancel", uid=NOBODY),
        bus.gdbus(M + "ClearQuarantine", "''", uid=NOBODY),
    ):
        assert result.error == DENIED  # authorization comes before NotStaged
    assert quarantine.path_in(daemon.state_dir).read_text() == quarantined  # unchanged
    assert bus.call("CanLiveUpdate", uid=NOBODY) == ["no"]
    # Nothing was staged or loaded.
    assert bus.get("State") == "idle"
    assert "kexec_file_load" not in daemon.ops()
    assert "event=auth.denied" in daemon.log() and "uid=65534" in daemon.log()


def test_nobody_may_when_polkit_says_yes(daemon: Daemon, bus: PrivateBus, polkit: Polkit) -> None:
    polkit.allow("org.liveupd.stage", "org.liveupd.execute")
    assert bus.call("CanLiveUpdate", uid=NOBODY) == ["yes"]
    tid, path = bus.call("Stage", "sssa{sv}", "", "", "", "0", uid=NOBODY)
    assert bus.get("StagedTransition") == path
    assert bus.call("Execute", "a{sv}", "0", uid=NOBODY) == [tid, path]
    assert re.search(
        r"event=auth.allowed sender=\S+ uid=65534 action=org.liveupd.stage by=polkit", daemon.log()
    )


def test_nobody_is_denied_without_polkit(daemon: Daemon, bus: PrivateBus) -> None:
    """No polkit on the bus: a non-root caller is denied, and told why."""
    stage = bus.gdbus(M + "Stage", "", "", "", "{}", uid=NOBODY)
    assert stage.error == DENIED
    assert "polkit gave no answer" in stage.message
    assert bus.call("CanLiveUpdate", uid=NOBODY) == ["no"]
    assert bus.call("CanLiveUpdate") == ["yes"]  # root never asks


def test_root_never_asks_polkit(daemon: Daemon, bus: PrivateBus, polkit: Polkit) -> None:
    bus.call("Stage", "sssa{sv}", "", "", "", "0")  # polkit denies everything, root is root
    assert bus.get("State") == "staged"


def hammer(
    procs: Processes, bus: PrivateBus, uid: int, kind: str, count: int
) -> subprocess.Popen[str]:
    argv = [PYTHON, "-m", "tests.dbus.hammer", bus.address, kind, str(count)]
    return procs.start(as_user(uid, argv), cwd=REPO, stdout=subprocess.PIPE, text=True)


def test_concurrent_callers_of_different_uids_are_never_confused(
    daemon: Daemon, bus: PrivateBus, polkit: Polkit, procs: Processes
) -> None:
    """Root and nobody call at once, many calls in flight each: every answer is the caller's own.

    polkit answers slowly, so nobody's calls wait inside the daemon while
    root's calls come and go; a caller resolved from shared state instead of
    the call itself would give some root call nobody's answer or the reverse.
    """
    polkit.delay(0.005)
    count = 30
    uids = [0, NOBODY, 0, NOBODY, 0, NOBODY]
    runs = [hammer(procs, bus, uid, "can", count) for uid in uids]
    stages = [hammer(procs, bus, uid, "stage", 10) for uid in (NOBODY, 0, NOBODY, 0)]
    answers = [json.loads(p.communicate(timeout=120)[0]) for p in runs]
    staged = [json.loads(p.communicate(timeout=120)[0]) for p in stages]

    for uid, results in zip(uids, answers, strict=True):
        assert results == ["yes" if uid == 0 else "no"] * count, (uid, results)
    nobody_stages = staged[0] + staged[2]
    root_stages = staged[1] + staged[3]
    assert nobody_stages == [DENIED] * 20
    assert sorted(root_stages) == sorted(["ok"] + [BUSY] * 19)
    # The daemon's own account of each Stage: nobody denied 20 times (the first few
    # logged, the rest counted, the count logged as the daemon stops), root allowed 20 times.
    daemon.terminate()
    lines = daemon.log().splitlines()
    denied = [line for line in lines if "event=auth.denied" in line]
    allowed = [line for line in lines if "event=auth.allowed" in line]
    suppressed = [line for line in lines if "event=refusals.suppressed" in line]
    assert 1 <= len(denied) <= 3 and all(" uid=65534 " in line for line in denied)
    assert len(suppressed) == 1 and 'caller="uid 65534"' in suppressed[0]
    count = int(suppressed[0].split(" count=")[1].split()[0])
    assert len(denied) + count == 20
    assert len(allowed) == 20 and all(" uid=0 " in line for line in allowed)


def write_quarantine(daemon: Daemon) -> str:
    quarantine.add(
        daemon.state_dir,
        quarantine.QuarantinedKernel(
            release=TARGET, transition="T9", reason="came back on the old kernel", since=1.0
        ),
    )
    return quarantine.path_in(daemon.state_dir).read_text()


def test_clear_quarantine_is_authorized_as_stage(
    daemon: Daemon, bus: PrivateBus, polkit: Polkit
) -> None:
    write_quarantine(daemon)
    kernels, problem = bus.call("ListQuarantine", uid=NOBODY)  # reading is open to everyone
    assert [k[:3] for k in kernels] == [[TARGET, "", "T9"]] and problem == ""
    details = {row["release"]["data"]: row for row in bus.call("ListKernelDetails", uid=NOBODY)[0]}
    assert details[TARGET]["quarantine-transition"]["data"] == "T9"
    assert not details[TARGET]["stageable"]["data"]
    assert "is quarantined" in details[TARGET]["problem"]["data"]
    refused = bus.gdbus(M + "Stage", f"'{TARGET}'", "''", "''", "{}")
    assert refused.error == "org.liveupd.LiveUpdate1.Error.Quarantined", refused
    assert "liveupctl unquarantine" in refused.message
    polkit.allow("org.liveupd.stage")
    assert bus.call("ClearQuarantine", "s", "other", uid=NOBODY) == [[]]
    assert bus.call("ClearQuarantine", "s", TARGET, uid=NOBODY) == [[TARGET]]
    assert bus.call("ListQuarantine")[0] == []
    assert "event=quarantine.clear" in daemon.log() and "uid=65534" in daemon.log()
    too_long = bus.gdbus(M + "ClearQuarantine", "'" + "x" * 300 + "'", uid=NOBODY)
    assert too_long.error == "org.liveupd.LiveUpdate1.Error.InvalidArgument"
