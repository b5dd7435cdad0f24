"""The fleet recipes docs/fleet.md shows, as the VM suite runs them.

tests/fleet/test_recipes.py checks that the documentation shows exactly these, so
the recipes cannot drift from what tests/vm/test_fleet.py proves.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
FLEET_DOC = REPO / "docs" / "fleet.md"
# The Ansible playbook; docs/fleet.md includes it verbatim.
PLAYBOOK = REPO / "docs" / "examples" / "ansible" / "liveupd-reboot.yml"
# kured's --reboot-command, and how kured runs it (pkg/reboot/command.go): from its
# pod, in PID 1's mount namespace.
KURED_COMMAND = "/usr/bin/liveupctl reboot --fallback"
KURED_NSENTER = "/usr/bin/nsenter -m/proc/1/ns/mnt --"
