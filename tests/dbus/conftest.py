"""tests/dbus: the daemon on a private bus, driven by real clients."""

from tests.dbus.fixtures import (  # noqa: F401 - fixtures
    bus,
    daemon,
    logind,
    polkit,
    procs,
    recorder,
    start_daemon,
)
