"""Downtime in one guest: every method in turn, several rounds, and liveupd's own cost.

One QEMU guest (tests/vm harness) is booted once; liveupd is installed in it
(its .deb, built from a clean checkout of the commit being measured); then the
methods run in turn, A B C D E F A B C D E F ..., each jumping from the
running kernel to the other one (a firmware reboot comes back on QEMU's
``-kernel``, kernel A).  For every run:

* *prep* (timed apart, not downtime): liveupd stages the other kernel
  (``liveupctl stage``), or ``kexec -l`` loads it; a fresh 1 MiB file is
  written to /data through the page cache (no sync) just before the request;
* the request is sent to the guest agent at host time ``t_req``
  (``busctl call ... Execute`` for liveupd; ``kexec -e``, ``systemctl
  kexec``, ``systemctl reboot`` for the others);
* the old kernel's last console line ("kexec_core: Starting new kernel",
  "reboot: Restarting system"; the console log level is raised to 6 just
  before the request so the first one is printed) is stamped with the host
  clock (bench/serial_tail.py);
* the new boot's marker (a unit after multi-user.target prints it on ttyS0)
  is stamped by the harness; the new kernel's clock is placed on the host's
  with agent pings (bench/clock.py), which splits the downtime into: old side
  (request -> last line), handover (last line -> new kernel's clock starts:
  purgatory or firmware, decompression, early boot), new side (the marker's
  uptime) and the serial latency of the marker;
* then: does the file read back with the same SHA-256, did ext4 replay a
  journal on /dev/vda or /dev/vdb, did the boot end ``running``, when was the
  network back (systemd-networkd's DHCPv4 lease, uptime from the journal); for
  liveupd the transition's journal (own cost, verification time).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import service_back
from bench.analysis import own_cost
from bench.clock import Offset, offset_interval, sample_pings
from bench.serial_tail import SerialTail
from bench.stats import Summary
from tests.vm.agent_client import AgentClosedError, AgentError, AgentTimeoutError
from tests.vm.guest_vm import EmulatorDefectError, GuestBootError, GuestVM
from tests.vm.image import GuestImage

NAME = "org.liveupd.LiveUpdate1"
PATH = "/org/liveupd/LiveUpdate1"
MANAGER = "org.liveupd.LiveUpdate1.Manager"
STATE_DIR = "/var/lib/liveupd"
HOOK_DIR = "/etc/liveupd/hooks.d"
VENDOR_HOOK_DIR = "/usr/lib/liveupd/hooks.d"
PAYLOAD = "/data/payload"
LAST_LINE = r"kexec_core: Starting new kernel|reboot: Restarting system|reboot: machine restart"
JUMP_TIMEOUT = 900.0
REPO = Path(__file__).resolve().parents[1]
PROPS_CLIENT = Path(__file__).with_name("props_client.py")
FAILED_STATES = {"failed", "cancelled", "rollback-failed", "aborted", "recovery-failed"}

Log = Callable[[str], None]


def execute_argv(mode: str) -> tuple[str, ...]:
    return ("busctl", "call", NAME, PATH, MANAGER, "Execute", "a{sv}", "1", "mode", "s", mode)


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    kind: str  # "liveupd", "kexec" (kexec -l beforehand) or "reboot"
    argv: tuple[str, ...]
    mode: str | None = None  # liveupd's exec mode


METHODS: tuple[Method, ...] = (
    Method("liveupd-direct", "liveupd direct", "liveupd", execute_argv("direct"), "direct"),
    Method("liveupd-systemd", "liveupd systemd", "liveupd", execute_argv("systemd"), "systemd"),
    Method("kexec-e", "kexec -e", "kexec", ("kexec", "-e")),
    Method("systemctl-kexec", "systemctl kexec", "kexec", ("systemctl", "kexec")),
    Method("reboot", "systemctl reboot (SeaBIOS)", "reboot", ("systemctl", "reboot")),
    Method("kexec-e-nosync", "kexec -e --no-sync", "kexec", ("kexec", "-e", "--no-sync")),
)
OVMF_METHODS: tuple[Method, ...] = (
    Method("ovmf-kexec-e", "kexec -e (OVMF)", "kexec", ("kexec", "-e")),
    Method("ovmf-reboot", "systemctl reboot (OVMF)", "reboot", ("systemctl", "reboot")),
)
METHOD_BY_KEY = {m.key: m for m in METHODS + OVMF_METHODS}
OVMF = Path("/usr/share/ovmf/OVMF.fd")
FLOOR = "kexec-e"


class RunFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class HookCase:
    hooks: int
    shared_prefix: bool

    @property
    def name(self) -> str:
        if self.hooks == 0:
            return "0 hooks"
        layout = "one prefix (concurrent)" if self.shared_prefix else "own prefixes (sequential)"
        return f"{self.hooks} no-op hooks, {layout}"


HOOK_CASES = (
    HookCase(0, False),
    HookCase(10, False),
    HookCase(10, True),
    HookCase(100, False),
    HookCase(100, True),
)
QUICK_HOOK_CASES = (HookCase(0, False), HookCase(10, False), HookCase(10, True))


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_jiffies(pid: int | str) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@dataclass(frozen=True)
class HostCPU:
    """CPU time used on the host by everything but QEMU and this process, since ``at``."""

    at: float
    busy: int  # jiffies, all CPUs, idle and iowait excluded
    ours: int  # QEMU's and this process's jiffies

    @classmethod
    def snapshot(cls, qemu_pid: int | None) -> HostCPU:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = sum(f) - f[3] - f[4]
        ours = _proc_jiffies("self") + (_proc_jiffies(qemu_pid) if qemu_pid else 0)
        return cls(time.monotonic(), busy, ours)

    def others_since(self, start: HostCPU) -> float:
        """Cores' worth of CPU the rest of the host used between ``start`` and this."""
        wall = self.at - start.at
        other = (self.busy - start.busy) - (self.ours - start.ours)
        return max(0.0, other / CLK_TCK / wall) if wall > 0 else 0.0


