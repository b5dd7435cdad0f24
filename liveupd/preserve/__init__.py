"""Services that keep their memory across the update: CRIU checkpoint and restore (issue 16).

``plan.py`` (pure) decides what CRIU is asked to do (command lines, the
preflight's refusals, the size estimate, the restore record and the unit
drop-in); ``step.py`` holds the check-phase preflight and the checkpoint-phase
dump with its undo; ``systemd.py`` is the real backend (systemctl, /proc,
systemd-run); ``generator.py`` is the systemd generator (it imports
nothing else on an ordinary boot) and ``dropins.py`` its work: the drop-ins
that make the new boot restore each service inside its own unit;
``restore.py`` is the new kernel's verification of it (docs/preserve.md).
"""
