"""Shared fixtures for host tests: everything runs against dry-run backends."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from liveupd.config import Config
from liveupd.config.load import load_config
from tests.kernels import install_kernel

# Hooks and daemons started by host tests must never reach a real jump.
os.environ.setdefault("LIVEUPD_HOST_TEST", "1")

HookFactory = Callable[..., Path]


@pytest.fixture
def boot_dir(tmp_path: Path) -> Path:
    boot = tmp_path / "boot"
    install_kernel(boot, "6.1.0-55-cloud-amd64")
    install_kernel(boot, "6.1.0-56-cloud-amd64")
    return boot


@pytest.fixture
def hook_dirs(tmp_path: Path) -> tuple[Path, Path]:
    vendor = tmp_path / "usr-lib-hooks.d"
    admin = tmp_path / "etc-hooks.d"
    vendor.mkdir()
    admin.mkdir()
    return vendor, admin


@pytest.fixture
def write_config(
    tmp_path: Path, boot_dir: Path, hook_dirs: tuple[Path, Path]
) -> Callable[[str], Config]:
    """Write liveupd.conf (test dirs filled in, plus ``extra`` TOML) and load it."""

    def write(extra: str = "") -> Config:
        conf = tmp_path / "liveupd.conf"
        conf.write_text(
            textwrap.dedent(
                f"""
                [kernel]
                allowed-dirs = ["{boot_dir}"]
                [hooks]
                dirs = ["{hook_dirs[0]}", "{hook_dirs[1]}"]
                timeout = 10
                [daemon]
                state-dir = "{tmp_path / "state"}"
                """
            )
            + textwrap.dedent(extra)
        )
        return load_config(conf)

    return write


@pytest.fixture
def config(write_config: Callable[[str], Config]) -> Config:
    return write_config("")


@pytest.fixture
def make_hook(hook_dirs: tuple[Path, Path]) -> HookFactory:
    """Write a hook manifest; ``run``/``undo`` are shell snippets run with /bin/sh -c."""

    def make(
        name: str,
        phase: str,
        run: str | None = "true",
        undo: str | None = None,
        *,
        admin: bool = False,
        extra: str = "",
        mode: int = 0o644,
    ) -> Path:
        lines = [f'phase = "{phase}"']
        if run is not None:
            lines.append(f"run = {_argv(run)}")
        if undo is not None:
            lines.append(f"undo = {_argv(undo)}")
        lines.append(textwrap.dedent(extra))
        path = hook_dirs[1 if admin else 0] / f"{name}.hook"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(mode)
        return path

    return make


def _argv(script: str) -> str:
    escaped = script.replace("\\", "\\\\").replace('"', '\\"')
    return f'["/bin/sh", "-c", "{escaped}"]'
