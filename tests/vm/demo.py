"""``make demo``: live-update a virtual machine from one real kernel to another.

Boots a Debian 13 guest on kernel A (trixie's 6.12), installs liveupd's .deb in
it (built on the host, ``apt-get install ./liveupd_*.deb``), stages kernel B (the
newest 7.x from trixie-backports) and executes the transition through the D-Bus API on
the guest's system bus (plain ``busctl`` calls, so you can see the API), waits
for the guest to come back on kernel B, and prints the transition report.

    python -m tests.vm.demo [--keep]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from typing import Any

from liveupd.transition.phases import NEW_KERNEL_PHASES, OLD_KERNEL_PHASES
from tests.vm import liveupd_guest as g
from tests.vm import project
from tests.vm.guest_vm import GuestVM
from tests.vm.image import ensure_image

TRANSITION_IFACE = "org.liveupd.LiveUpdate1.Transition"


def say(text: str) -> None:
    print(text, flush=True)


@dataclass(frozen=True)
class LiveUpdate:
    transition: str  # id
    report: dict[str, Any]  # the transition's Report property, read on the new kernel
    host_seconds: float  # Execute sent (host clock) to the new kernel's agent answering
    payload_intact: bool


def busctl_json(vm: GuestVM, *args: str) -> Any:
    out = vm.run(["busctl", "--json=short", *args], timeout=300).stdout
    return json.loads(out)


def live_update(vm: GuestVM, kernel_path: str, *, echo: bool = False) -> LiveUpdate:
    """Stage ``kernel_path`` and Execute through D-Bus; wait for the new kernel and its report."""

    def show(argv: list[str]) -> None:
        if echo:
            say(f"  $ {shlex.join(argv)}")

    stage = [
        "busctl", "call", g.NAME, g.PATH, g.MANAGER,
        "Stage", "sssa{sv}", kernel_path, "", "", "0",
    ]  # fmt: skip
    show(stage)
    reply = busctl_json(vm, "call", *stage[2:])
    tid, path = reply["data"]
    if echo:
        say(f"    staged transition {tid} ({path})")
    payload = g.write_payload(vm)
    if echo:
        say("  (wrote 1 MiB to /data/payload through the page cache, not synced)")
    old = vm.boot_info()
    execute = ["busctl", "call", g.NAME, g.PATH, g.MANAGER, "Execute", "a{sv}", "0"]
    show(execute)
    start = time.monotonic()
    vm.spawn(execute)
    vm.wait_for_new_boot(old.boot_id)
    host_seconds = time.monotonic() - start
    g.wait_verified(vm)
    report = json.loads(
        busctl_json(vm, "get-property", g.NAME, path, TRANSITION_IFACE, "Report")["data"]
    )
    return LiveUpdate(tid, report, host_seconds, g.payload_sum(vm) == payload)


def _ms(usec: float | int | None) -> str:
    return "-" if usec is None else f"{usec / 1000:8.1f} ms"


def render(update: LiveUpdate) -> str:
    """The transition report, as a person reads it."""
    r = update.report
    lines = [
        f"Transition {r['id']}: {r['state']}",
        f"  kernel     {r['old_release']} -> {r['new_release']} ({r['mode']} mode)",
        f"  command    {r['cmdline']}",
    ]
    phases = r.get("phases_usec", {})
    for title, names in (
        ("Phases on the old kernel (check and load: at Stage, before Execute):", OLD_KERNEL_PHASES),
        ("Phases on the new kernel:", NEW_KERNEL_PHASES),
    ):
        lines += ["", title]
        lines += [f"  {p:<11} {_ms(phases[p])}" for p in names if p in phases]
    lines += ["", "Hooks:"]
    for h in r.get("hooks", []) or [{"hook": "(none)", "phase": "", "status": "", "usec": None}]:
        lines.append(f"  {h['hook']:<22} {h['phase']:<10} {h['status']:<8} {_ms(h['usec'])}")
    lines += ["", "Devices unbound before the jump:"]
    for d in r.get("devices", []):
        back = {True: "bound again", False: "NOT bound again", None: "not verified"}
        ifaces = ", ".join(d["interfaces"]) or "-"
        lines.append(
            f"  {d['sys_path']}\n    driver {d['driver']}, interfaces {ifaces}: "
            f"{back[d['bound_again']]}"
        )
    lines += ["", "Filesystems frozen (in order): " + (", ".join(r.get("frozen", [])) or "-")]
    verification = r.get("verification") or {}
    downtime = verification.get("downtime") or {}
    problems = verification.get("problems") or []
    lines += [
        "",
        "Verification on the new kernel: "
        + ("passed" if not problems else "; ".join(p["message"] for p in problems)),
        "Downtime:",
        f"  exec to new kernel       {_s(downtime.get('exec_to_kernel_s'))}",
        f"  new kernel to verified   {_s(downtime.get('kernel_to_verified_s'))}",
        f"  total (liveupd's clock)  {_s(downtime.get('downtime_s'))}",
        f"  Execute to the new boot's first answer (host clock) {update.host_seconds:.1f} s",
        "",
        "Data written just before Execute: "
        + ("intact" if update.payload_intact else "LOST OR CHANGED"),
    ]
    return "\n".join(lines)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:6.2f} s"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--keep", action="store_true", help="keep the VM's run directory")
    args = p.parse_args(argv)

    say("[demo] preparing the guest image (built once, then cached)...")
    image = ensure_image(log=lambda m: say(f"[image] {m}"))
    a, b = image.kernel_a, image.kernel_b
    say(f"[demo] building liveupd's Debian package ({project.DEB_GLOB})...")
    deb = project.build_deb()
    say(f"[demo] booting a Debian 13 guest on kernel A ({a.release}) under QEMU...")
    with GuestVM(image, kernel=a.release, keep_run_dir=args.keep) as vm:
        say(
            f"[demo] booted in {vm.boot_seconds:.1f} s; installing liveupd "
            f"(apt-get install ./{deb.name})..."
        )
        g.install(vm)
        say(f"[demo] live-updating to kernel B ({b.release}) through org.liveupd.LiveUpdate1:")
        update = live_update(vm, b.guest_vmlinuz, echo=True)
        info = vm.boot_info()
        say(f"[demo] the guest now runs {info.release} (boot id {info.boot_id})\n")
        say(render(update))
        ok = (
            info.release == b.release
            and update.report.get("state") == "completed"
            and update.payload_intact
        )
        if not ok:
            say("\n[demo] the live update did NOT complete as expected; see above")
    vm.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
