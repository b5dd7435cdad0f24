"""Refuse a Stage that names nothing, before a transition record exists.

A mistyped release or path is the caller's typo, not a transition: it is
refused with ``InvalidKernel`` before the journal is created, so history
holds only transitions that started.  Only names are looked at here (the
kernel directories' listing and whether the named files exist); everything
about the files' contents is checked, through open descriptors, by the
``kernel-check`` step of the transition.
"""

from __future__ import annotations

import os

from liveupd.config import Config
from liveupd.errors import InvalidKernel
from liveupd.kernel import quarantine
from liveupd.kernel.resolve import NO_INITRD, choose
from liveupd.quoting import quote
from liveupd.transition.records import StageRequest


def refuse_unknown(request: StageRequest, config: Config, running_release: str) -> None:
    """InvalidKernel when ``request`` names no installed kernel or no existing file;
    KernelQuarantined when it names a kernel a transition fell back from."""
    choice = choose(request, config, running_release)  # an unknown release is refused here
    if choice.release is not None:  # a quarantined kernel: refused before it is recorded
        quarantine.refuse(config.state_dir, choice.release, running_release)
    if not os.path.lexists(choice.kernel_path):
        raise InvalidKernel(
            f"{quote(choice.kernel_path)}: no such file; nothing was staged or recorded. "
            "'liveupctl kernels' lists the installed kernels"
        )
    initrd = request.initrd.strip()
    if initrd and initrd != NO_INITRD and not os.path.lexists(initrd):
        raise InvalidKernel(
            f"initrd {quote(initrd)}: no such file; nothing was staged or recorded. Give an "
            f'existing initrd, "" to pair one automatically, or "{NO_INITRD}" for none'
        )
