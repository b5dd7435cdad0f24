"""A journal reads back exactly what was written, optional fields included.

Journal lines are written without their None fields; a target without an
initrd (a unified kernel image staged with its own initrd, or none) once read
back as "set.target.initrd_path: Field required" and verification on the new
kernel quarantined the journal of a transition that had succeeded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from liveupd.transition.journal import Journal
from liveupd.transition.records import Target

UKI = Target(
    release="7.3.4+deb13-cloud-amd64",
    kernel_path="/boot/efi/EFI/Linux/debian-7.3.4.efi",
    cmdline="root=/dev/vda ro liveupd.transition=T1",
    sha256="1" * 64,
    profile="@0",
)


@pytest.mark.parametrize("initrd", [None, "/boot/initrd.img-7.3.4+deb13-cloud-amd64"])
def test_a_target_reads_back_as_written(tmp_path: Path, initrd: str | None) -> None:
    target = Target.from_json({**UKI.to_json(), "initrd_path": initrd})
    journal = Journal.create(tmp_path, "T1", boot_id="b1", old_release="r")
    journal.update(target=target)
    loaded = Journal.load(journal.path)
    assert loaded.record.target == target
    assert loaded.record.target is not None and loaded.record.target.initrd_path == initrd


def test_a_target_in_the_first_line_reads_back_as_written(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "T1", boot_id="b1", old_release="r", target=UKI)
    assert Journal.load(journal.path).record.target == UKI
