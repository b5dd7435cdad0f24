"""The one exception hierarchy of liveupd.

Every kind of failure is a subclass of :class:`LiveUpdError`, and each kind
maps to exactly one D-Bus error name and one CLI exit code.  Messages say what
went wrong *and* what to do about it; the D-Bus layer sends them unchanged and
``liveupctl`` prints them unchanged.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar

ERROR_PREFIX = "org.liveupd.LiveUpdate1.Error."


class ExitCode(IntEnum):
    """Exit codes of ``liveupd`` and ``liveupctl`` (documented in the README)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    NOTHING_TO_DO = 3
    NOT_AUTHORIZED = 4
    UNSUPPORTED = 5


class LiveUpdError(Exception):
    """Base of all liveupd errors.

    ``message`` is the full, user-facing text: what happened and what to do.
    """

    dbus_name: ClassVar[str] = ERROR_PREFIX + "Failed"
    exit_code: ClassVar[ExitCode] = ExitCode.FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def kind(self) -> str:
        """The short kind name: the last component of the D-Bus error name."""
        return self.dbus_name.rsplit(".", 1)[-1]


class Failed(LiveUpdError):
    """A transition step failed for a reason that has no more specific kind."""


class ConfigError(LiveUpdError):
    """The configuration or a hook manifest is invalid; nothing was changed."""

    dbus_name = ERROR_PREFIX + "InvalidConfig"
    exit_code = ExitCode.FAILED

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class InvalidArgument(LiveUpdError):
    dbus_name = ERROR_PREFIX + "InvalidArgument"
    exit_code = ExitCode.USAGE


class InvalidKernel(LiveUpdError):
    """The kernel or initrd file is missing, unsafe, or not a kernel."""

    dbus_name = ERROR_PREFIX + "InvalidKernel"
    exit_code = ExitCode.FAILED


class NotLoadable(InvalidKernel):
    """The kernel refused the image as not loadable (ENOEXEC)."""


class KernelQuarantined(LiveUpdError):
    """A transition fell back from this kernel: it is not staged until an admin clears it."""

    dbus_name = ERROR_PREFIX + "Quarantined"
    exit_code = ExitCode.FAILED


class SignatureRejected(LiveUpdError):
    dbus_name = ERROR_PREFIX + "SignatureRejected"
    exit_code = ExitCode.FAILED


class OutOfMemory(LiveUpdError):
    """kexec_file_load failed with ENOMEM."""

    dbus_name = ERROR_PREFIX + "OutOfMemory"
    exit_code = ExitCode.FAILED


class KexecBusy(LiveUpdError):
    """kexec_file_load failed with EBUSY: another kexec operation holds the lock."""

    dbus_name = ERROR_PREFIX + "KexecBusy"
    exit_code = ExitCode.FAILED


class KexecRejected(LiveUpdError):
    """kexec_file_load failed with EINVAL: the kernel refused the arguments."""

    dbus_name = ERROR_PREFIX + "KexecRejected"
    exit_code = ExitCode.FAILED


class Unsupported(LiveUpdError):
    """kexec cannot work on this machine (or this kernel lacks kexec_file_load)."""

    dbus_name = ERROR_PREFIX + "Unsupported"
    exit_code = ExitCode.UNSUPPORTED


class Busy(LiveUpdError):
    """Another transition is staged or running."""

    dbus_name = ERROR_PREFIX + "Busy"
    exit_code = ExitCode.FAILED


class NotStaged(LiveUpdError):
    """Execute or Cancel was called with nothing staged."""

    dbus_name = ERROR_PREFIX + "NotStaged"
    exit_code = ExitCode.NOTHING_TO_DO


class Inhibited(LiveUpdError):
    """A logind block inhibitor on shutdown refuses the transition."""

    dbus_name = ERROR_PREFIX + "Inhibited"
    exit_code = ExitCode.FAILED


class HookFailed(LiveUpdError):
    """A hook exited non-zero, timed out, or could not be started."""

    dbus_name = ERROR_PREFIX + "HookFailed"
    exit_code = ExitCode.FAILED

    def __init__(self, message: str, *, hook: str = "") -> None:
        super().__init__(message)
        self.hook = hook


class Cancelled(LiveUpdError):
    """The transition was cancelled on request and rolled back."""

    dbus_name = ERROR_PREFIX + "Cancelled"
    exit_code = ExitCode.FAILED


class AccessDenied(LiveUpdError):
    """The caller is not authorized (polkit said no, or there was no answer)."""

    dbus_name = "org.freedesktop.DBus.Error.AccessDenied"
    exit_code = ExitCode.NOT_AUTHORIZED


def all_error_kinds() -> list[type[LiveUpdError]]:
    """Every concrete error class, for tests and documentation."""
    out: list[type[LiveUpdError]] = []
    todo: list[type[LiveUpdError]] = [LiveUpdError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


def error_for_dbus_name(name: str) -> type[LiveUpdError]:
    """The most general error class that carries the D-Bus error ``name``."""
    for cls in all_error_kinds():
        if cls.dbus_name == name:
            return cls
    return LiveUpdError
