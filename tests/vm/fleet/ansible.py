"""ansible-playbook from the host against a guest, as an Ansible user runs it.

    ansible = Ansible(port)                       # key, inventory, ansible.cfg in /tmp/ans-*
    vm.write_file("/root/.ssh/authorized_keys", ansible.public_key, 0o600)
    run = ansible.reboot(mode="direct")           # docs/examples/ansible/liveupd-reboot.yml
    run.reboot["rebooted"]                        # what the reboot task returned
    ansible.close()

Everything Ansible reads is generated here, per run: the inventory (the host port
QEMU forwards to the guest's sshd, the key), an ansible.cfg named by ANSIBLE_CONFIG
(so no ./ansible.cfg, ~/.ansible.cfg or /etc/ansible/ansible.cfg is read) and a
private HOME and ANSIBLE_HOME; inherited ANSIBLE_* variables are dropped. The SSH
options are Ansible's defaults (ControlMaster=auto, ControlPersist=60s), plus
``-F /dev/null`` so that no ssh_config on the host applies.

ansible-playbook runs as a subprocess with a hard deadline: a run that does not end
(the hang of issue 20: a reboot command whose SSH connection never closes) is
killed and fails the test with its output, instead of holding up the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.vm.fleet.recipes import PLAYBOOK

RECORD = Path(__file__).resolve().parent / "record.yml"
# A run is a kexec (about 30 s under TCG) or a firmware reboot (about a minute) plus
# Ansible's own work; this is the deadline of a command that must end, not a timing.
DEADLINE = 600.0
SSH_ARGS = "-C -o ControlMaster=auto -o ControlPersist=60s"  # ansible-core's default


def ansible_bin(name: str) -> str:
    """The venv's ansible-playbook (beside this interpreter), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} not found: install the test extras (pip install -e .[test])")
    return found


@dataclass(frozen=True)
class PlaybookRun:
    rc: int
    output: str  # stdout and stderr
    reboot: dict[str, Any]  # the reboot task's registered result ({} if it never ran)
    seconds: float


class Ansible:
    def __init__(self, port: int, *, host: str = "127.0.0.1") -> None:
        # Short: the ControlMaster socket path (cp/<hash>) must fit a sockaddr_un.
        self.dir = Path(tempfile.mkdtemp(prefix="ans-", dir="/tmp"))
        self.control = self.dir / "cp"
        self.control.mkdir()
        (self.dir / "home").mkdir()
        self.key = self.dir / "id"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "liveupd-test", "-f", self.key],
            check=True,
        )
        self.public_key = (self.dir / "id.pub").read_text()
        self.inventory = self.dir / "inventory"
        self.inventory.write_text(
            "[guests]\n"
            f"guest ansible_host={host} ansible_port={port} ansible_user=root "
            f"ansible_ssh_private_key_file={self.key} "
            "ansible_python_interpreter=/usr/bin/python3\n"
        )
        self.config = self.dir / "ansible.cfg"
        self.config.write_text(
            "[defaults]\n"
            f"inventory = {self.inventory}\n"
            f"home = {self.dir / 'ansible-home'}\n"
            f"local_tmp = {self.dir / 'tmp'}\n"
            f"collections_path = {self.dir / 'collections'}\n"
            f"roles_path = {self.dir / 'roles'}\n"
            "host_key_checking = False\n"
            "retry_files_enabled = False\n"
            "nocolor = True\n"
            "[ssh_connection]\n"
            f"ssh_args = {SSH_ARGS} -F /dev/null -o UserKnownHostsFile=/dev/null\n"
            f"control_path_dir = {self.control}\n"
        )
        self.runs = 0

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update(
            HOME=str(self.dir / "home"),
            ANSIBLE_CONFIG=str(self.config),
            ANSIBLE_HOME=str(self.dir / "ansible-home"),
            ANSIBLE_FORCE_COLOR="0",
            LC_ALL="C.UTF-8",
        )
        return env

    def _run(self, argv: list[str], name: str, deadline: float) -> tuple[int, str, float]:
        """Run ``argv``; its status, output and duration. A run past ``deadline`` is
        killed (its whole process group) and fails with its output."""
        self.runs += 1
        log = self.dir / f"{self.runs:02d}-{name}.log"
        start = time.monotonic()
        with log.open("w") as out:
            # Files, not pipes: a ControlPersist master goes to the background and would
            # hold a pipe open for 60 s.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=self.dir,
                start_new_session=True,
            )
            try:
                rc = proc.wait(timeout=deadline)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                self.close_masters()
                raise AssertionError(
                    f"{Path(argv[0]).name} ({name}) did not end within {deadline:.0f} s: it hung "
                    f"(killed). Its output ({log}):\n{log.read_text()[-4000:]}"
                ) from None
        return rc, log.read_text(), time.monotonic() - start

    def adhoc(self, module: str, args: str, deadline: float = 120.0) -> tuple[int, str]:
        """``ansible guest -m MODULE -a ARGS``: its status and output."""
        rc, output, _ = self._run(
            [ansible_bin("ansible"), "guest", "-m", module, "-a", args], "adhoc", deadline
        )
        return rc, output

    def reboot(self, mode: str | None = None, deadline: float = DEADLINE) -> PlaybookRun:
        """The recipe playbook (then record.yml, which saves the reboot task's result)."""
        result = self.dir / f"reboot-{self.runs + 1:02d}.json"
        argv = [ansible_bin("ansible-playbook"), str(PLAYBOOK), str(RECORD)]
        argv += ["-e", f"liveupd_result_file={result}"]
        if mode is not None:
            argv += ["-e", f"liveupd_mode={mode}"]
        try:
            rc, output, seconds = self._run(argv, f"reboot-{mode or 'default'}", deadline)
        finally:
            self.close_masters()
        reboot = json.loads(result.read_text()) if result.exists() else {}
        return PlaybookRun(rc, output, reboot, seconds)

    def close_masters(self) -> None:
        """End the ControlPersist masters this run left (they would be sessions in the
        guest that the next transition ends, and stay for 60 s on the host)."""
        for control in self.control.iterdir():
            subprocess.run(
                ["ssh", "-F", "/dev/null", "-o", f"ControlPath={control}", "-O", "exit", "guest"],
                capture_output=True,
                check=False,
                timeout=30,
            )

    def close(self) -> None:
        self.close_masters()
        shutil.rmtree(self.dir, ignore_errors=True)


def free_local_port() -> int:
    """A free TCP port on the host's 127.0.0.1 (for QEMU to forward to the guest's sshd)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
