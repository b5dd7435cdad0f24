"""GuestVM: boot the cached image in QEMU and drive it through the guest agent.

    with GuestVM(image, kernel=image.kernel_a.release) as vm:
        vm.boot_info()                      # BootInfo(release, boot_id, uptime)
        vm.run("uname -r").stdout
        vm.run(["id", "-u"], user="tester")
        vm.spawn("kexec -e")                # detached: the guest goes away
        vm.wait_for_new_boot(old_boot_id)   # works for kexec and for a firmware reboot

Every call has a deadline; nothing sleeps to synchronise. QEMU is killed when the
context exits, whatever happened.
"""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from tests.vm import runlock
from tests.vm.agent_client import AgentClient, AgentClosedError, AgentError, AgentTimeoutError
from tests.vm.image import GuestImage
from tests.vm.qemu import BASE_APPEND, QemuConfig, QemuProcess, create_overlay
from tests.vm.rerun_defects import current_module, note_defect
from tests.vm.serial import BootMarker, ConsoleClosedError, SerialConsole

# Deadlines: about 25x the medians measured under TCG (docs/vm-harness.md).
BOOT_TIMEOUT = 300.0  # QEMU start to boot marker (median ~10 s)
TRANSITION_TIMEOUT = 360.0  # kexec or reboot request to the next marker (median ~13 s)
COMMAND_TIMEOUT = 120.0
MAX_LIFETIME = 3600.0  # hard limit on one QEMU process

Command = str | Sequence[str]

# The guests running now, and the kernel oopses of those stopped since the current
# test began: a failed test whose guest oopsed is run again with its module
# (conftest.py, rerun_defects.py).
_LIVE: weakref.WeakSet[GuestVM] = weakref.WeakSet()
_STOPPED_OOPSES: list[str] = []


def kernel_oopses() -> list[str]:
    """The oopses (console lines) of the running guests and of those stopped since."""
    live = [o.line for vm in list(_LIVE) if vm.console for o in vm.console.oopses]
    return [*_STOPPED_OOPSES, *live]


def forget_stopped_oopses() -> None:
    _STOPPED_OOPSES.clear()


@dataclass(frozen=True)
class BootInfo:
    release: str  # uname -r
    boot_id: str  # /proc/sys/kernel/random/boot_id
    uptime: float  # seconds


@dataclass(frozen=True)
class RunResult:
    cmd: Command
    rc: int | None  # None when the command timed out; -N when killed by signal N
    stdout_bytes: bytes
    stderr_bytes: bytes
    timed_out: bool
    boot_id: str
    duration: float

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode(errors="replace")

    @property
    def ok(self) -> bool:
        return self.rc == 0


class VMFactory(Protocol):
    """The `vm_factory` fixture: boot a GuestVM that is killed when the test ends."""

    def __call__(
        self, kernel: str | None = None, append_extra: str = "", **kwargs: Any
    ) -> GuestVM: ...


class GuestCommandError(AssertionError):
    def __init__(self, result: RunResult, user: str | None) -> None:
        self.result = result
        how = "timed out" if result.timed_out else f"exited with {result.rc}"
        who = f" (as {user})" if user else ""
        super().__init__(
            f"guest command {_show(result.cmd)}{who} {how}\n"
            f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
        )


class GuestBootError(RuntimeError):
    pass


class EmulatorDefectError(RuntimeError):
    """A boot hit a known defect of QEMU's TCG (tests/vm/serial.py): not the guest's fault.

    `make test` reruns a scenario that raises it once (pytest-rerunfailures'
    --only-rerun EmulatorDefectError); the report names the console line.
    """


def _show(cmd: Command) -> str:
    return cmd if isinstance(cmd, str) else shlex.join(cmd)


def _make_run_dir() -> Path:
    # The sockets live here: a unix socket path must fit in 108 bytes.
    base = tempfile.gettempdir()
    if len(base) > 60:
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix="liveupd-vm-", dir=base))


