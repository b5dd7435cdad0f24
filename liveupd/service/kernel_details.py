"""One row of ListKernelDetails: an installed kernel as a dictionary of variants."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbus_fast import Variant

if TYPE_CHECKING:  # imported by ListKernelDetails' own call, not at the daemon's start
    from liveupd.kernel.discovery import InstalledKernel
    from liveupd.kernel.quarantine import QuarantinedKernel
    from liveupd.kernel.resolve import Verdict

# The keys, their D-Bus types and meaning are listed in docs/dbus-api.md.


def kernel_details(
    k: InstalledKernel, v: Verdict, latest: bool, quarantined: QuarantinedKernel | None = None
) -> dict[str, Variant]:
    row = {
        "release": Variant("s", k.release),
        "kernel": Variant("s", k.kernel_path),
        "initrd": Variant("s", k.initrd_path or ""),
        "running": Variant("b", k.running),
        "source": Variant("s", str(k.source)),
        "title": Variant("s", k.title),
        "profiles": Variant("as", list(k.profiles)),
        "image": Variant("s", v.image),
        "stageable": Variant("b", v.ok),
        "problem": Variant("s", v.problem),
        "warnings": Variant("as", list(v.warnings)),
        "latest": Variant("b", latest),
    }
    if quarantined is not None:  # a transition fell back from it (v.problem says so)
        row["quarantined"] = Variant("s", quarantined.reason)
        row["quarantine-transition"] = Variant("s", quarantined.transition)
    if v.signed is not None:
        row["signed"] = Variant("b", v.signed)
    return row
