"""liveupd as installed, under systemd, on the real system bus of a Debian guest.

One guest (kernel A), liveupd installed from its .deb, then in order:
units verified by the guest's own systemd; bus activation through the shipped
activation file and Type=notify readiness; introspection on the real system bus
equal to the shipped XML; the unprivileged user (tester, uid 1000) denied by the
real polkitd, with nothing staged; root stages and cancels through liveupctl;
a LUKS2 volume with a systemd-tpm2 token in /etc/crypttab refuses Stage, naming the
volume and the override, until the override is set; stopping the service.  Whole
transitions through the installed service, in
both exec modes, are in test_live_update.py.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from tests.dbus.test_shipped_files import XML, normalize
from tests.vm.guest_vm import GuestVM
from tests.vm.image import GuestImage
from tests.vm.shared import module_guest

NAME = "org.liveupd.LiveUpdate1"
PATH = "/org/liveupd/LiveUpdate1"
MANAGER = "org.liveupd.LiveUpdate1.Manager"
TRANSITION = "org.liveupd.LiveUpdate1.Transition"


@pytest.fixture(scope="module")
def svc_vm(vm_image: GuestImage, request: pytest.FixtureRequest) -> Iterator[GuestVM]:
    with module_guest(vm_image, request) as vm:
        vm.install_project()
        yield vm


def show(vm: GuestVM, *props: str) -> dict[str, str]:
    out = vm.run(["systemctl", "show", "liveupd.service", *(f"--property={p}" for p in props)])
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def test_units_verify_in_the_guest(svc_vm: GuestVM) -> None:
    result = svc_vm.run(
        "systemd-analyze verify /usr/lib/systemd/system/liveupd.service "
        "/usr/lib/systemd/system/liveupd-verify.service",
        check=False,
    )
    assert result.rc == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_bus_activation_and_notify_readiness(svc_vm: GuestVM, vm_image: GuestImage) -> None:
    vm = svc_vm
    assert show(vm, "ActiveState")["ActiveState"] == "inactive"
    # The first call activates the service through the bus (SystemdService=liveupd.service).
    # It is answered once the name is owned; the unit is "active" only after READY=1,
    # which follows recovery.
    state = vm.run(["busctl", "get-property", NAME, PATH, MANAGER, "State"], timeout=180)
    assert state.stdout.strip() == 's "idle"'
    vm.run("until systemctl is-active -q liveupd.service; do sleep 0.1; done", timeout=120)
    props = show(
        vm,
        "ActiveState",
        "SubState",
        "Type",
        "BusName",
        "StatusText",
        "WatchdogUSec",
        "NRestarts",
        "Environment",
    )
    assert props["ActiveState"] == "active" and props["SubState"] == "running"
    assert props["Type"] == "notify" and props["BusName"] == NAME
    assert props["StatusText"] == f"Idle; running {vm_image.kernel_a.release}"
    assert props["WatchdogUSec"] == "1min"
    assert props["NRestarts"] == "0"
    assert "PYTHONDONTWRITEBYTECODE=1" in props["Environment"]
    journal = vm.run("journalctl -b -u liveupd --no-pager -o cat").stdout
    assert "event=service.name-owned" in journal and "event=service.ready" in journal
    assert "dry_run=False" in journal
    assert json.loads(vm.run(["liveupctl", "status", "--json"]).stdout)["unsupported"] is None


# CAP_DAC_READ_SEARCH 2, CAP_NET_ADMIN 12, CAP_SYS_PTRACE 19, CAP_SYS_ADMIN 21, CAP_SYS_BOOT 22
DAEMON_CAPABILITIES = (1 << 2) | (1 << 12) | (1 << 19) | (1 << 21) | (1 << 22)


def test_the_sandbox_is_in_force(svc_vm: GuestVM) -> None:
    """The units as the guest's systemd loaded them, and the running daemon's own view."""
    vm = svc_vm
    for unit, target in (("liveupd.service", 5.0), ("liveupd-verify.service", 6.0)):
        out = vm.run(["systemd-analyze", "security", "--no-pager", unit]).stdout
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
        assert m, out
        print(f"\n[guest] systemd-analyze security {unit}: {m.group(1)}")
        assert float(m.group(1)) <= target, out
    pid = show(vm, "MainPID")["MainPID"]
    status = dict(line.split(":", 1) for line in vm.read_text(f"/proc/{pid}/status").splitlines())
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"  # a filter
    assert int(status["CapBnd"], 16) == DAEMON_CAPABILITIES


def test_introspection_on_the_real_system_bus(svc_vm: GuestVM) -> None:
    live = svc_vm.run(["busctl", "introspect", "--xml-interface", NAME, PATH]).stdout
    shipped = normalize(ET.parse(XML).getroot(), {MANAGER, TRANSITION})
    assert normalize(ET.fromstring(live), {MANAGER}) == {MANAGER: shipped[MANAGER]}
    installed = svc_vm.read_text(f"/usr/share/dbus-1/interfaces/{NAME}.xml")
    assert installed == XML.read_text()


def test_unprivileged_user_is_denied_by_polkit(svc_vm: GuestVM) -> None:
    vm = svc_vm
    assert vm.run(["id", "-u"], user="tester").stdout.strip() == "1000"
    stage = vm.run(
        ["busctl", "call", NAME, PATH, MANAGER, "Stage", "sssa{sv}", "", "", "", "0"],
        user="tester",
        check=False,
    )
    assert stage.rc != 0
    assert "Access denied" in stage.stderr  # busctl prints only this for AccessDenied
    ctl = vm.run(["liveupctl", "stage"], user="tester", check=False)
    assert ctl.rc == 4, ctl.stderr
    assert "uid 1000 is not allowed" in ctl.stderr and "org.liveupd.stage" in ctl.stderr
    can = vm.run(["busctl", "call", NAME, PATH, MANAGER, "CanLiveUpdate"], user="tester")
    assert can.stdout.strip() in ('s "no"', 's "challenge"')
    # Reading is open, and nothing was staged or loaded.
    status = json.loads(vm.run(["liveupctl", "status", "--json"], user="tester").stdout)
    assert status["state"] == "idle" and status["staged"] is None
    assert vm.read_text("/sys/kernel/kexec_loaded").strip() == "0"
    journal = vm.run("journalctl -b -u liveupd --no-pager -o cat").stdout
    assert "event=auth.denied" in journal and "uid=1000" in journal


def test_root_stages_and_cancels(svc_vm: GuestVM, vm_image: GuestImage) -> None:
    vm = svc_vm
    b = vm_image.kernel_b.release
    staged = vm.run(["liveupctl", "stage", b], timeout=300)
    assert f"Staged {b} as transition" in staged.stdout
    assert vm.read_text("/sys/kernel/kexec_loaded").strip() == "1"
    status = json.loads(vm.run(["liveupctl", "status", "--json"]).stdout)
    assert status["state"] == "staged" and status["staged"]["target_release"] == b
    assert show(vm, "StatusText")["StatusText"].startswith(f"Staged {b}")
    vm.run(["liveupctl", "cancel"], timeout=300)
    assert vm.read_text("/sys/kernel/kexec_loaded").strip() == "0"
    history = json.loads(vm.run(["liveupctl", "history", "--json", "--limit", "1"]).stdout)
    assert history[0]["state"] == "cancelled" and history[0]["new_release"] == b


# A systemd-tpm2 token as systemd-cryptenroll --tpm2-device writes it (the blob and policy
# are placeholders: no TPM is needed to be refused).
TPM2_TOKEN = {
    "type": "systemd-tpm2",
    "keyslots": ["0"],
    "tpm2-blob": "AAAA",
    "tpm2-pcrs": [7],
    "tpm2-pcr-bank": "sha256",
    "tpm2-primary-alg": "ecc",
    "tpm2-policy-hash": "00",
    "tpm2-pin": False,
}
TPM_IMAGE = "/var/lib/tpmvol.img"
TPM_DROPIN = "/etc/liveupd/liveupd.conf.d/50-tpm2.conf"


def test_a_volume_a_tpm_unlocks_refuses_the_live_update(
    svc_vm: GuestVM, vm_image: GuestImage
) -> None:
    """A LUKS2 volume with a systemd-tpm2 token in /etc/crypttab: the daemon, in its
    sandbox, reads the header with cryptsetup; status and Stage name the volume and the
    override; with the override set, Stage works."""
    vm = svc_vm
    b = vm_image.kernel_b.release
    vm.run(f"truncate -s 24M {TPM_IMAGE}")
    loop = vm.run(["losetup", "--show", "-f", TPM_IMAGE]).stdout.strip()
    try:
        vm.run(
            "printf pw | cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 "
            f"--pbkdf-force-iterations 1000 --key-file - {loop}",
            timeout=120,
        )
        vm.write_file("/root/tpm2-token.json", json.dumps(TPM2_TOKEN))
        vm.run(["cryptsetup", "token", "import", loop, "--json-file", "/root/tpm2-token.json"])
        uuid = vm.run(["cryptsetup", "luksUUID", loop]).stdout.strip()
        vm.run(["udevadm", "trigger", "--settle", "--action=change", loop], timeout=120)
        assert vm.run(["readlink", "-f", f"/dev/disk/by-uuid/{uuid}"]).stdout.strip() == loop
        vm.run(["cp", "-a", "/etc/crypttab", "/etc/crypttab.orig"], check=False)
        vm.run(f"echo 'tpmvol UUID={uuid} none luks' >> /etc/crypttab")

        status = json.loads(vm.run(["liveupctl", "status", "--json"], timeout=120).stdout)
        print(f"\n[guest] refusals: {status['refusals']}")
        assert [r["reason"] for r in status["refusals"]] == ["tpm2-unlock"]
        message = status["refusals"][0]["message"]
        assert message.startswith(f"{loop} (crypttab name 'tpmvol'; listed as 'UUID={uuid}')")
        assert "systemd-tpm2 token" in message and "[exec] allow-tpm2-unlock" in message
        assert status["can_live_update"] == "na" and status["unsupported"] == message
        text = vm.run(["liveupctl", "status"], user="tester").stdout
        assert f"tpm2-unlock: {loop} (crypttab name 'tpmvol'" in text
        stage = vm.run(["liveupctl", "stage", b], check=False, timeout=300)
        assert stage.rc == 5, stage.stderr  # ExitCode.UNSUPPORTED
        assert f"tpm2-unlock: {loop} (crypttab name 'tpmvol'" in stage.stderr
        assert '[exec] allow-tpm2-unlock = true, or = ["tpmvol"]' in stage.stderr
        assert vm.read_text("/sys/kernel/kexec_loaded").strip() == "0"

        # The admin's override for this volume; the daemon reads it when it starts.
        vm.write_file(TPM_DROPIN, '[exec]\nallow-tpm2-unlock = ["tpmvol"]\n')
        vm.run(["systemctl", "stop", "liveupd.service"], timeout=300)
        status = json.loads(vm.run(["liveupctl", "status", "--json"], timeout=120).stdout)
        assert status["refusals"] == [] and status["unsupported"] is None
        staged = vm.run(["liveupctl", "stage", b], timeout=300)
        assert f"Staged {b} as transition" in staged.stdout
        assert vm.read_text("/sys/kernel/kexec_loaded").strip() == "1"
        vm.run(["liveupctl", "cancel"], timeout=300)
        assert vm.read_text("/sys/kernel/kexec_loaded").strip() == "0"
    finally:
        vm.run(
            "if [ -e /etc/crypttab.orig ]; then mv /etc/crypttab.orig /etc/crypttab; "
            f"else rm -f /etc/crypttab; fi; rm -f {TPM_DROPIN} /root/tpm2-token.json; "
            f"losetup -d {loop}; rm -f {TPM_IMAGE}",
            check=False,
        )
        vm.run(["systemctl", "stop", "liveupd.service"], timeout=300, check=False)


def test_stop(svc_vm: GuestVM) -> None:
    vm = svc_vm
    vm.run(["systemctl", "stop", "liveupd.service"], timeout=300)
    assert show(vm, "ActiveState", "Result") == {"ActiveState": "inactive", "Result": "success"}
    assert "event=service.stopping" in vm.run("journalctl -b -u liveupd -o cat").stdout
