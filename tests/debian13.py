"""Debian 13's systemd-analyze (systemd 257), fetched with apt into a cache, runnable here.

The supported platform is Debian 13, this host may be older (Debian 12 has
systemd 252).  The trixie packages systemd-analyze needs (systemd,
libsystemd-shared, glibc and the libraries they link) are downloaded once
with apt from a private trixie source list into ``~/.cache/liveupd-test/``,
unpacked with dpkg-deb, and the binary is run through trixie's own dynamic
loader, so nothing is installed on the host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.kernels import Unavailable

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
PACKAGES = (
    "systemd",
    "libsystemd-shared",
    "libc6",
    "libacl1",
    "libapparmor1",
    "libaudit1",
    "libblkid1",
    "libcap-ng0",
    "libcap2",
    "libcrypt1",
    "liblzma5",
    "libmount1",
    "libpam0g",
    "libpcre2-8-0",
    "libseccomp2",
    "libselinux1",
    "libssl3t64",
    "libzstd1",
)


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "liveupd-test" / f"systemd-{SUITE}"


def _apt(cache: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    options = [
        f"-oDir::State={cache / 'apt-state'}",
        f"-oDir::Cache={cache / 'apt-cache'}",
        f"-oDir::Etc::SourceList={cache / 'sources.list'}",
        "-oDir::Etc::SourceParts=/dev/null",
        "-oAPT::Architecture=amd64",
        "-oAPT::Sandbox::User=root",
    ]
    return subprocess.run(
        ["apt-get", "-q", *options, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def analyze_command() -> list[str]:
    """argv prefix that runs Debian 13's systemd-analyze; Unavailable if it cannot be had."""
    cache = cache_dir()
    root = cache / "root"
    loader = root / "usr/lib64/ld-linux-x86-64.so.2"
    binary = root / "usr/bin/systemd-analyze"
    if not (loader.exists() and binary.exists()):
        if os.uname().machine != "x86_64":
            raise Unavailable("only fetched for x86_64")
        if shutil.which("apt-get") is None or not Path(KEYRING).exists():
            raise Unavailable("apt-get or Debian's archive keyring is missing")
        for d in ("apt-state/lists/partial", "apt-cache/archives/partial", "debs"):
            (cache / d).mkdir(parents=True, exist_ok=True)
        (cache / "sources.list").write_text(f"deb [signed-by={KEYRING}] {MIRROR} {SUITE} main\n")
        update = _apt(cache, "update")
        if update.returncode != 0:
            raise Unavailable(f"apt-get update ({SUITE}) failed: {update.stderr.strip()[-300:]}")
        for old in (cache / "debs").glob("*.deb"):
            old.unlink()
        download = _apt(cache, "download", *PACKAGES, cwd=cache / "debs")
        debs = sorted((cache / "debs").glob("*.deb"))
        if download.returncode != 0 or len(debs) < len(PACKAGES):
            raise Unavailable(f"apt-get download failed: {download.stderr.strip()[-300:]}")
        tmp = cache / "root.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True, timeout=300)
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    libs = f"{root}/usr/lib/x86_64-linux-gnu:{root}/usr/lib/x86_64-linux-gnu/systemd"
    return [str(loader), "--library-path", libs, str(binary)]
