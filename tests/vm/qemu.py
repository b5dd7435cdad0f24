"""One QEMU process: command line, sockets, hard deadline, and a sure death.

The harness listens on three unix sockets in the run directory and QEMU connects to
each as a client at start-up (serial console, agent port, QMP), so nothing the guest
prints is lost and no connect-retry loop is needed. QEMU is killed by its PID when the
machine is stopped, when its hard deadline passes (watchdog thread), and when the
harness process dies (PR_SET_PDEATHSIG).

Fixed machine layout (tests may rely on it):

    PCI 0000:00:03.0  virtio-net-pci, MAC 52:54:00:12:34:56, QEMU user net (DHCP;
                      host_forwards: 127.0.0.1:PORT on the host -> a guest port)
    PCI 0000:00:04.0  virtio-blk-pci, root disk (/dev/vda, ext4 label liveupd-root)
    PCI 0000:00:05.0  virtio-blk-pci, data disk (/dev/vdb, ext4 label liveupd-data, /data)
    PCI 0000:00:06.0  virtio-serial-pci, port org.liveupd.test.agent
    PCI 0000:00:07.0  virtio-rng-pci
    ttyS0             serial console (the boot marker)
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QEMU = "qemu-system-x86_64"
# Every feature TCG emulates but the AVX family: with AVX2 present, the guest's
# libraries (glibc's string and memory functions among them) take AVX2 code paths,
# which TCG emulates more slowly than the SSE2 ones.
# Measured (QEMU 7.2, 5 runs each): importing the daemon and `liveupd --verify` in the
# guest took 8.2 s (median) with "max" and 6.0 s without AVX; boots were the same.
GUEST_CPU = "max,-avx,-avx2,-fma,-f16c"
NIC_PCI_ADDRESS = "0000:00:03.0"
NIC_MAC = "52:54:00:12:34:56"
ROOT_DISK_PCI_ADDRESS = "0000:00:04.0"
DATA_DISK_PCI_ADDRESS = "0000:00:05.0"
AGENT_PORT_NAME = "org.liveupd.test.agent"
BASE_APPEND = "root=/dev/vda ro console=ttyS0 panic=-1 quiet loglevel=4"
PR_SET_PDEATHSIG = 1


class QemuError(RuntimeError):
    pass


@dataclass
class QemuConfig:
    kernel: Path
    initrd: Path
    append: str
    root_disk: Path  # qcow2 overlay (per run)
    data_disk: Path  # qcow2 overlay (per run)
    memory_mb: int = 1024
    smp: int = 2
    no_reboot: bool = False
    extra_args: list[str] = field(default_factory=list)
    # (host port, guest port): TCP forwarded from 127.0.0.1 on the host to the guest.
    host_forwards: list[tuple[int, int]] = field(default_factory=list)

    def argv(self, run_dir: Path) -> list[str]:
        argv = [
            QEMU,
            "-name",
            "liveupd-test",
            "-machine",
            "q35",
            "-accel",
            "tcg,tb-size=128",
            "-cpu",
            GUEST_CPU,
            "-smp",
            str(self.smp),
            "-m",
            str(self.memory_mb),
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-vga",
            "none",
            "-kernel",
            str(self.kernel),
            "-initrd",
            str(self.initrd),
            "-append",
            self.append,
            # serial console -> harness (QEMU is the client of our listening socket)
            "-chardev",
            f"socket,id=ser0,path={run_dir / 'serial.sock'}",
            "-serial",
            "chardev:ser0",
            # QMP
            "-chardev",
            f"socket,id=qmp0,path={run_dir / 'qmp.sock'}",
            "-mon",
            "chardev=qmp0,mode=control",
            # network at a fixed PCI address and MAC
            "-netdev",
            ",".join(
                ["user,id=n0"] + [f"hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in self.host_forwards]
            ),
            "-device",
            f"virtio-net-pci,netdev=n0,mac={NIC_MAC},addr=0x3",
            # disks
            "-drive",
            f"file={self.root_disk},if=none,id=root,format=qcow2,cache=unsafe,discard=unmap",
            "-device",
            "virtio-blk-pci,drive=root,addr=0x4,serial=liveupd-root",
            "-drive",
            f"file={self.data_disk},if=none,id=data,format=qcow2,cache=unsafe,discard=unmap",
            "-device",
            "virtio-blk-pci,drive=data,addr=0x5,serial=liveupd-data",
            # agent channel
            "-chardev",
            f"socket,id=agent0,path={run_dir / 'agent.sock'}",
            "-device",
            "virtio-serial-pci,id=vser0,addr=0x6",
            "-device",
            f"virtserialport,bus=vser0.0,chardev=agent0,name={AGENT_PORT_NAME}",
            "-object",
            "rng-random,id=rng0,filename=/dev/urandom",
            "-device",
            "virtio-rng-pci,rng=rng0,addr=0x7",
        ]
        if self.no_reboot:
            argv.append("-no-reboot")
        return argv + self.extra_args


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def qemu_unusable_reason(timeout: float = 60.0) -> str | None:
    """None if QEMU can start a q35/TCG machine here, else why not."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (apt-get install qemu-system-x86)"
    if shutil.which("qemu-img") is None:
        return "qemu-img is not installed (apt-get install qemu-utils)"
    cmds = '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n'
    try:
        proc = subprocess.run(
            [
                QEMU,
                "-machine",
                "q35",
                "-accel",
                "tcg",
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-S",
                "-qmp",
                "stdio",
            ],
            input=cmds,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{QEMU} cannot start: {exc}"
    if proc.returncode != 0:
        return f"{QEMU} cannot start (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
    return None


class QemuProcess:
    """A running QEMU. `start()` returns once QEMU has connected to all three sockets."""

    def __init__(self, config: QemuConfig, run_dir: Path, max_lifetime: float) -> None:
        self.config = config
        self.run_dir = run_dir
        self.max_lifetime = max_lifetime
        self.stderr_path = run_dir / "qemu.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.serial_conn: socket.socket | None = None
        self.agent_conn: socket.socket | None = None
        self._qmp: socket.socket | None = None
        self._qmp_file: Any = None
        self._watchdog: threading.Timer | None = None
        self.killed_by_watchdog = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _listen(self, name: str) -> socket.socket:
        path = self.run_dir / name
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.listen(1)
        return sock

    def start(self, timeout: float = 60.0) -> None:
        listeners = {name: self._listen(f"{name}.sock") for name in ("serial", "qmp", "agent")}
        argv = self.config.argv(self.run_dir)
        (self.run_dir / "qemu.cmdline").write_text(" ".join(argv) + "\n")
        try:
            with self.stderr_path.open("wb") as err:
                self.proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=err,
                    stderr=err,
                    preexec_fn=_set_pdeathsig,  # noqa: PLW1509 (single-threaded enough)
                )
            self._watchdog = threading.Timer(self.max_lifetime, self._watchdog_kill)
            self._watchdog.daemon = True
            self._watchdog.start()
            conns = self._accept_all(listeners, time.monotonic() + timeout)
        finally:
            for sock in listeners.values():
                sock.close()
        self.serial_conn = conns["serial"]
        self.agent_conn = conns["agent"]
        self._qmp = conns["qmp"]
        self._qmp_file = self._qmp.makefile("rwb")
        greeting = self._qmp_read()
        if "QMP" not in greeting:
            raise QemuError(f"unexpected QMP greeting: {greeting}")
        self.qmp("qmp_capabilities")

    def _accept_all(
        self, listeners: dict[str, socket.socket], deadline: float
    ) -> dict[str, socket.socket]:
        assert self.proc is not None
        conns: dict[str, socket.socket] = {}
        # Wake up when QEMU exits early: poll its pidfd alongside the listeners.
        pidfd = os.pidfd_open(self.proc.pid)
        try:
            while len(conns) < len(listeners):
                waiting = {s.fileno(): n for n, s in listeners.items() if n not in conns}
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise QemuError(
                        f"QEMU did not connect to {sorted(waiting.values())} in time;"
                        f" stderr:\n{self.stderr_tail()}"
                    )
                ready, _, _ = select.select([pidfd, *waiting], [], [], remaining)
                for fd in ready:
                    if fd == pidfd:
                        rc = self.proc.wait()
                        raise QemuError(
                            f"QEMU exited at start-up with code {rc}; stderr:\n{self.stderr_tail()}"
                        )
                    name = waiting[fd]
                    conn, _ = listeners[name].accept()
                    conns[name] = conn
        except BaseException:
            for c in conns.values():
                c.close()
            raise
        finally:
            os.close(pidfd)
        return conns

    def _qmp_read(self) -> dict[str, Any]:
        while True:
            line = self._qmp_file.readline()
            if not line:
                raise QemuError("QMP connection closed")
            msg: dict[str, Any] = json.loads(line)
            if "event" not in msg:
                return msg

    def qmp(self, command: str, **arguments: Any) -> Any:
        """Run a QMP command and return its "return" value."""
        if self._qmp_file is None:
            raise QemuError("QMP is not connected")
        req: dict[str, Any] = {"execute": command}
        if arguments:
            req["arguments"] = arguments
        self._qmp_file.write(json.dumps(req).encode() + b"\n")
        self._qmp_file.flush()
        reply = self._qmp_read()
        if "error" in reply:
            raise QemuError(f"QMP {command}: {reply['error']}")
        return reply.get("return")

    def _watchdog_kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.killed_by_watchdog = True
            self.proc.kill()

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def wait(self, timeout: float) -> int:
        """Wait for QEMU to exit by itself (e.g. a panic with -no-reboot)."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stderr_tail(self, lines: int = 30) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> int | None:
        """Quit QEMU (QMP quit, then SIGKILL by PID). Idempotent."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        rc: int | None = None
        if self.proc is not None:
            if self.proc.poll() is None and self._qmp_file is not None:
                with contextlib.suppress(OSError, ValueError, QemuError):
                    self._qmp_file.write(b'{"execute":"quit"}\n')
                    self._qmp_file.flush()
            try:
                rc = self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
        for closable in (self._qmp_file, self._qmp):
            if closable is not None:
                with contextlib.suppress(OSError):
                    closable.close()
        self._qmp_file = None
        self._qmp = None
        return rc


def create_overlay(base: Path, overlay: Path, base_format: str = "raw") -> None:
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            base_format,
            "-b",
            str(base),
            str(overlay),
        ],
        check=True,
        capture_output=True,
    )
