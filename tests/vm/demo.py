"""``make demo``: live-update a virtual machine from one real kernel to another.

Boots a Debian 13 guest on kernel A (trixie's 6.12), installs liveupd's .deb in
it (built on the host, ``apt-get install ./liveupd_*.deb``), stages kernel B (the
newest 7.x from trixie-backports) and executes the transition through the D-Bus API on
the guest's system bus (plain ``busctl`` calls, so you can see the API), waits
for the guest to come back on kernel B, and prints the transition report: the
product's own, ``liveupctl show`` in the guest, plus what only the host can
tell (its clock, the data check).

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
    shown: str = ""  # what `liveupctl show ID` printed on the new kernel


def busctl_json(vm: GuestVM, *args: str) -> Any:
    out = vm.run(["busctl", "--json=short", *args], timeout=300).stdout
    return json.loads(out)


def live_update(vm: GuestVM, kernel_path: str, *, echo: bool = False) -> LiveUpdate:
    """Stage ``kernel_path`` and Execute through D-Bus; wait for the new kernel and its report."""

    def show(argv: list[str]) -> None:
        if echo:
            say(f"  $ {shlex.join(argv)}")

    # Stage checks and loads the kernel (and may start liveupd first): more than
    # busctl's default 25 s on a slow machine, such as this one under TCG.
    stage = [
        "busctl", "--timeout=120", "call", g.NAME, g.PATH, g.MANAGER,
        "Stage", "sssa{sv}", kernel_path, "", "", "0",
    ]  # fmt: skip
    show(stage)
    reply = busctl_json(vm, *stage[1:])
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
    shown = vm.run(["liveupctl", "--no-pager", "show", tid], timeout=300).stdout
    return LiveUpdate(tid, report, host_seconds, g.payload_sum(vm) == payload, shown.rstrip())


def render(update: LiveUpdate) -> str:
    """The transition report (liveupctl show's), and what the host measured."""
    return "\n".join(
        [
            update.shown,
            f"Execute to the new boot's first answer (host clock): {update.host_seconds:.1f} s",
            "",
            "Data written just before Execute: "
            + ("intact" if update.payload_intact else "LOST OR CHANGED"),
        ]
    )


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
