"""End-to-end: services keep their memory across the kernel update with CRIU (issue 16).

One guest on kernel A, one jump, three chained scenarios:

1. A listed service CRIU cannot dump (it holds /dev/kmsg open): Stage is
   refused naming the service and the device file; nothing was loaded, and
   the other listed service still runs.
2. A failing flush hook after the dump: the transition rolls back, the
   service (dumped with --leave-stopped) is resumed and answers with its
   value, as the same process; the images are gone.
3. The jump A -> B: the listed key-value service answers on the same port
   with the same value, as the same PID, inside its own unit; its unlisted
   twin answers with a fresh value.  The dump and restore durations are in
   the transition's log; the images and the restore drop-in are gone.

The services are a tiny Python TCP server holding a random value in memory.
They are started with high PIDs (``ns_last_pid``): the restore needs the
dumped PIDs free on the new boot, which an early-boot process could hold.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.vm import liveupd_guest as g
from tests.vm.guest_vm import GuestVM
from tests.vm.image import GuestImage
from tests.vm.kv_service import ask_port, install_server, unit_text
from tests.vm.shared import module_guest

KV, TWIN, KMSG = "kv-kept.service", "kv-twin.service", "kv-kmsg.service"
PORTS = {KV: 7001, TWIN: 7002, KMSG: 7003}


@pytest.fixture(scope="module")
def guest(vm_image: GuestImage, request: pytest.FixtureRequest) -> Iterator[GuestVM]:
    started = time.monotonic()
    with module_guest(vm_image, request) as vm:
        install_server(vm)
        for unit, extra in ((KV, ""), (TWIN, ""), (KMSG, " /dev/kmsg")):
            vm.write_file(f"/etc/systemd/system/{unit}", unit_text(PORTS[unit], extra))
        vm.run(["systemctl", "daemon-reload"])
        # High PIDs: free on the new boot whatever its early processes take.
        vm.run("echo 300000 > /proc/sys/kernel/ns_last_pid")
        vm.run(["systemctl", "enable", "--now", KV, TWIN, KMSG], timeout=120)
        for unit in (KV, TWIN, KMSG):
            ask(vm, unit)  # listening
        yield vm
    print(f"\n[test_preserve] module took {time.monotonic() - started:.0f} s", flush=True)


def ask(vm: GuestVM, unit: str) -> tuple[str, int]:
    """The value and PID the service answers with (retried while it starts)."""
    return ask_port(vm, PORTS[unit])


def main_pid(vm: GuestVM, unit: str) -> int:
    return int(vm.run(["systemctl", "show", "-P", "MainPID", unit]).stdout)


def state(vm: GuestVM, pid: int) -> str:
    return vm.read_text(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()[0]


def preserve(vm: GuestVM, *units: str) -> None:
    listed = ", ".join(f'"{u}"' for u in units)
    g.write_dropin(vm, "50-preserve", f"[preserve]\nunits = [{listed}]\n")
    g.restart_daemon(vm)


def events(vm: GuestVM, tid: str, name: str) -> list[dict[str, object]]:
    return [e for e in g.transition_log(vm, tid) if e.get("event") == name]


def test_a_service_criu_cannot_dump_refuses_the_stage(guest: GuestVM, vm_image: GuestImage) -> None:
    vm = guest
    before = ask(vm, KV)
    preserve(vm, KV, KMSG)
    r = vm.run(["liveupctl", "stage", vm_image.kernel_b.release], timeout=300, check=False)
    out = r.stdout + r.stderr
    assert r.rc != 0, out
    assert f"{KMSG}: process {main_pid(vm, KMSG)} holds the device file(s) /dev/kmsg" in out, out
    assert KV + ":" not in out  # only the one CRIU cannot dump is named
    assert not g.kexec_loaded(vm)
    assert ask(vm, KV) == before and state(vm, before[1]) in "RS"
    vm.run(["systemctl", "stop", KMSG])


def test_a_failure_after_the_dump_resumes_the_service(guest: GuestVM, vm_image: GuestImage) -> None:
    vm = guest
    boot = vm.boot_info().boot_id
    before = ask(vm, KV)
    preserve(vm, KV)
    g.write_hook(vm, "10-fail", g.sh_hook("flush", "echo 'disk went away' >&2; exit 3"))
    try:
        vm.run(["liveupctl", "stage", vm_image.kernel_b.release], timeout=300)
        r = vm.run(["liveupctl", "exec"], timeout=600, check=False)
    finally:
        g.remove_hooks(vm, "10-fail")
    assert r.rc == 1 and "10-fail" in r.stdout + r.stderr, r.stdout + r.stderr
    assert vm.boot_info().boot_id == boot and not g.kexec_loaded(vm)
    assert ask(vm, KV) == before  # the same value, from the same process
    assert state(vm, before[1]) in "RS" and main_pid(vm, KV) == before[1]
    entry = g.history(vm, limit=1)[0]
    tid = str(entry["id"])
    assert entry["state"] == "failed"
    dumped = events(vm, tid, "preserve.dumped")
    assert [(e["unit"], e["pid"]) for e in dumped] == [(KV, before[1])], dumped
    assert [e["unit"] for e in events(vm, tid, "preserve.resumed")] == [KV]
    gone = vm.run(["test", "-e", f"{g.STATE_DIR}/transitions/{tid}/preserve"], check=False)
    assert gone.rc == 1


def test_the_listed_service_keeps_its_memory_across_the_jump(
    guest: GuestVM, vm_image: GuestImage
) -> None:
    vm = guest
    kept, twin = ask(vm, KV), ask(vm, TWIN)
    vm.run(["liveupctl", "stage", vm_image.kernel_b.release], timeout=300)
    old = vm.boot_info()
    vm.spawn("liveupctl exec >/run/liveupctl-exec.log 2>&1")
    new = vm.wait_for_new_boot(old.boot_id)
    assert new.release == vm_image.kernel_b.release
    assert g.wait_verified(vm) == "active"
    entry = g.history(vm, limit=1)[0]
    tid = str(entry["id"])
    assert entry["state"] == "completed", entry
    warnings = (entry.get("verification") or {}).get("warnings") or []
    assert not [w for w in warnings if "state of" in w or KV in w], warnings
    # The same value from the same PID, inside its own unit; the twin started fresh.
    assert ask(vm, KV) == kept
    assert main_pid(vm, KV) == kept[1]
    assert vm.run(["systemctl", "is-active", KV]).stdout.strip() == "active"
    fresh = ask(vm, TWIN)
    assert fresh[0] != twin[0]
    dumped = events(vm, tid, "preserve.dumped")
    restored = events(vm, tid, "preserve.restored")
    assert [(e["unit"], e["pid"]) for e in restored] == [(KV, kept[1])], restored
    # The durations in the transition's report: its JSON entry and `liveupctl show`.
    [report] = entry["preserved"]
    assert (report["unit"], report["outcome"]) == (KV, "restored"), report
    assert report["dump_usec"] > 0 and report["dump_usec"] == dumped[0]["dump_usec"], report
    assert report["restore_usec"] > 0 and report["restore_usec"] == restored[0]["restore_usec"]
    assert report["image_bytes"] > 0 and report["image_bytes"] == dumped[0]["image_bytes"]
    shown = vm.run(["liveupctl", "show", tid]).stdout
    assert re.search(
        rf"{re.escape(KV)}: dumped in [0-9.]+ s \([0-9.]+ [KM]iB\), restored in [0-9.]+ s", shown
    ), shown
    print(
        f"\n[test_preserve] dump {dumped[0]['dump_usec']} us, "
        f"restore {restored[0]['restore_usec']} us, images {dumped[0]['image_bytes']} bytes",
        flush=True,
    )
    gone = vm.run(["test", "-e", f"{g.STATE_DIR}/transitions/{tid}/preserve"], check=False)
    assert gone.rc == 1
    dropin = vm.run(["systemctl", "cat", KV]).stdout
    assert "criu restore" not in dropin, dropin  # a later restart starts it the usual way
