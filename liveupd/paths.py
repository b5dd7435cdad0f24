"""Default locations, following systemd's conventions: /etc overrides /usr/lib."""

from __future__ import annotations

from pathlib import Path

CONFIG_FILE = Path("/etc/liveupd/liveupd.conf")
# Drop-in directories, lowest priority first; a file name in a later directory
# replaces the same name in an earlier one, then all are applied in name order.
DROPIN_DIRS = (
    Path("/usr/lib/liveupd/liveupd.conf.d"),
    Path("/run/liveupd/liveupd.conf.d"),
    Path("/etc/liveupd/liveupd.conf.d"),
)
VENDOR_HOOK_DIR = Path("/usr/lib/liveupd/hooks.d")
ADMIN_HOOK_DIR = Path("/etc/liveupd/hooks.d")
STATE_DIR = Path("/var/lib/liveupd")
RUNTIME_DIR = Path("/run/liveupd")
