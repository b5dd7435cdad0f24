"""The configuration schema: every field has a default, so no file is needed.

Key names are the documented TOML names (kebab-case); keep them stable, users
and other components rely on them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    field_validator,
    model_validator,
)

from liveupd import paths
from liveupd.unitnames import is_service_name
from liveupd.validation import is_unit_name


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"expected an absolute path starting with '/', not {value!r}")
    return value


AbsPath = Annotated[str, Field(min_length=1)]

_PCI_CLASS = re.compile(r"^0x[0-9a-fA-F]{2,6}$")


class DeviceSelector(_Section):
    """Selects devices; every key given must match (AND), a list of selectors is OR."""

    subsystem: str | None = None
    driver: str | None = None
    pci_class: str | None = Field(default=None, alias="pci-class")
    sysfs_path: str | None = Field(default=None, alias="sysfs-path")
    property: dict[str, str] | None = None

    @field_validator("pci_class")
    @classmethod
    def _pci_class(cls, v: str | None) -> str | None:
        if v is not None and not _PCI_CLASS.match(v):
            raise ValueError(
                "expected a hex PCI class prefix like '0x02' (network) or '0x0200' (ethernet)"
            )
        return v.lower() if v else v

    @field_validator("sysfs_path")
    @classmethod
    def _sysfs_path(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/sys/"):
            raise ValueError("expected a path under /sys/, e.g. /sys/devices/pci0000:00/...")
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> DeviceSelector:
        if not self.model_fields_set:
            raise ValueError(
                "empty selector: give at least one of subsystem, driver, pci-class, "
                "sysfs-path, property"
            )
        return self


class KernelSection(_Section):
    allowed_dirs: list[AbsPath] = Field(
        default=["/boot", "/usr/lib/modules", "/efi", "/boot/efi"], alias="allowed-dirs"
    )
    signature: Literal["auto", "require", "off"] = "auto"
    auto_stage: bool = Field(default=False, alias="auto-stage")

    @field_validator("allowed_dirs")
    @classmethod
    def _dirs(cls, v: list[str]) -> list[str]:
        return [_absolute(d) for d in v]


class HooksSection(_Section):
    dirs: list[AbsPath] = Field(
        default=[str(paths.VENDOR_HOOK_DIR), str(paths.ADMIN_HOOK_DIR)],
    )
    timeout: float = Field(default=30, gt=0, le=3600)

    @field_validator("dirs")
    @classmethod
    def _dirs(cls, v: list[str]) -> list[str]:
        return [_absolute(d) for d in v]


class DevicesSection(_Section):
    unbind: list[DeviceSelector] = Field(default_factory=lambda: [DeviceSelector(subsystem="net")])
    keep: list[DeviceSelector] = Field(default_factory=list)
    timeout: float = Field(default=10, gt=0, le=600)


class StorageSection(_Section):
    freeze: Literal["auto"] | list[AbsPath] = "auto"

    @field_validator("freeze")
    @classmethod
    def _mounts(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list):
            return [_absolute(m) for m in v]
        return v


class VerifySection(_Section):
    on_failure: Literal["report", "rollback"] = Field(default="report", alias="on-failure")
    settle_timeout: float = Field(default=60, gt=0, le=3600, alias="settle-timeout")


_WATCHDOG_NODE = re.compile(r"^/dev/watchdog[0-9]+$")


class PlatformPattern(_Section):
    """A platform kexec does not come back on: shell patterns (``*``, ``?``, ``[...]``)
    matched against DMI's sys_vendor and product_name, case ignored; every key given must
    match."""

    vendor: str | None = Field(default=None, min_length=1, max_length=256)
    product: str | None = Field(default=None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _not_empty(self) -> PlatformPattern:
        if self.vendor is None and self.product is None:
            raise ValueError("empty pattern: give vendor, product or both")
        return self


VolumeName = Annotated[str, Field(min_length=1, max_length=4096)]


class ExecSection(_Section):
    """Execute, on the old kernel, and around the jump: remote sessions ended first,
    the hardware watchdog that guards the jump, panic= on the new kernel, and the
    machines that would not come back (refused)."""

    # End remote login sessions (logind) before any hook or step can take the
    # network down, so their peers see the connection close (liveupd/sessions/).
    end_remote_sessions: bool = Field(default=True, alias="end-remote-sessions")
    # Before that, the remote-login listeners are stopped (the active ones, in this
    # order; started again on rollback) so that no new login can start: [] = off.
    remote_login_units: list[str] = Field(
        default_factory=lambda: ["ssh.socket", "ssh.service"],
        max_length=16,
        alias="remote-login-units",
    )
    watchdog_sec: int = Field(default=120, ge=0, le=3600, alias="watchdog-sec")
    watchdog_device: str = Field(default="", alias="watchdog-device")
    panic_sec: int = Field(default=10, ge=0, le=3600, alias="panic-sec")
    # A volume unlocked by a systemd-tpm2 token refuses the live update unless allowed:
    # true (every volume), or the volumes by crypttab name or device.
    allow_tpm2_unlock: StrictBool | list[VolumeName] = Field(
        default=False, alias="allow-tpm2-unlock"
    )
    deny_platforms: list[PlatformPattern] = Field(default_factory=list, alias="deny-platforms")

    @field_validator("remote_login_units")
    @classmethod
    def _units(cls, v: list[str]) -> list[str]:
        for unit in v:
            if not is_unit_name(unit):
                raise ValueError(
                    f"{unit[:80]!r}: expected a systemd .service or .socket unit name, "
                    'such as "ssh.socket"'
                )
        if len(set(v)) != len(v):
            raise ValueError("expected each unit once")
        return v

    @field_validator("watchdog_device")
    @classmethod
    def _watchdog_device(cls, v: str) -> str:
        if v and not _WATCHDOG_NODE.match(v):
            raise ValueError(
                'expected a watchdog device node like /dev/watchdog0, or "" for the first one'
            )
        return v


class PreserveSection(_Section):
    """Services checkpointed with CRIU before the jump and restored after it (docs/preserve.md)."""

    units: list[str] = Field(default_factory=list)
    criu: AbsPath = "/usr/sbin/criu"
    dump_timeout: float = Field(default=120, gt=0, le=3600, alias="dump-timeout")
    restore_timeout: float = Field(default=300, gt=0, le=3600, alias="restore-timeout")

    @field_validator("units")
    @classmethod
    def _units(cls, v: list[str]) -> list[str]:
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

    @field_validator("criu")
    @classmethod
    def _criu(cls, v: str) -> str:
        return _absolute(v)


class DaemonSection(_Section):
    state_dir: AbsPath = Field(default=str(paths.STATE_DIR), alias="state-dir")
    history_limit: int = Field(default=100, ge=1, le=100000, alias="history-limit")

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, v: str) -> str:
        return _absolute(v)


class Config(_Section):
    kernel: KernelSection = KernelSection()
    hooks: HooksSection = HooksSection()
    devices: DevicesSection = DevicesSection()
    storage: StorageSection = StorageSection()
    exec: ExecSection = ExecSection()
    verify: VerifySection = VerifySection()
    preserve: PreserveSection = PreserveSection()
    daemon: DaemonSection = DaemonSection()
    # The main file it was loaded from (load_config); None: the default location.
    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path:
        """The configuration file in use, for messages that tell where to change a key."""
        return self._source or paths.CONFIG_FILE

    def from_file(self, path: Path | None) -> Config:
        """This configuration, as loaded from ``path`` (None: the default location)."""
        self._source = path.absolute() if path is not None else None
        return self

    @property
    def state_dir(self) -> Path:
        return Path(self.daemon.state_dir)

    @property
    def hook_dirs(self) -> list[Path]:
        return [Path(d) for d in self.hooks.dirs]
