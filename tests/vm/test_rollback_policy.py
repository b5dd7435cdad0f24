"""End-to-end: verify policy ``rollback`` (scenario 8).

With ``[verify] on-failure = "rollback"`` and a verify hook that fails, the
guest goes A -> B, verification on B fails, and liveupd transitions back to
A by itself.  The hook fails on A too, so verification of the rollback fails
as well, and liveupd must not roll back again: at most once per original
transition.  History shows both transitions.
"""

from __future__ import annotations

from tests.vm import liveupd_guest as g
from tests.vm.guest_vm import VMFactory
from tests.vm.image import GuestImage


def test_failed_verification_rolls_back_once(vm_factory: VMFactory, vm_image: GuestImage) -> None:
    a, b = vm_image.kernel_a.release, vm_image.kernel_b.release
    vm = vm_factory(kernel=a)
    g.install(vm)
    g.write_dropin(vm, "50-rollback", '[verify]\non-failure = "rollback"\n')
    # The hook runs in liveupd-verify.service's sandbox: PrivateTmp (a /var/tmp of its
    # own), the state directory writable (docs/hooks.md).
    g.write_hook(
        vm,
        "70-always-fails",
        g.sh_hook(
            "verify",
            'echo "verify ran on $(uname -r)" >> /var/lib/liveupd/test-verify.log; exit 1',
        ),
    )
    vm.run(["liveupctl", "stage", b], timeout=300)
    first_boot = vm.boot_info()
    vm.spawn("liveupctl exec >/run/liveupctl-exec.log 2>&1")

    on_b = vm.wait_for_new_boot(first_boot.boot_id)
    assert on_b.release == b
    # The early-boot verifier fails on B and transitions back to A without help.
    back = vm.wait_for_new_boot(on_b.boot_id)
    assert back.release == a
    assert g.wait_verified(vm) == "failed"  # the rollback's own verification failed too ...

    entries = g.history(vm)
    rollback, original = entries[0], entries[1]
    assert original["new_release"] == b and original["state"] == "recovery-failed"
    assert rollback["rollback_of"] == original["id"]
    assert rollback["new_release"] == a and rollback["state"] == "recovery-failed"
    # ... and no second rollback was started: nothing is staged or loaded, we stay on A.
    assert not g.kexec_loaded(vm)
    assert g.ctl_json(vm, "status")["staged"] is None
    assert vm.boot_info().boot_id == back.boot_id
    assert vm.read_text("/var/lib/liveupd/test-verify.log").split("\n")[:2] == [
        f"verify ran on {b}",
        f"verify ran on {a}",
    ]
