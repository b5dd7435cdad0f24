"""pytest integration of the VM harness: every test under tests/vm is marked `vm`.

Fixtures:
    vm_image    session: the cached guest image, built on first use (needs root)
    vm_factory  function: make_vm(kernel=..., append_extra=..., ...) -> booted GuestVM;
                every VM it made is killed when the test ends
    vm          function: a GuestVM booted on kernel A

Tests are skipped only when QEMU cannot run here at all; any other problem (image
build, boot, agent) is an error with the serial console's tail in the report.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.vm.guest_vm import GuestVM, VMFactory, forget_stopped_oopses, kernel_oopses
from tests.vm.image import GuestImage, ensure_image
from tests.vm.qemu import qemu_unusable_reason
from tests.vm.rerun_defects import note_defect

VM_DIR = Path(__file__).resolve().parent
# pytest-timeout's default (300 s in pyproject.toml) also covers fixture setup, and the
# first VM test may build the image (about 1.5-2 min cold). The harness has its own
# deadlines on every wait; this is only the outer bound.
VM_TEST_TIMEOUT = 1800


# `make test` runs the VM modules in VM_JOBS workers, one module per worker at a time
# (pytest-xdist, --dist loadfile), in collection order. Starting the longest ones first
# keeps one worker from being left with a long module at the end. A scheduling hint
# only: an unlisted module runs after these, in file order. Longest first, by the
# suite's --durations.
LONGEST_MODULES_FIRST = (
    "test_fleet.py",
    "test_watchdog.py",
    "test_devices_storage.py",
    "test_live_update.py",
    "test_preserve.py",
    "test_rollback_policy.py",
    "test_uki.py",
    "test_failures.py",
)


def _schedule_rank(item: pytest.Item) -> int:
    name = Path(str(item.path)).name
    if name in LONGEST_MODULES_FIRST:
        return LONGEST_MODULES_FIRST.index(name)
    return len(LONGEST_MODULES_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    places = []
    for place, item in enumerate(items):
        if VM_DIR not in Path(str(item.path)).resolve().parents:
            continue
        places.append(place)
        item.add_marker(pytest.mark.vm)
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(VM_TEST_TIMEOUT))
    # The VM tests take the places VM tests had, longest modules first (a stable sort:
    # a module's tests keep their order).
    ordered = sorted((items[p] for p in places), key=_schedule_rank)
    for place, item in zip(places, ordered, strict=True):
        items[place] = item


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # Remember each phase's outcome so fixtures can tell a failed test at teardown.
    setattr(item, f"vm_report_{report.when}", report)
    # A failure while a guest kernel had oopsed: QEMU's TCG defect, or a kernel bug that
    # the second run meets again. Either way the module runs once more, whole
    # (rerun_defects.py).
    if report.failed and (oopses := kernel_oopses()):
        note_defect(item.nodeid.split("::", 1)[0])
        report.sections.append(("guest kernel oops", "\n".join(oopses[:10])))
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    forget_stopped_oopses()


def _test_failed(node: Any) -> bool:
    return any(
        getattr(getattr(node, f"vm_report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )


def _progress(msg: str) -> None:
    # Straight to the real stderr: a cold build takes minutes and should be visible
    # even with output capture on.
    print(msg, file=sys.__stderr__, flush=True)


@pytest.fixture(scope="session")
def qemu_usable() -> None:
    reason = qemu_unusable_reason()
    if reason is not None:
        _progress(f"[vm] skipping VM tests: {reason}")
        pytest.skip(f"QEMU cannot run here: {reason}")


@pytest.fixture(scope="session")
def vm_image(qemu_usable: None) -> GuestImage:
    return ensure_image(log=lambda msg: _progress(f"[vm-image] {msg}"))


@pytest.fixture
def vm_factory(vm_image: GuestImage, request: pytest.FixtureRequest) -> Iterator[VMFactory]:
    made: list[GuestVM] = []

    def make_vm(kernel: str | None = None, append_extra: str = "", **kwargs: Any) -> GuestVM:
        kwargs.setdefault("installed", True)
        vm = GuestVM(vm_image, kernel=kernel, append_extra=append_extra, **kwargs)
        made.append(vm)
        vm.start()
        return vm

    try:
        yield make_vm
    finally:
        failed = _test_failed(request.node)
        for vm in made:
            if failed:
                _progress(vm.failure_report(journal=True))
            vm.stop()
            if not failed:
                vm.cleanup()


@pytest.fixture
def vm(vm_factory: VMFactory) -> GuestVM:
    """A guest booted on kernel A (the older of the two kernels)."""
    return vm_factory()
