"""One guest shared by the tests of a module (a chain of scenarios saves boots)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import pytest

from tests.vm.guest_vm import GuestVM
from tests.vm.image import GuestImage


@contextlib.contextmanager
def module_guest(
    image: GuestImage,
    request: pytest.FixtureRequest,
    *,
    append_extra: str = "",
    installed: bool = True,
    host_forwards: Sequence[tuple[int, int]] = (),
    extra_qemu_args: Sequence[str] = (),
) -> Iterator[GuestVM]:
    """Boot kernel A; on exit kill QEMU, and keep the run directory if a test failed.

    `installed`: boot from the disk with the project's .deb already installed
    (project.installed_root); False for the scenarios that install it themselves.
    `host_forwards`: (host port, guest port) pairs, TCP from the host's 127.0.0.1.

    A failure prints the console tail, QEMU's state and the guest journal's tail.
    """
    failed_before = request.session.testsfailed
    vm = GuestVM(
        image,
        kernel=image.kernel_a.release,
        append_extra=append_extra,
        installed=installed,
        host_forwards=host_forwards,
        extra_qemu_args=extra_qemu_args,
    )
    try:
        vm.start()
        yield vm
    finally:
        failed = request.session.testsfailed > failed_before
        if failed:
            print(vm.failure_report(journal=True), flush=True)
        vm.stop()
        if not failed:
            vm.cleanup()
