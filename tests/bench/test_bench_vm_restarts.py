"""bench/vm.py's run_vm when QEMU's TCG defect ends a run: the run is kept as failed and
the measurements go on in a fresh guest, a bounded number of times.

The guests here are stand-ins (no QEMU): what is tested is the bookkeeping around them.
The real guests run in `make bench`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from bench import vm as bench_vm
from tests.vm.guest_vm import EmulatorDefectError, GuestBootError


class FakeVM:
    def __init__(self, n: int) -> None:
        self.n = n
        self.serial_log = Path(f"/nonexistent/serial-{n}.log")
        self.stopped = False
        self.cleaned = False

    def stop(self) -> None:
        self.stopped = True

    def cleanup(self) -> None:
        self.cleaned = True

    def failure_report(self) -> str:
        return f"guest {self.n}"


class FakeSession:
    def __init__(self, vm: FakeVM, plan: list[str]) -> None:
        self.vm = vm
        self.plan = plan  # shared: what each successive run does ("ok" or "defect")
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def daemon(self) -> dict[str, Any]:
        return {}

    def set_hooks(self, case: object, vendor: object) -> None:
        pass

    def run(self, method: bench_vm.Method, round_no: int, extra: Any = None) -> dict[str, Any]:
        if self.plan.pop(0) == "defect":
            raise EmulatorDefectError("the guest kernel hit a QEMU TCG defect: 'Oops: int3'")
        return {"method": method.key, "round": round_no, "guest": self.vm.n}


class FakeImage:
    key = "fake"
    kernels: ClassVar[list[Any]] = []


def run(
    monkeypatch: pytest.MonkeyPatch, plan: list[str], rounds: int, *, boots: int | None = None
) -> tuple[dict[str, Any], list[FakeVM]]:
    """run_vm with stand-in guests; only the first ``boots`` of them boot (None: all)."""
    vms: list[FakeVM] = []

    def bring_up(
        image: object, src: object, log: object, *, service: bool
    ) -> tuple[FakeVM, FakeSession, dict[str, Any]]:
        if boots is not None and len(vms) >= boots:
            raise GuestBootError("the fresh guest did not boot")
        vm = FakeVM(len(vms))
        vms.append(vm)
        return vm, FakeSession(vm, plan), {"guest": {"vendor_hooks": []}}

    monkeypatch.setattr(bench_vm, "_bring_up", bring_up)
    monkeypatch.setattr("tests.vm.image.ensure_image", lambda log: FakeImage())
    method = bench_vm.METHOD_BY_KEY["kexec-e"]
    out = bench_vm.run_vm(rounds, [method], [], Path("/src"), lambda m: None, with_daemon=False)
    return out, vms


def test_a_defect_costs_one_run_and_the_rest_runs_in_a_fresh_guest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, vms = run(monkeypatch, ["ok", "defect", "ok", "ok"], rounds=4)
    assert "aborted" not in out
    assert out["defect_restarts"] == 1
    assert [r.get("guest") for r in out["runs"]] == [0, None, 1, 1]
    assert out["runs"][1]["error"].startswith("EmulatorDefectError: ")
    assert out["runs"][1]["round"] == 1
    assert [v.stopped for v in vms] == [True, True]
    # a run failed: both guests' serial logs are kept, none cleaned up
    assert out["serial_logs"] == [str(v.serial_log) for v in vms]
    assert not any(v.cleaned for v in vms)


def test_defects_beyond_the_restart_budget_stop_the_vm_part(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan = ["defect"] * (bench_vm.DEFECT_RESTARTS + 1) + ["ok"]
    out, vms = run(monkeypatch, plan, rounds=5)
    assert out["aborted"].startswith("EmulatorDefectError: ")
    assert out["defect_restarts"] == bench_vm.DEFECT_RESTARTS
    assert len(out["runs"]) == bench_vm.DEFECT_RESTARTS + 1
    assert all(r["error"].startswith("EmulatorDefectError") for r in out["runs"])
    assert len(vms) == bench_vm.DEFECT_RESTARTS + 1 and all(v.stopped for v in vms)


def test_without_a_defect_the_one_guest_is_cleaned_up(monkeypatch: pytest.MonkeyPatch) -> None:
    out, vms = run(monkeypatch, ["ok", "ok"], rounds=2)
    assert out["defect_restarts"] == 0 and "serial_logs" not in out
    assert len(vms) == 1 and vms[0].cleaned


def test_a_fresh_guest_that_does_not_boot_stops_the_vm_part(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, vms = run(monkeypatch, ["defect"], rounds=3, boots=1)
    assert out["aborted"].startswith("GuestBootError: the fresh guest did not boot")
    assert out["serial_logs"] == [str(vms[0].serial_log)]  # the failed guest's, once
