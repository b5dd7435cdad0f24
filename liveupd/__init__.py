"""liveupd: live kernel updates through a safe, staged kexec transition."""

__version__ = "0.1.0"
