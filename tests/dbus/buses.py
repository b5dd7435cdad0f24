"""Private D-Bus daemons, the liveupd daemon in dry-run mode, and real clients.

Everything here starts real processes (dbus-daemon, liveupd, busctl, gdbus,
python-dbusmock, liveupctl) and waits on what they report, never on fixed
sleeps: READY=1 on a notify socket, a bus name appearing, a line in a file,
each with a deadline.  Every process is tracked and killed when the test ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
# The console scripts of the package (pyproject.toml), as users run them.
LIVEUPCTL = str(Path(sys.executable).with_name("liveupctl"))
NOBODY = 65534
BUS_NAME = "org.liveupd.LiveUpdate1"
OBJECT_PATH = "/org/liveupd/LiveUpdate1"
MANAGER = "org.liveupd.LiveUpdate1.Manager"
TRANSITION = "org.liveupd.LiveUpdate1.Transition"
DEADLINE = 30.0

SESSION_STYLE = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <!-- any uid may connect (tests run clients as nobody) -->
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def wait_until(
    check: Callable[[], Any], what: str, deadline: float = DEADLINE, interval: float = 0.02
) -> Any:
    """Poll ``check`` until it returns something truthy, or fail after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline:.0f} s waiting for {what}")
        time.sleep(interval)


def as_user(uid: int | None, argv: Sequence[str]) -> list[str]:
    if uid is None or uid == os.geteuid():
        return list(argv)
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]