def timeline(
    journal: dict[str, Any], log: list[dict[str, Any]], stamp: float | None
) -> list[tuple[float, str]]:
    """Execute's events, seconds after ``execute_requested``: steps' starts and ends, log lines."""
    t0 = journal.get("execute_requested")
    if not isinstance(t0, int | float):
        return []
    events: list[tuple[float, str]] = []
    for st in journal.get("steps", []):
        started = st.get("started")
        if not isinstance(started, int | float) or started < t0:
            continue
        events.append((started - t0, f"start {st['key']}"))
        if st.get("usec") is not None:
            events.append((started + st["usec"] / 1e6 - t0, f"end {st['key']}"))
    for line in log:
        ts = line.get("ts")
        if isinstance(ts, int | float) and ts >= t0:
            extra = line.get("step") or line.get("phase") or line.get("mountpoint") or ""
            events.append((ts - t0, f"log {line.get('event')} {extra}".strip()))
    if stamp is not None:
        events.append((stamp - t0, "exec stamp"))
    return sorted((round(t, 4), what) for t, what in events)


def _first_float(text: str) -> float:
    return float(text.split(maxsplit=1)[0])


DHCP_LEASE = "DHCPv4 address"  # systemd-networkd: "ens3: DHCPv4 address 10.0.2.15/24, ..."
NETWORK_WAIT = 30  # seconds networkd may take to have a link online after the boot settled


def dhcp_lease_uptime(journal_json: str) -> float | None:
    """Uptime (s) of the first DHCPv4 lease in ``journalctl -o json`` output of networkd.

    The first entry whose MESSAGE contains "DHCPv4 address"; its ``__MONOTONIC_TIMESTAMP``
    (microseconds of CLOCK_MONOTONIC, which restarts at every boot, kexec'd ones too) is the
    uptime.  Lines that are not JSON objects, binary MESSAGEs (journald writes them as lists
    of byte values) and entries without a usable timestamp are skipped; None if none matches.
    """
    for line in journal_json.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        message = entry.get("MESSAGE")
        if not isinstance(message, str) or DHCP_LEASE not in message:
            continue
        stamp = entry.get("__MONOTONIC_TIMESTAMP")
        if isinstance(stamp, int | str) and str(stamp).strip().isdigit():
            return int(stamp) / 1e6
    return None