def _log(msg: str) -> None:
    print(f"[vm {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class GuestVM:
    """One QEMU guest booted from `image` with `kernel` (a release; default kernel A)."""

    def __init__(
        self,
        image: GuestImage,
        kernel: str | None = None,
        append_extra: str = "",
        *,
        no_reboot: bool = False,
        memory_mb: int = 1024,
        boot_timeout: float = BOOT_TIMEOUT,
        max_lifetime: float = MAX_LIFETIME,
        keep_run_dir: bool = False,
        extra_qemu_args: Sequence[str] = (),
        installed: bool = False,
        host_forwards: Sequence[tuple[int, int]] = (),
    ) -> None:
        self.image = image
        # True: boot an overlay of project.installed_root() (the .deb already installed).
        self.installed = installed
        self.kernel = image.kernel(kernel)
        self.append = f"{BASE_APPEND} {append_extra}".strip()
        self.boot_timeout = boot_timeout
        self.keep_run_dir = keep_run_dir or bool(os.environ.get("LIVEUPD_VM_KEEP"))
        self.run_dir = _make_run_dir()
        self.serial_log = self.run_dir / "serial.log"
        self._config = QemuConfig(
            kernel=self.kernel.vmlinuz,
            initrd=self.kernel.initrd,
            append=self.append,
            root_disk=self.run_dir / "root.qcow2",
            data_disk=self.run_dir / "data.qcow2",
            memory_mb=memory_mb,
            no_reboot=no_reboot,
            extra_args=list(extra_qemu_args),
            host_forwards=list(host_forwards),
        )
        self.qemu = QemuProcess(self._config, self.run_dir, max_lifetime)
        self.console: SerialConsole | None = None
        self.agent: AgentClient | None = None
        self.boot: BootInfo | None = None  # the boot the harness last saw
        self.boot_seconds: float | None = None  # QEMU start to first marker
        self._run_locked = False

    # -- lifecycle ---------------------------------------------------------------
    def __enter__(self) -> GuestVM:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            print(self.failure_report(journal=True), file=sys.stderr, flush=True)
        self.stop()
        if exc is None:
            self.cleanup()  # on failure the run dir (serial log) stays for a post-mortem

    def start(self) -> BootInfo:
        """Boot the guest; returns once its marker is seen and its agent answers."""
        self._run_locked = runlock.acquire()
        if self.installed:
            from tests.vm.project import installed_root

            create_overlay(installed_root(self.image), self._config.root_disk, "qcow2")
        else:
            create_overlay(self.image.root_disk, self._config.root_disk)
        create_overlay(self.image.data_disk, self._config.data_disk)
        t0 = time.monotonic()
        self.qemu.start()
        assert self.qemu.serial_conn is not None and self.qemu.agent_conn is not None
        self.console = SerialConsole(self.qemu.serial_conn, self.serial_log)
        _LIVE.add(self)
        self.agent = AgentClient(self.qemu.agent_conn)
        marker = self._wait_marker(lambda m: True, t0 + self.boot_timeout, "the first boot")
        self.boot_seconds = marker.seen_at - t0
        self.boot = self._agent_boot(marker, time.monotonic() + self.boot_timeout)
        _log(
            f"booted {self.boot.release} in {self.boot_seconds:.1f} s"
            f" (boot_id {self.boot.boot_id}, run dir {self.run_dir})"
        )
        return self.boot

    def stop(self) -> None:
        """Kill QEMU and clean up. Safe to call more than once."""
        try:
            self.qemu.stop()
            for part in (self.agent, self.console):
                if part is not None:
                    part.close()
        finally:
            if self in _LIVE and self.console is not None:
                _LIVE.discard(self)
                _STOPPED_OOPSES.extend(o.line for o in self.console.oopses)
            if self._run_locked:
                self._run_locked = False
                runlock.release()
        if not self.keep_run_dir:
            # Keep the serial log for a post-mortem; drop the big overlays.
            for name in ("root.qcow2", "data.qcow2"):
                (self.run_dir / name).unlink(missing_ok=True)

    def cleanup(self) -> None:
        """Remove the run directory (the serial log too)."""
        if not self.keep_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- booting -----------------------------------------------------------------
    def _wait_marker(
        self,
        predicate: Callable[[BootMarker], bool],
        deadline: float,
        what: str,
        start: int = 0,
    ) -> BootMarker:
        assert self.console is not None
        try:
            marker = self.console.wait_for_marker(deadline, predicate, start)
        except ConsoleClosedError:
            self.qemu.stop()  # reap it, for its exit code in the report
            raise GuestBootError(
                f"QEMU exited while waiting for {what}\n{self.failure_report()}"
            ) from None
        if marker is None:
            raise GuestBootError(
                f"no boot marker for {what} before the deadline\n{self.failure_report()}"
            )
        return marker

    def _agent_boot(self, marker: BootMarker, deadline: float) -> BootInfo:
        """Ping the agent until a reply comes from the boot that printed `marker`.

        A request sent just before a reboot can be swallowed by the dying guest, so an
        unanswered ping is sent again (each attempt has its own short deadline).
        """
        assert self.agent is not None
        attempt_timeout = 15.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise GuestBootError(
                    f"the guest agent of boot {marker.boot_id} did not answer\n"
                    f"{self.failure_report()}"
                )
            req_id = self.agent.send("ping")
            try:
                reply = self.agent.wait_reply(req_id, min(deadline, now + attempt_timeout))
            except AgentTimeoutError:
                self.agent.forget(req_id)
                continue
            if reply.get("boot_id") == marker.boot_id:
                return BootInfo(
                    release=str(reply["release"]),
                    boot_id=str(reply["boot_id"]),
                    uptime=float(reply["uptime"]),
                )
            # An answer from the previous boot, still shutting down: wait for the new
            # agent's start announcement or the next attempt's reply.

    def wait_for_new_boot(self, old_boot_id: str, timeout: float = TRANSITION_TIMEOUT) -> BootInfo:
        """Wait until a boot other than `old_boot_id` is up (marker + agent answering).

        Works for a kexec and for a firmware reboot alike.
        """
        deadline = time.monotonic() + timeout
        assert self.console is not None
        # Only markers printed after the old boot's own marker count.
        seen = self.console.markers
        start = max((i + 1 for i, m in enumerate(seen) if m.boot_id == old_boot_id), default=0)
        marker = self._wait_marker(
            lambda m: m.boot_id != old_boot_id, deadline, f"a boot after {old_boot_id}", start
        )
        self._raise_on_emulator_defect(start, self.console.markers.index(marker, start))
        self.boot = self._agent_boot(marker, deadline)
        _log(f"new boot: {self.boot.release} (boot_id {self.boot.boot_id})")
        return self.boot

    def _raise_on_emulator_defect(self, first: int, last: int) -> None:
        """Raise when the console showed a TCG defect between markers `first` and `last`."""
        assert self.console is not None
        seen = [d for d in self.console.defects if first <= d.after_markers <= last]
        if seen:
            note_defect(current_module())  # make test reruns the module (rerun_defects.py)
            raise EmulatorDefectError(
                f"the guest kernel hit a QEMU TCG defect before boot marker {last}: "
                f"{seen[0].line!r} (serial log: {self.serial_log})"
            )

    def boot_info(self, timeout: float = COMMAND_TIMEOUT) -> BootInfo:
        reply = self.agent_request("ping", {}, timeout)
        return BootInfo(
            release=str(reply["release"]),
            boot_id=str(reply["boot_id"]),
            uptime=float(reply["uptime"]),
        )

    # -- agent operations ----------------------------------------------------------
    def agent_request(self, op: str, fields: dict[str, Any], wait: float) -> dict[str, Any]:
        """A raw agent request (see tests/vm/guest/agent.py for the operations)."""
        assert self.agent is not None, "the VM is not running"
        return self.agent.request(op, fields, wait)

    def run(
        self,
        cmd: Command,
        *,
        user: str | None = None,
        timeout: float = COMMAND_TIMEOUT,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        input: bytes | str | None = None,
        cwd: str | None = None,
    ) -> RunResult:
        """Run `cmd` in the guest (a str goes through /bin/sh -c) and wait for it.

        `timeout` is the command's own limit in the guest; the harness waits a little
        longer for the reply.
        """
        fields: dict[str, Any] = {"timeout": timeout, "user": user, "cwd": cwd}
        if isinstance(cmd, str):
            fields["shell"] = cmd
        else:
            fields["argv"] = list(cmd)
        if env:
            fields["env"] = dict(env)
        if input is not None:
            data = input.encode() if isinstance(input, str) else input
            fields["stdin_b64"] = base64.b64encode(data).decode()
        reply = self.agent_request("run", fields, timeout + 30.0)
        result = RunResult(
            cmd=cmd,
            rc=reply["rc"],
            stdout_bytes=base64.b64decode(reply["stdout_b64"]),
            stderr_bytes=base64.b64decode(reply["stderr_b64"]),
            timed_out=bool(reply["timed_out"]),
            boot_id=str(reply["boot_id"]),
            duration=float(reply["duration"]),
        )
        if check and result.rc != 0:
            raise GuestCommandError(result, user)
        return result

    def spawn(
        self,
        cmd: Command,
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> str:
        """Start `cmd` detached (a transient systemd unit) and return its unit name.

        For the jump: the command that kexecs or reboots must not be waited on.
        """
        fields: dict[str, Any] = {"user": user, "env": dict(env or {})}
        if isinstance(cmd, str):
            fields["shell"] = cmd
        else:
            fields["argv"] = list(cmd)
        reply = self.agent_request("spawn", fields, timeout)
        return str(reply.get("unit") or reply.get("pid"))

    def read_file(self, path: str, timeout: float = COMMAND_TIMEOUT) -> bytes:
        reply = self.agent_request("read_file", {"path": path}, timeout)
        return base64.b64decode(reply["data_b64"])

    def read_text(self, path: str, timeout: float = COMMAND_TIMEOUT) -> str:
        return self.read_file(path, timeout).decode()

    def write_file(
        self,
        path: str,
        data: bytes | str,
        mode: int = 0o644,
        *,
        user: str | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        """Write `data` to `path` in the guest (atomically; owned by `user` if given)."""
        raw = data.encode() if isinstance(data, str) else data
        fields = {"path": path, "data_b64": base64.b64encode(raw).decode(), "mode": mode}
        self.agent_request("write_file", {**fields, "user": user}, timeout)

    # -- the project -----------------------------------------------------------------
    def install_project(self, src: Path | None = None, timeout: float = 600.0) -> None:
        """Install the project's current working tree in the guest (see project.py)."""
        from tests.vm.project import install_project

        install_project(self, src, timeout)

    # -- QEMU ------------------------------------------------------------------------
    def qmp(self, command: str, **arguments: Any) -> Any:
        return self.qemu.qmp(command, **arguments)

    def wait_exit(self, timeout: float) -> int:
        """Wait for QEMU to exit by itself (with no_reboot=True, a panic or a reboot)."""
        return self.qemu.wait(timeout)

    # -- diagnostics -----------------------------------------------------------------
    def serial_tail(self, lines: int = 60) -> str:
        return self.console.tail(lines) if self.console else ""

    def journal_tail(self, lines: int = 80, timeout: float = 15.0) -> str:
        """The current boot's journal tail, if the guest still answers (else why not)."""
        if self.agent is None or self.qemu.poll() is not None:
            return "(guest not running)"
        try:
            result = self.run(
                ["journalctl", "-b", "--no-pager", "-o", "short-monotonic", "-n", str(lines)],
                timeout=timeout,
                check=False,
            )
        except (AgentError, AgentTimeoutError, AgentClosedError) as exc:
            return f"(no journal: {exc})"
        return result.stdout

    def failure_report(self, lines: int = 60, journal: bool = False) -> str:
        """A post-mortem: console tail, QEMU's state and stderr, optionally the journal.

        `journal=True` asks the agent (with a short deadline) for the journal's tail.
        """
        parts = [
            f"=== liveupd VM (kernel {self.kernel.release}, run dir {self.run_dir}) ===",
            f"QEMU pid {self.qemu.pid}, exit code {self.qemu.poll()}"
            + (" (killed by the harness's hard deadline)" if self.qemu.killed_by_watchdog else ""),
            f"--- serial console, last {lines} lines ({self.serial_log}) ---",
            self.serial_tail(lines),
        ]
        qemu_err = self.qemu.stderr_tail()
        if qemu_err:
            parts += ["--- QEMU stderr ---", qemu_err]
        if journal:
            parts += ["--- guest journal (this boot) ---", self.journal_tail()]
        return "\n".join(parts)
