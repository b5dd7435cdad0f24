"""The configuration schema: every field has a default, so no file is needed.

Key names are the documented TOML names (kebab-case); keep them stable, users
and other components rely on them.  Each section is a frozen dataclass that
:func:`liveupd.schema.load` validates (strictly: unknown keys and values of the
wrong type are errors); constructing one in code does not validate it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from liveupd import paths, schema
from liveupd.schema import Rule
from liveupd.unitnames import is_service_name
from liveupd.validation import is_unit_name


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"expected an absolute path starting with '/', not {value!r}")
    return value


def _all_absolute(values: list[str]) -> list[str]:
    return [_absolute(v) for v in values]


AbsPath = Annotated[str, Rule(min_length=1)]
AbsPaths = Annotated[list[AbsPath], Rule(check=_all_absolute)]

_PCI_CLASS = re.compile(r"^0x[0-9a-fA-F]{2,6}$")


def _pci_class(v: str) -> str:
    if not _PCI_CLASS.fullmatch(v):
        raise ValueError(
            "expected a hex PCI class prefix like '0x02' (network) or '0x0200' (ethernet)"
        )
    return v.lower()


def _sysfs_path(v: str) -> str:
    if not v.startswith("/sys/"):
        raise ValueError("expected a path under /sys/, e.g. /sys/devices/pci0000:00/...")
    return v


@dataclass(frozen=True, kw_only=True)
class DeviceSelector:
    """Selects devices; every key given must match (AND), a list of selectors is OR."""

    subsystem: str | None = None
    driver: str | None = None
    pci_class: Annotated[str, Rule(check=_pci_class)] | None = field(
        default=None, metadata=schema.key("pci-class")
    )
    sysfs_path: Annotated[str, Rule(check=_sysfs_path)] | None = field(
        default=None, metadata=schema.key("sysfs-path")
    )
    property: dict[str, str] | None = None

    def _validated(self) -> None:
        if all(getattr(self, f.name) is None for f in dataclasses.fields(self)):
            raise ValueError(
                "empty selector: give at least one of subsystem, driver, pci-class, "
                "sysfs-path, property"
            )


@dataclass(frozen=True, kw_only=True)
class KernelSection:
    allowed_dirs: AbsPaths = field(
        default_factory=lambda: ["/boot", "/usr/lib/modules", "/efi", "/boot/efi"],
        metadata=schema.key("allowed-dirs"),
    )
    signature: Literal["auto", "require", "off"] = "auto"
    auto_stage: bool = field(default=False, metadata=schema.key("auto-stage"))


@dataclass(frozen=True, kw_only=True)
class HooksSection:
    dirs: AbsPaths = field(
        default_factory=lambda: [str(paths.VENDOR_HOOK_DIR), str(paths.ADMIN_HOOK_DIR)]
    )
    timeout: Annotated[float, Rule(gt=0, le=3600)] = 30


@dataclass(frozen=True, kw_only=True)
class DevicesSection:
    unbind: list[DeviceSelector] = field(default_factory=lambda: [DeviceSelector(subsystem="net")])
    keep: list[DeviceSelector] = field(default_factory=list)
    timeout: Annotated[float, Rule(gt=0, le=600)] = 10


def _mounts(v: str | list[str]) -> str | list[str]:
    if isinstance(v, list):
        return _all_absolute(v)
    return v


@dataclass(frozen=True, kw_only=True)
class StorageSection:
    freeze: Annotated[Literal["auto"] | list[AbsPath], Rule(check=_mounts)] = "auto"


@dataclass(frozen=True, kw_only=True)
class VerifySection:
    on_failure: Literal["report", "rollback"] = field(
        default="report", metadata=schema.key("on-failure")
    )
    settle_timeout: Annotated[float, Rule(gt=0, le=3600)] = field(
        default=60, metadata=schema.key("settle-timeout")
    )


_WATCHDOG_NODE = re.compile(r"^/dev/watchdog[0-9]+$")

DmiPattern = Annotated[str, Rule(min_length=1, max_length=256)]


@dataclass(frozen=True, kw_only=True)
class PlatformPattern:
    """A platform kexec does not come back on: shell patterns (``*``, ``?``, ``[...]``)
    matched against DMI's sys_vendor and product_name, case ignored; every key given must
    match."""

    vendor: DmiPattern | None = None
    product: DmiPattern | None = None

    def _validated(self) -> None:
        if self.vendor is None and self.product is None:
            raise ValueError("empty pattern: give vendor, product or both")


VOLUME_NAME_MAX = 4096


def _volumes(v: bool | list[str]) -> bool | list[str]:
    if isinstance(v, list):
        for name in v:
            if not 0 < len(name) <= VOLUME_NAME_MAX:
                raise ValueError(
                    f"expected crypttab names or devices of 1 to {VOLUME_NAME_MAX} characters, "
                    f"not {name[:80]!r}"
                )
    return v


def _login_units(v: list[str]) -> list[str]:
    for unit in v:
        if not is_unit_name(unit):
            raise ValueError(
                f"{unit[:80]!r}: expected a systemd .service or .socket unit name, "
                'such as "ssh.socket"'
            )
    if len(set(v)) != len(v):
        raise ValueError("expected each unit once")
    return v


def _watchdog_device(v: str) -> str:
    if v and not _WATCHDOG_NODE.fullmatch(v):
        raise ValueError(
            'expected a watchdog device node like /dev/watchdog0, or "" for the first one'
        )
    return v


@dataclass(frozen=True, kw_only=True)
class ExecSection:
    """Execute, on the old kernel, and around the jump: remote sessions ended first,
    the hardware watchdog that guards the jump, panic= on the new kernel, and the
    machines that would not come back (refused)."""

    # End remote login sessions (logind) before any hook or step can take the
    # network down, so their peers see the connection close (liveupd/sessions/).
    end_remote_sessions: bool = field(default=True, metadata=schema.key("end-remote-sessions"))
    # Before that, the remote-login listeners are stopped (the active ones, in this
    # order; started again on rollback) so that no new login can start: [] = off.
    remote_login_units: Annotated[list[str], Rule(max_length=16, check=_login_units)] = field(
        default_factory=lambda: ["ssh.socket", "ssh.service"],
        metadata=schema.key("remote-login-units"),
    )
    watchdog_sec: Annotated[int, Rule(ge=0, le=3600)] = field(
        default=120, metadata=schema.key("watchdog-sec")
    )
    watchdog_device: Annotated[str, Rule(check=_watchdog_device)] = field(
        default="", metadata=schema.key("watchdog-device")
    )
    panic_sec: Annotated[int, Rule(ge=0, le=3600)] = field(
        default=10, metadata=schema.key("panic-sec")
    )
    # A volume unlocked by a systemd-tpm2 token refuses the live update unless allowed:
    # true (every volume), or the volumes by crypttab name or device.
    allow_tpm2_unlock: Annotated[bool | list[str], Rule(check=_volumes)] = field(
        default=False, metadata=schema.key("allow-tpm2-unlock")
    )
    deny_platforms: list[PlatformPattern] = field(
        default_factory=list, metadata=schema.key("deny-platforms")
    )


def _service_units(v: list[str]) -> list[str]:
    seen: set[str] = set()
    for unit in v:
        shown = unit if len(unit) <= 80 else unit[:80] + "..."
        if not is_service_name(unit):
            raise ValueError(
                "expected service unit names such as 'example.service' or "
                f"'worker@1.service', not {shown!r}"
            )
        if unit in seen:
            raise ValueError(f"{shown!r} is listed twice")
        seen.add(unit)
    return v


@dataclass(frozen=True, kw_only=True)
class PreserveSection:
    """Services checkpointed with CRIU before the jump and restored after it (docs/preserve.md)."""

    units: Annotated[list[str], Rule(check=_service_units)] = field(default_factory=list)
    criu: Annotated[str, Rule(min_length=1, check=_absolute)] = "/usr/sbin/criu"
    dump_timeout: Annotated[float, Rule(gt=0, le=3600)] = field(
        default=120, metadata=schema.key("dump-timeout")
    )
    restore_timeout: Annotated[float, Rule(gt=0, le=3600)] = field(
        default=300, metadata=schema.key("restore-timeout")
    )


@dataclass(frozen=True, kw_only=True)
class DaemonSection:
    state_dir: Annotated[str, Rule(min_length=1, check=_absolute)] = field(
        default=str(paths.STATE_DIR), metadata=schema.key("state-dir")
    )
    history_limit: Annotated[int, Rule(ge=1, le=100000)] = field(
        default=100, metadata=schema.key("history-limit")
    )


@dataclass(frozen=True, kw_only=True)
class Config:
    kernel: KernelSection = field(default_factory=KernelSection)
    hooks: HooksSection = field(default_factory=HooksSection)
    devices: DevicesSection = field(default_factory=DevicesSection)
    storage: StorageSection = field(default_factory=StorageSection)
    exec: ExecSection = field(default_factory=ExecSection)
    verify: VerifySection = field(default_factory=VerifySection)
    preserve: PreserveSection = field(default_factory=PreserveSection)
    daemon: DaemonSection = field(default_factory=DaemonSection)
    # The main file it was loaded from (load_config); None: the default location.
    # Not a key of the file: never loaded, never dumped, not compared.
    _source: Path | None = field(
        default=None, metadata={schema.INTERNAL: True}, compare=False, repr=False
    )

    @property
    def source(self) -> Path:
        """The configuration file in use, for messages that tell where to change a key."""
        return self._source or paths.CONFIG_FILE

    def from_file(self, path: Path | None) -> Config:
        """This configuration, as loaded from ``path`` (None: the default location)."""
        return dataclasses.replace(self, _source=path.absolute() if path is not None else None)

    @property
    def state_dir(self) -> Path:
        return Path(self.daemon.state_dir)

    @property
    def hook_dirs(self) -> list[Path]:
        return [Path(d) for d in self.hooks.dirs]