class Processes:
    """Every process a test started; all are killed at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []
        self.dirs: list[Path] = []  # removed once every process is gone

    def start(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(list(argv), start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> int:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                return proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                return proc.wait(10)
        with contextlib.suppress(ProcessLookupError):  # leftovers in its group
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------ buses --


class PrivateBus:
    """A dbus-daemon of our own; its socket lives in a directory every uid can reach."""

    def __init__(self, procs: Processes, config: str | None = None) -> None:
        self.procs = procs
        self.dir = Path(tempfile.mkdtemp(prefix="liveupd-bus-"))
        procs.dirs.append(self.dir)
        self.dir.chmod(0o755)
        self.socket = self.dir / "bus"
        self.config_file = self.dir / "bus.conf"
        self.config_file.write_text((config or SESSION_STYLE).format(socket=self.socket))
        self.proc = procs.start(
            [
                "dbus-daemon",
                f"--config-file={self.config_file}",
                "--nofork",
                "--nopidfile",
                "--nosyslog",
                "--print-address=1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], DEADLINE)
        assert ready, "dbus-daemon did not print its address"
        self.address = self.proc.stdout.readline().strip()
        assert self.address.startswith("unix:"), f"dbus-daemon failed: {self.address!r}"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["DBUS_SYSTEM_BUS_ADDRESS"] = self.address
        env["DBUS_SESSION_BUS_ADDRESS"] = self.address
        env.update(extra)
        return env

    def busctl(self, *args: str, uid: int | None = None, check: bool = True) -> str:
        """Run busctl on this bus; returns stdout (raises with stderr if ``check``)."""
        out = subprocess.run(
            as_user(uid, ["busctl", f"--address={self.address}", *args]),
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
        if check and out.returncode != 0:
            raise BusctlError(out.stderr.strip(), out.returncode)
        return out.stdout

    def busctl_json(self, *args: str, uid: int | None = None) -> Any:
        out = self.busctl("--json=short", *args, uid=uid)
        return json.loads(out) if out.strip() else {"data": []}

    def call(self, member: str, signature: str = "", *args: str, uid: int | None = None) -> Any:
        """A Manager method, through busctl; returns the reply's data list."""
        sig = [signature, *args] if signature else []
        reply = self.busctl_json("call", BUS_NAME, OBJECT_PATH, MANAGER, member, *sig, uid=uid)
        return reply["data"]

    def gdbus_argv(self, method: str, *args: str, path: str = OBJECT_PATH) -> list[str]:
        """The gdbus command line calling ``method`` (``Interface.Member``) on the daemon."""
        return [
            "gdbus",
            "call",
            "--address",
            self.address,
            "--dest",
            BUS_NAME,
            "--object-path",
            path,
            "--method",
            method,
            *args,
        ]

    def gdbus(
        self, method: str, *args: str, path: str = OBJECT_PATH, uid: int | None = None
    ) -> GdbusResult:
        """Call ``method`` (``Interface.Member``) with gdbus, which names D-Bus errors."""
        out = subprocess.run(
            as_user(uid, self.gdbus_argv(method, *args, path=path)),
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
        return GdbusResult(out.returncode, out.stdout.strip(), out.stderr.strip())

    def get(self, prop: str, *, path: str = OBJECT_PATH, interface: str = MANAGER) -> Any:
        return self.busctl_json("get-property", BUS_NAME, path, interface, prop)["data"]

    def has_owner(self, name: str) -> bool:
        out = self.busctl(
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "NameHasOwner",
            "s",
            name,
        )
        return out.strip() == "b true"

    def wait_for_name(self, name: str) -> None:
        wait_until(lambda: self.has_owner(name), f"{name} on the bus")


class GdbusResult:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    @property
    def error(self) -> str | None:
        """The D-Bus error name of a failed call (gdbus prints GDBus.Error:NAME: text)."""
        marker = "GDBus.Error:"
        if self.returncode == 0 or marker not in self.stderr:
            return None
        return self.stderr.split(marker, 1)[1].split(":", 1)[0]

    @property
    def message(self) -> str:
        marker = "GDBus.Error:"
        if marker not in self.stderr:
            return self.stderr
        return self.stderr.split(marker, 1)[1].split(":", 1)[1].strip()


class BusctlError(Exception):
    def __init__(self, stderr: str, returncode: int) -> None:
        super().__init__(stderr)
        self.stderr = stderr
        self.returncode = returncode


def system_style_config(policy_file: Path) -> str:
    """The host's system.conf made private (our socket; no fork, user, pidfile) + ``policy_file``.

    It keeps system.conf's default policy exactly (deny own, deny method calls
    unless a service file punches a hole) so ``policy_file`` is tested as a
    real system bus would apply it.
    """
    source = ET.parse("/usr/share/dbus-1/system.conf").getroot()
    root = ET.Element("busconfig")
    for child in source:
        if child.tag in ("type", "auth", "policy", "limit"):
            root.append(child)
    listen = ET.Element("listen")
    listen.text = "unix:path={socket}"
    root.insert(1, listen)
    include = ET.SubElement(root, "include")
    include.text = str(policy_file)
    return ET.tostring(root, encoding="unicode")


# ----------------------------------------------------------------- daemon --


class Daemon:
    """liveupd --dry-run on a private bus; started() returns once it sent READY=1."""

    def __init__(
        self,
        procs: Processes,
        bus: PrivateBus,
        config: Path,
        state_dir: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.procs = procs
        self.bus = bus
        self.config = config
        self.state_dir = state_dir
        self.extra_env = env or {}
        self.log_file = state_dir.parent / "daemon.log"
        self.proc: subprocess.Popen[Any] | None = None
        self.notifications: list[str] = []

    def start(self, *, wait: bool = True) -> Daemon:
        """Start it; with ``wait``, return once it sent READY=1 (else once it is spawned)."""
        notify_path = self.bus.dir / f"notify-{time.monotonic_ns()}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(notify_path))
        argv = [
            PYTHON,
            "-m",
            "liveupd.daemon.main",
            "--dry-run",
            "--bus",
            self.bus.address,
            "--config",
            str(self.config),
            "--state-dir",
            str(self.state_dir),
        ]
        env = self.bus.env(NOTIFY_SOCKET=str(notify_path), **self.extra_env)
        with self.log_file.open("a") as log:
            self.proc = self.procs.start(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        if not wait:
            sock.close()
            return self
        try:
            end = time.monotonic() + DEADLINE
            while not any(n.startswith("READY=1") for n in self.notifications):
                if self.proc.poll() is not None:
                    raise AssertionError(f"liveupd exited ({self.proc.returncode}):\n{self.log()}")
                if time.monotonic() > end:
                    raise AssertionError(f"liveupd sent no READY=1:\n{self.log()}")
                ready, _, _ = select.select([sock], [], [], 0.2)
                if ready:
                    self.notifications.append(sock.recv(4096).decode())
        finally:
            sock.close()
            notify_path.unlink(missing_ok=True)
        return self

    def stop(self) -> int:
        assert self.proc is not None
        return self.procs.stop(self.proc)

    def terminate(self) -> int:
        """SIGTERM to the daemon alone, as systemd's KillMode=mixed stops it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(DEADLINE)

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def calls(self) -> list[dict[str, Any]]:
        path = self.state_dir / "dry-run" / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def ops(self) -> list[str]:
        return [str(c["op"]) for c in self.calls()]


# ---------------------------------------------------------------- clients --


class Recorder:
    """A client that records liveupd's signals (tests/dbus/recorder.py), one JSON line each."""

    def __init__(self, procs: Processes, bus: PrivateBus, out: Path) -> None:
        self.out = out
        self.proc = procs.start(
            [PYTHON, "-m", "tests.dbus.recorder", bus.address, str(out)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: out.exists() and out.read_text().startswith("ready"), "the recorder")

    def signals(self) -> list[dict[str, Any]]:
        lines = self.out.read_text().splitlines()[1:]
        return [json.loads(line) for line in lines if line.strip()]

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((s for s in self.signals() if predicate(s)), None)

        result: dict[str, Any] = wait_until(found, what)
        return result


def liveupctl(
    bus: PrivateBus,
    *args: str,
    uid: int | None = None,
    env: dict[str, str] | None = None,
    timeout: float = DEADLINE,
) -> subprocess.CompletedProcess[str]:
    argv = [LIVEUPCTL, "--bus", bus.address, *args]
    return subprocess.run(
        as_user(uid, argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=bus.env(**(env or {})),
        cwd=REPO,
        check=False,
    )


def dbusmock(procs: Processes, bus: PrivateBus, template: str, name: str) -> None:
    """Start a python-dbusmock template on ``bus`` and wait for its name."""
    procs.start(
        [PYTHON, "-m", "dbusmock", "--system", "--template", template],
        env=bus.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    bus.wait_for_name(name)


def have(program: str) -> bool:
    return shutil.which(program) is not None


@contextlib.contextmanager
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.stop_all()
