"""QEMU virtual-machine test harness for liveupd's end-to-end tests (see docs/vm-harness.md)."""
