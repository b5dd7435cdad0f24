"""The systemd service names liveupd accepts (systemd.unit(5)): regular expressions only.

Shared by the configuration (``[preserve] units``) and the preserved-service
records the boot-time generator reads, which must stay light to import.
"""

from __future__ import annotations

import re

NAME_MAX = 255
# Without escapes; an instance of a template is fine, the template itself
# (``worker@.service``) is not a running service.
_SERVICE = re.compile(r"[A-Za-z0-9:_.-]+(@[A-Za-z0-9:_.-]+)?\.service")


def is_service_name(value: str) -> bool:
    return len(value) <= NAME_MAX and _SERVICE.fullmatch(value) is not None