class Session:
    """One booted guest with liveupd installed, and the measurements taken in it."""

    def __init__(self, vm: GuestVM, image: GuestImage, log: Log) -> None:
        self.vm = vm
        self.image = image
        self.log = log
        self.tail = SerialTail(vm.serial_log)
        self.service = False  # bench/service_back.py's key-value server is set up

    def close(self) -> None:
        self.tail.close()

    # ------------------------------------------------------------ helpers --

    def sh(self, script: str, timeout: float = 120.0, check: bool = True) -> str:
        return self.vm.run(script, timeout=timeout, check=check).stdout

    def calibrate(self, boot_id: str) -> Offset:
        def ping() -> float:
            reply = self.vm.agent_request("ping", {}, 30.0)
            if reply.get("boot_id") != boot_id:
                raise RunFailed(f"a ping was answered by boot {reply.get('boot_id')}")
            return float(reply["uptime"])

        return offset_interval(sample_pings(ping))

    def agent_latency(self, offset: Offset, count: int = 3) -> list[float]:
        """Host request sent -> a command running in the guest (``cat /proc/uptime``)."""
        out = []
        for _ in range(count):
            sent = time.monotonic()
            uptime = _first_float(self.vm.run(["cat", "/proc/uptime"]).stdout)
            out.append(offset.host_time(uptime + 0.005) - sent)
        return out

    def realtime_minus_uptime(self) -> float:
        """CLOCK_REALTIME - CLOCK_BOOTTIME in the guest, read back to back."""
        code = (
            "import time; b = time.clock_gettime(time.CLOCK_BOOTTIME); "
            "r = time.time(); print(r - b)"
        )
        return float(self.vm.run(["python3", "-c", code]).stdout)

    def settle(self) -> dict[str, Any]:
        """Wait for the boot to finish; its state and failed units."""
        state = self.sh("systemctl is-system-running --wait", timeout=900, check=False).strip()
        failed = self.sh("systemctl --failed --no-legend --plain | cut -d' ' -f1", check=False)
        return {"state": state, "failed_units": failed.split()}

    def network_back(self) -> float | None:
        """Uptime on this boot of systemd-networkd's DHCPv4 lease (the network is back).

        The lease may come after the boot settled: networkd's own wait for a link online
        (at most NETWORK_WAIT s) comes first, then the boot's journal is read.  None when it
        has no lease or cannot be read (never fails the run).
        """
        script = (
            f"/lib/systemd/systemd-networkd-wait-online --any --timeout={NETWORK_WAIT}; "
            "journalctl -b -o json --output-fields=MESSAGE -u systemd-networkd.service"
        )
        try:
            uptime = dhcp_lease_uptime(self.sh(script, timeout=NETWORK_WAIT + 30, check=False))
        except (AgentError, AgentTimeoutError) as e:
            self.log(f"network back: journalctl failed: {e}")
            return None
        if uptime is None:
            self.log("network back: no DHCPv4 lease in systemd-networkd's journal of this boot")
        return uptime

    def payload_write(self) -> str:
        out = self.sh(
            f"dd if=/dev/urandom of={PAYLOAD} bs=64k count=16 status=none && sha256sum {PAYLOAD}"
        )
        return out.split()[0]

    def payload_state(self, expected: str) -> str:
        result = self.vm.run(
            f"test -e {PAYLOAD} || exit 3; stat -c %s {PAYLOAD}; sha256sum {PAYLOAD}", check=False
        )
        if result.rc == 3:
            return "missing"
        if not result.ok:
            return f"unreadable (rc {result.rc})"
        lines = result.stdout.split()
        size, digest = int(lines[0]), lines[1]
        if digest == expected:
            return "intact"
        return "empty" if size == 0 else f"different ({size} bytes)"

    def ext4_recovery(self) -> list[str]:
        """Devices whose ext4 journal was replayed at this boot's mount."""
        lines = self.sh("dmesg | grep 'EXT4-fs (vd' || true").splitlines()
        devs = []
        for line in lines:
            if "recovery complete" in line or "recovery required" in line:
                dev = line.split("EXT4-fs (", 1)[1].split(")", 1)[0]
                if dev not in devs:
                    devs.append(dev)
        return devs

    def other_kernel(self, release: str) -> str:
        a, b = self.image.kernel_a.release, self.image.kernel_b.release
        return b if release == a else a

    def journal(self, tid: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            self.vm.read_text(f"{STATE_DIR}/transitions/{tid}/journal.json")
        )
        return data

    def exec_stamp(self, tid: str) -> float | None:
        result = self.vm.run(["cat", f"{STATE_DIR}/transitions/{tid}/exec-stamp"], check=False)
        return int(result.stdout.strip()) / 1e9 if result.ok and result.stdout.strip() else None

    # ---------------------------------------------------------------- set-up --

    def prepare(self) -> dict[str, Any]:
        """Once, after install: what the guest is; leave the console quiet between runs."""
        vm = self.vm
        facts = {
            "kexec_tools": self.sh("kexec --version").strip(),
            "systemd": self.sh("systemctl --version | head -1").strip(),
            "guest_python": self.sh("python3 --version").strip(),
            "vendor_hooks": self.sh(f"ls {VENDOR_HOOK_DIR} | grep '\\.hook$' || true").split(),
            "cmdline": vm.read_text("/proc/cmdline").strip(),
            "memory_mib": int(self.sh("grep MemTotal /proc/meminfo").split()[1]) // 1024,
            "cpus": self.sh("nproc").strip(),
            "boot": self.sh("systemd-analyze time | head -1", check=False).strip(),
        }
        self.vm.run(["mkdir", "-p", HOOK_DIR])
        return facts

    # -------------------------------------------------------------- one run --

    def run(
        self, method: Method, round_no: int, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        rec: dict[str, Any] = {"method": method.key, "round": round_no, **(extra or {})}
        try:
            self._run(method, rec)
        except (RunFailed, GuestBootError, AgentError, AgentTimeoutError, AssertionError) as e:
            rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            self.log(f"{method.key} round {round_no}: FAILED: {rec['error']}")
            if isinstance(e, GuestBootError):
                raise
        return rec

    def _run(self, method: Method, rec: dict[str, Any]) -> None:
        vm = self.vm
        old = vm.boot_info()
        target = self.other_kernel(old.release) if method.kind != "reboot" else vm.kernel.release
        rec.update(from_release=old.release, to_release=target)
        tid: str | None = None
        service_before = service_back.arm(vm) if self.service else None

        # --- prep: load or stage the kernel; not part of the downtime ---------
        if method.kind == "liveupd":
            t0 = time.monotonic()
            vm.run(["liveupctl", "stage", target], timeout=600)
            rec["prep_s"] = time.monotonic() - t0
            status = json.loads(vm.run(["liveupctl", "status", "--json"]).stdout)
            tid = str(status["staged"]["id"])
            rec["transition"] = tid
            rt_minus_up = self.realtime_minus_uptime()
        else:
            vm.run(["systemctl", "stop", "liveupd.service"], timeout=300, check=False)
            if method.kind == "kexec":
                t0 = time.monotonic()
                self.load_raw(target)
                rec["prep_s"] = time.monotonic() - t0
        self.sh(f"rm -f {PAYLOAD}; sync -f /data")

        # --- just before the request ------------------------------------------
        off_old = self.calibrate(old.boot_id)
        rec["agent_latency_s"] = Summary.of(self.agent_latency(off_old)).median  # type: ignore[union-attr]
        self.sh("dmesg -n 6")  # so that "kexec_core: Starting new kernel" reaches the console
        digest = self.payload_write()
        mark = self.tail.mark()
        assert vm.agent is not None
        cpu0 = HostCPU.snapshot(vm.qemu.pid)
        t_req = time.monotonic()
        req_id = vm.agent.send("run", {"argv": list(method.argv), "timeout": 120})

        # --- the jump ---------------------------------------------------------------
        new = self._wait_new_boot(old.boot_id, tid)
        rec["host_others_cpu"] = HostCPU.snapshot(vm.qemu.pid).others_since(cpu0)
        vm.agent.forget(req_id)
        marker = next(m for m in vm.console.markers if m.boot_id == new.boot_id)  # type: ignore[union-attr]
        off_new = self.calibrate(new.boot_id)
        last = self.tail.find(LAST_LINE, mark)
        total = marker.seen_at - t_req
        rec.update(
            new_release=new.release,
            total_s=total,
            new_side_s=marker.uptime,
            kernel_start_s=off_new.value - t_req,
            serial_latency_s=marker.seen_at - off_new.host_time(marker.uptime),
            calibration_error_s=max(off_old.error, off_new.error),
            calibration_consistent=off_old.consistent and off_new.consistent,
            last_line=last.text if last else None,
        )
        if last is not None:
            rec["old_side_s"] = last.seen_at - t_req
            rec["handover_s"] = off_new.value - last.seen_at
        if new.release != target:
            raise RunFailed(f"came back on {new.release}, not {target}")
        if service_before is not None:
            probe = service_back.collect(vm)
            rec.update(service_back.outcome(service_before, probe, off_new.host_time, t_req))

        # --- after: safety and liveupd's own figures -----------------------------------
        rec["payload"] = self.payload_state(digest)
        rec["payload_intact"] = rec["payload"] == "intact"
        rec["ext4_recovery"] = self.ext4_recovery()
        rec["journal_replayed"] = bool(rec["ext4_recovery"])
        settled = self.settle()
        rec["boot_state"] = settled["state"]
        rec["failed_units"] = settled["failed_units"]
        rec["network_back_s"] = self.network_back()
        if tid is not None:
            journal = self.journal(tid)
            stamp = self.exec_stamp(tid)
            rec["transition_state"] = journal.get("state")
            rec["preserved"] = journal.get("preserved") or []
            verification = journal.get("verification") or {}
            downtime = verification.get("downtime") or {}
            up_verified = downtime.get("uptime_at_verified")
            if up_verified is not None:
                rec["recovered_s"] = off_new.host_time(float(up_verified)) - t_req
            rec["liveupd_downtime_s"] = downtime.get("downtime_s")
            rec["problems"] = [p.get("message") for p in verification.get("problems", [])]
            cost = own_cost(journal, stamp)
            rec["own_cost"] = cost
            log_text = vm.run(
                ["cat", f"{STATE_DIR}/transitions/{tid}/log.jsonl"], check=False
            ).stdout
            log_lines = [json.loads(x) for x in log_text.splitlines() if x.startswith("{")]
            rec["timeline"] = timeline(journal, log_lines, stamp)
            rec["verify"] = self.verify_times(log_lines, marker.uptime)
            requested = journal.get("execute_requested")
            if isinstance(requested, int | float):
                rec["execute_at_s"] = off_old.host_time(float(requested) - rt_minus_up) - t_req
            if stamp is not None:
                rec["exec_stamp_at_s"] = off_old.host_time(stamp - rt_minus_up) - t_req
            if journal.get("state") != "completed":
                raise RunFailed(f"transition {tid} ended {journal.get('state')}")
        self.log(
            f"{method.key} round {rec['round']}: {rec['from_release']} -> {new.release} "
            f"downtime {total:.2f} s (new side {marker.uptime:.2f} s), file {rec['payload']}, "
            f"ext4 recovery {rec['ext4_recovery'] or 'none'}"
        )

    def load_raw(self, release: str) -> None:
        """``kexec -l`` the guest's kernel ``release`` with the running command line
        (liveupd's transition id dropped), as a raw kexec is prepared."""
        kernel = next(k for k in self.image.kernels if k.release == release)
        cmdline = "$(sed 's/ *liveupd.transition=[^ ]*//' /proc/cmdline)"
        self.sh(
            f"kexec -l {kernel.guest_vmlinuz} --initrd={kernel.guest_initrd} "
            f'--command-line="{cmdline}"',
            timeout=600,
        )

    def return_to(self, release: str) -> None:
        """Unmeasured: a raw ``kexec -e`` back to ``release`` unless the guest runs it already."""
        vm = self.vm
        old = vm.boot_info()
        if old.release == release:
            return
        vm.run(["systemctl", "stop", "liveupd.service"], timeout=300, check=False)
        self.load_raw(release)
        assert vm.agent is not None
        req_id = vm.agent.send("run", {"argv": ["kexec", "-e"], "timeout": 120})
        new = self._wait_new_boot(old.boot_id, None)
        vm.agent.forget(req_id)
        if new.release != release:
            raise RunFailed(f"the return jump came back on {new.release}, not {release}")
        self.settle()
        self.log(f"returned to {release} (unmeasured raw kexec -e)")

    def verify_times(self, log: list[dict[str, Any]], marker_uptime: float) -> dict[str, Any]:
        """Uptimes on the new boot: liveupd-verify.service started, verification began, ended."""
        show = dict(
            line.split("=", 1)
            for line in self.sh(
                "systemctl show liveupd-verify.service -p ExecMainStartTimestampMonotonic "
                "-p ExecMainExitTimestampMonotonic"
            ).splitlines()
            if "=" in line
        )
        rt = self.realtime_minus_uptime()

        def at(event: str) -> float | None:
            ts = [
                x["ts"] for x in log if x.get("event") == event and isinstance(x.get("ts"), float)
            ]
            return ts[-1] - rt if ts else None

        def mono(key: str) -> float | None:
            value = show.get(key, "0").strip()
            return int(value) / 1e6 if value.isdigit() and int(value) else None

        return {
            "unit_started": mono("ExecMainStartTimestampMonotonic"),
            "verify_started": at("verify.started"),
            "verify_finished": at("verify.finished"),
            "unit_exited": mono("ExecMainExitTimestampMonotonic"),
            "marker": marker_uptime,
        }

    def _wait_new_boot(self, old_boot_id: str, tid: str | None) -> Any:
        """The new boot; for liveupd, fail early if the transition failed on the old one."""
        deadline = time.monotonic() + JUMP_TIMEOUT
        while True:
            chunk = min(120.0, deadline - time.monotonic())
            try:
                return self.vm.wait_for_new_boot(old_boot_id, timeout=chunk)
            except GuestBootError:
                if time.monotonic() >= deadline or self.vm.qemu.poll() is not None:
                    raise
            if tid is None:
                continue
            try:
                info = self.vm.boot_info(timeout=15)
                if info.boot_id == old_boot_id:
                    journal = self.journal(tid)
                    state = journal.get("state")
                    if state in FAILED_STATES:
                        why = (journal.get("error") or {}).get("message", "")
                        raise RunFailed(
                            f"transition {tid} ended {state} before the jump: {why[:300]}"
                        )
            except (AgentTimeoutError, AgentError, AgentClosedError):
                continue

    # ----------------------------------------------------------- hook cost --

    def set_hooks(self, case: HookCase | None, vendor: Sequence[str]) -> None:
        """Mask the vendor hooks and install ``case``'s no-op hooks; None: undo that."""
        script = [f"rm -f {HOOK_DIR}/*-noop*.hook"]
        for name in vendor:
            script.append(f"rm -f {HOOK_DIR}/{name}")
            if case is not None:
                script.append(f"ln -s /dev/null {HOOK_DIR}/{name}")
        if case is not None and case.hooks:
            script.append(
                f"for i in $(seq 0 {case.hooks - 1}); do "
                + ("p=50; " if case.shared_prefix else 'p=$(printf %02d "$i"); ')
                + f'printf \'phase = "quiesce"\\nrun = ["/bin/true"]\\n\' '
                f'> {HOOK_DIR}/$p-noop$(printf %03d "$i").hook; done'
            )
        self.sh("\n".join(script))

    # -------------------------------------------------------- the daemon --

    def daemon(self, starts: int = 3, seconds: float = 5.0) -> dict[str, Any]:
        """Inside the guest (real system bus, TCG): start-up, idle memory, property reads."""
        vm = self.vm
        owned, ready, rss, pss = [], [], [], []
        for _ in range(starts):
            vm.run(["systemctl", "stop", "liveupd.service"], timeout=300)
            vm.run(["systemctl", "start", "liveupd.service"], timeout=300)
            show = dict(
                line.split("=", 1)
                for line in self.sh(
                    "systemctl show liveupd.service -p MainPID "
                    "-p ExecMainStartTimestampMonotonic -p ActiveEnterTimestampMonotonic"
                ).splitlines()
                if "=" in line
            )
            pid = show["MainPID"]
            start_us = int(show["ExecMainStartTimestampMonotonic"])
            ready.append((int(show["ActiveEnterTimestampMonotonic"]) - start_us) / 1e6)
            entries = self.sh(
                "journalctl -b -u liveupd.service -o json --output-fields=MESSAGE "
                "--grep=event=service.name-owned",
                check=False,
            )
            stamps = [
                int(json.loads(line)["__MONOTONIC_TIMESTAMP"])
                for line in entries.splitlines()
                if line.startswith("{")
            ]
            stamps = [t for t in stamps if t >= start_us]
            if stamps:
                owned.append((min(stamps) - start_us) / 1e6)
            time.sleep(3)
            mem = self.sh(
                f"grep VmRSS /proc/{pid}/status; grep '^Pss:' /proc/{pid}/smaps_rollup"
            ).split()
            rss.append(int(mem[1]) / 1024)
            pss.append(int(mem[4]) / 1024)
        vm.write_file("/run/liveupd-bench-props.py", PROPS_CLIENT.read_bytes(), mode=0o755)
        loads = []
        for clients in (1, 16):
            out = vm.run(
                ["python3", "/run/liveupd-bench-props.py", "system", str(clients), str(seconds)],
                timeout=seconds + 300,
            )
            loads.append(json.loads(out.stdout))

        def s(v: list[float]) -> dict[str, Any] | None:
            summ = Summary.of(v)
            return summ.to_json() if summ else None

        return {
            "starts": starts,
            "name_owned_s": s(owned),
            "ready_s": s(ready),
            "idle_rss_mib": s(rss),
            "idle_pss_mib": s(pss),
            "loads": loads,
        }


# ------------------------------------------------------------------ source --


def clean_checkout(commit: str, dest: Path) -> Path:
    """A clean local clone of ``commit``: what is installed in the guest is exactly it."""
    subprocess.run(
        ["git", "clone", "-q", "--no-checkout", "--no-hardlinks", str(REPO), str(dest)], check=True
    )
    subprocess.run(["git", "-C", str(dest), "checkout", "-q", "--detach", commit], check=True)
    return dest


# A QEMU TCG defect ("Oops: int3", tests/vm/serial.py) kills the guest it hits; the
# run is recorded as failed and the rest goes on in a fresh guest, this many times.
DEFECT_RESTARTS = 2


def _bring_up(
    image: GuestImage, src: Path, log: Log, *, service: bool
) -> tuple[GuestVM, Session, dict[str, Any]]:
    """Boot a guest on kernel A, install the project, prepare it for measuring."""
    vm = GuestVM(image, kernel=image.kernel_a.release)
    session: Session | None = None
    try:
        vm.start()
        facts: dict[str, Any] = {"first_boot_s": vm.boot_seconds}
        cmdline = vm.run_dir / "qemu.cmdline"
        facts["qemu_cmdline"] = cmdline.read_text().strip() if cmdline.exists() else None
        vm.install_project(src)
        session = Session(vm, image, log)
        facts["guest"] = session.prepare()
        if service:
            service_back.setup(vm)
            session.service = True
        facts["guest"]["first_settle"] = session.settle()
    except BaseException:
        if session is not None:
            session.close()
        vm.stop()
        raise
    return vm, session, facts


def run_vm(
    rounds: int,
    methods: Sequence[Method],
    hook_cases: Sequence[HookCase],
    src: Path,
    log: Log,
    *,
    with_daemon: bool = True,
    service: bool = False,
) -> dict[str, Any]:
    """Boot one guest, install the project, and run every measurement in it.

    A run that meets QEMU's TCG defect is kept as failed, and the measurements go on
    in a fresh guest (at most ``DEFECT_RESTARTS`` times); ``defect_restarts`` in the
    result says how often.
    """
    from tests.vm.image import ensure_image

    image = ensure_image(log=lambda m: log(f"[vm-image] {m}"))
    out: dict[str, Any] = {
        "kernels": [
            {"release": k.release, "version": k.version, "package": k.package}
            for k in image.kernels
        ],
        "image": image.key,
        "runs": [],
        "hook_runs": [],
        "defect_restarts": 0,
    }
    vm: GuestVM | None = None
    session: Session | None = None
    failed_vms: list[GuestVM] = []

    def measure(
        method: Method, round_no: int, into: str, extra: dict[str, Any] | None = None
    ) -> None:
        nonlocal vm, session
        assert vm is not None and session is not None
        try:
            out[into].append(session.run(method, round_no, extra))
        except EmulatorDefectError as e:
            out[into].append(
                {
                    "method": method.key,
                    "round": round_no,
                    **(extra or {}),
                    "error": f"EmulatorDefectError: {str(e).splitlines()[0]}",
                }
            )
            if out["defect_restarts"] >= DEFECT_RESTARTS:
                raise
            out["defect_restarts"] += 1
            log(f"{method.key} round {round_no}: QEMU TCG defect; going on in a fresh guest")
            session.close()
            vm.stop()
            failed_vms.append(vm)
            vm = session = None  # until the fresh guest is up (a failure stops it itself)
            vm, session, _ = _bring_up(image, src, log, service=service)

    try:
        t0 = time.monotonic()
        vm, session, facts = _bring_up(image, src, log, service=service)
        out.update(facts)
        if with_daemon:
            log("the daemon inside the guest")
            out["daemon"] = session.daemon()
        for r in range(rounds):
            for m in methods:
                if service and m.kind == "liveupd":
                    # criu 4.1.1 dumps a TCP server only on kernel A (docs/preserve.md).
                    session.return_to(image.kernel_a.release)
                measure(m, r, "runs")
        vendor = out["guest"]["vendor_hooks"]
        for case in hook_cases:
            session.set_hooks(case, vendor)
            extra: dict[str, Any] = {
                "hooks": case.hooks,
                "shared_prefix": case.shared_prefix,
                "case": case.name,
            }
            measure(METHOD_BY_KEY["liveupd-direct"], 0, "hook_runs", extra)
        session.set_hooks(None, vendor)
        out["vm_seconds"] = time.monotonic() - t0
    except (
        GuestBootError,
        RunFailed,
        AgentError,
        AgentTimeoutError,
        AgentClosedError,
        EmulatorDefectError,
    ) as e:
        # Keep what was measured; the report says the VM part stopped early, and why.
        out["aborted"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        report = vm.failure_report() if vm is not None else ""
        log(f"the VM part stopped early: {out['aborted']}\n{report}")
    finally:
        if session is not None:
            session.close()
        if vm is not None:
            vm.stop()
        if out.get("aborted") or any(r.get("error") for r in out["runs"] + out["hook_runs"]):
            # kept for a post-mortem: every guest's serial log, the failed ones first
            logs = [str(v.serial_log) for v in [*failed_vms, vm] if v is not None]
            out["serial_log"] = logs[-1] if logs else None
            out["serial_logs"] = logs
        elif vm is not None:
            vm.cleanup()
    return out


def run_ovmf(rounds: int, log: Log) -> dict[str, Any]:
    """A second guest on OVMF (UEFI) firmware: reboots, with ``kexec -e`` beside them.

    QEMU loads ``-kernel`` through fw_cfg and OVMF starts it as an EFI
    application (the kernel's EFI stub), so no boot loader or ESP is needed.
    liveupd is not installed in it: only firmware-bound methods run here.
    """
    from tests.vm.image import ensure_image

    if not OVMF.exists():
        return {"skipped": f"{OVMF} is missing (apt-get install ovmf)"}
    image = ensure_image(log=lambda m: log(f"[vm-image] {m}"))
    out: dict[str, Any] = {"runs": [], "firmware": str(OVMF)}
    vm = GuestVM(image, kernel=image.kernel_a.release, extra_qemu_args=("-bios", str(OVMF)))
    session: Session | None = None
    try:
        vm.start()
        out["first_boot_s"] = vm.boot_seconds
        session = Session(vm, image, log)
        out["first_settle"] = session.settle()
        for r in range(rounds):
            for m in OVMF_METHODS:
                out["runs"].append(session.run(m, r))
        out["note"] = (
            f"OVMF {OVMF}, first boot {vm.boot_seconds:.1f} s from QEMU start to the marker"
        )
    except (GuestBootError, RunFailed, AgentError, AgentTimeoutError, AgentClosedError) as e:
        out["aborted"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        log(f"the OVMF part stopped early: {out['aborted']}\n{vm.failure_report()}")
    finally:
        if session is not None:
            session.close()
        vm.stop()
        if out.get("aborted") or any(r.get("error") for r in out["runs"]):
            out["serial_log"] = str(vm.serial_log)
        else:
            vm.cleanup()
    return out
