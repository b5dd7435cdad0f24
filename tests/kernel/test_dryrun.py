"""The dry-run backend records the kexec_file_load it would have made."""

from __future__ import annotations

from pathlib import Path

from liveupd.backends import dryrun
from liveupd.config import Config
from liveupd.kernel.resolve import open_target, resolve
from liveupd.transition.context import StageRequest
from tests.kernel.test_resolve import TID, FakeSystem


def test_load_is_recorded_with_paths_command_line_and_flags(
    kconfig: Config, tmp_path: Path
) -> None:
    backends = dryrun.make(tmp_path / "state")
    for request in (StageRequest(kernel="6.1.0-56-cloud-amd64"), StageRequest(initrd="none")):
        t = resolve(request, kconfig, FakeSystem(), TID).target
        with open_target(t, kconfig) as opened:
            backends.kexec.load(opened, t.cmdline)
    with_initrd, without = [
        c for c in dryrun.SimMachine(tmp_path / "state").calls() if c["op"] == "kexec_file_load"
    ]
    assert with_initrd["kernel"] == t.kernel_path
    assert with_initrd["initrd"] == str(
        Path(t.kernel_path).with_name("initrd.img-6.1.0-56-cloud-amd64")
    )
    assert with_initrd["cmdline"] == t.cmdline
    assert with_initrd["cmdline_len"] == len(t.cmdline) + 1
    assert with_initrd["kernel_size"] == Path(t.kernel_path).stat().st_size
    assert with_initrd["flags"] == []
    assert without["initrd"] is None and without["initrd_size"] is None
    assert without["flags"] == ["KEXEC_FILE_NO_INITRAMFS"]
    assert backends.kexec.is_loaded()
    backends.kexec.unload()
    assert not backends.kexec.is_loaded()
