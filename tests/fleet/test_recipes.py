"""docs/fleet.md shows the fleet recipes exactly as the VM suite runs them.

tests/vm/test_fleet.py runs docs/examples/ansible/liveupd-reboot.yml with
ansible-playbook and kured's command through nsenter (tests/vm/fleet/recipes.py);
here, without a VM: the documentation includes that playbook verbatim and that
command, and ansible-core (the test extras) accepts the playbook.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.vm.fleet.recipes import FLEET_DOC, KURED_COMMAND, KURED_NSENTER, PLAYBOOK

RECORD = Path(__file__).resolve().parents[1] / "vm" / "fleet" / "record.yml"


def test_the_doc_shows_the_tested_playbook_verbatim() -> None:
    doc = FLEET_DOC.read_text()
    assert f"```yaml\n{PLAYBOOK.read_text()}```\n" in doc
    assert "docs/examples/ansible/liveupd-reboot.yml" in doc


def test_the_playbook_reboots_through_liveupctl_with_the_fallback() -> None:
    [play] = yaml.safe_load(PLAYBOOK.read_text())
    reboot = next(t for t in play["tasks"] if "ansible.builtin.reboot" in t)
    command = reboot["ansible.builtin.reboot"]["reboot_command"]
    assert command == "/usr/bin/liveupctl reboot --fallback --mode {{ liveupd_mode }}"
    assert play["vars"]["liveupd_mode"] == "systemd"  # liveupctl reboot's default
    assert reboot["register"] == "liveupd_reboot"  # what tests/vm/fleet/record.yml reads


def test_the_doc_shows_the_tested_kured_command() -> None:
    doc = FLEET_DOC.read_text()
    assert f"--reboot-command={KURED_COMMAND}\n" in doc
    assert f"{KURED_NSENTER} {KURED_COMMAND}" in doc


def test_ansible_accepts_the_playbook(tmp_path: Path) -> None:
    ansible_playbook = Path(sys.executable).parent / "ansible-playbook"
    (tmp_path / "ansible.cfg").write_text("[defaults]\nretry_files_enabled = False\n")
    done = subprocess.run(
        [ansible_playbook, "--syntax-check", "-i", "localhost,", PLAYBOOK, RECORD],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"),
            "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
            "LC_ALL": "C.UTF-8",
        },
    )
    assert done.returncode == 0, done.stdout + done.stderr
