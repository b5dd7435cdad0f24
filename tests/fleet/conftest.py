"""tests/fleet: the kernel hooks, status and reboot against the dry-run daemon on a private bus."""

from tests.dbus.fixtures import (  # noqa: F401 - fixtures
    bus,
    daemon,
    logind,
    polkit,
    procs,
    recorder,
    start_daemon,
)
