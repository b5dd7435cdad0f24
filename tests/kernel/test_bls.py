"""Boot Loader Specification entries: parsing, and discovery through them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from liveupd.kernel.bls import BlsError, for_arch, parse_entry, read_entries

ENTRY = """\
# Boot Loader Specification type #1 entry
title      Debian GNU/Linux 12 (bookworm)
version    6.1.0-56-cloud-amd64
machine-id 0123456789abcdef0123456789abcdef
sort-key   debian
options    root=UUID=1234 ro
options    quiet  console=ttyS0
linux      /vmlinuz-6.1.0-56-cloud-amd64
initrd     /initrd.img-6.1.0-56-cloud-amd64
architecture x64
x-custom   ignored
"""


def test_parse_a_full_entry() -> None:
    e = parse_entry(ENTRY, "/boot/loader/entries/debian-6.1.0-56.conf")
    assert e.id == "debian-6.1.0-56"
    assert e.title == "Debian GNU/Linux 12 (bookworm)"
    assert e.version == "6.1.0-56-cloud-amd64"
    assert e.linux == "/vmlinuz-6.1.0-56-cloud-amd64"
    assert e.initrd == ("/initrd.img-6.1.0-56-cloud-amd64",)
    assert e.options == "root=UUID=1234 ro quiet  console=ttyS0"
    assert e.machine_id == "0123456789abcdef0123456789abcdef"
    assert e.sort_key == "debian"
    assert e.unknown == ("x-custom",)
    assert e.root == Path("/boot")
    assert e.candidates(e.linux) == (
        Path("/boot/vmlinuz-6.1.0-56-cloud-amd64"),
        Path("/vmlinuz-6.1.0-56-cloud-amd64"),
    )
    assert for_arch(e, "x86_64")
    assert not for_arch(e, "aarch64")


def test_tabs_several_initrds_and_no_options() -> None:
    e = parse_entry("linux\t/a/vmlinuz\ninitrd /a/ucode.img\ninitrd /a/initrd\n", "/efi/x.conf")
    assert e.initrd == ("/a/ucode.img", "/a/initrd")
    assert e.options == ""
    assert for_arch(e, "aarch64")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("title x\n", "no 'linux' line"),
        ("efi /EFI/Linux/uki.efi\n", "has an 'efi' program but no 'linux' line"),
        ("linux /a\nlinux /b\n", "line 2: 'linux' given twice"),
        ("linux\n", "line 1: 'linux' has no value"),
    ],
)
def test_unusable_entries(text: str, message: str) -> None:
    with pytest.raises(BlsError, match=message) as e:
        parse_entry(text, "/boot/loader/entries/bad.conf")
    assert str(e.value).startswith("/boot/loader/entries/bad.conf")


def test_read_entries_reports_bad_ones(tmp_path: Path) -> None:
    d = tmp_path / "loader" / "entries"
    d.mkdir(parents=True)
    (d / "good.conf").write_text("linux /vmlinuz-1\n")
    (d / "bad.conf").write_text("title only\n")
    (d / "not-an-entry.txt").write_text("linux /x\n")
    entries, problems = read_entries(tmp_path)
    assert [e.id for e in entries] == ["good"]
    assert len(problems) == 1 and "bad.conf" in problems[0]
    assert read_entries(tmp_path / "missing") == ([], [])


def test_entries_are_opened_safely_and_never_echoed(tmp_path: Path) -> None:
    """A FIFO, a device, an oversized file or a symlink out of the directory: refused, unread."""
    d = tmp_path / "loader" / "entries"
    d.mkdir(parents=True)
    secret = tmp_path.parent / f"{tmp_path.name}-secret.conf"
    secret.write_text("SECRET-FIRST-LINE\n")
    secret.chmod(0o600)
    os.mkfifo(d / "a-fifo.conf")
    (d / "b-zero.conf").symlink_to("/dev/zero")
    (d / "c-big.conf").write_bytes(b"linux /x\n" + b"#" * (64 * 1024))
    (d / "d-out.conf").symlink_to(secret)
    (d / "e-nokey.conf").write_text("SECRET-FIRST-LINE\n")
    entries, problems = read_entries(tmp_path)
    assert entries == []
    assert [p.split(": ", 1)[0] for p in problems] == [
        str(d / "a-fifo.conf"),
        str(d / "b-zero.conf"),
        str(d / "c-big.conf"),
        str(d / "d-out.conf"),
        str(d / "e-nokey.conf") + ", line 1",
    ]
    assert "is a FIFO" in problems[0]
    assert "a symlink leads out of" in problems[1]
    assert "larger than a boot loader entry may be (64 KiB)" in problems[2]
    assert "a symlink leads out of" in problems[3]
    assert all("SECRET" not in p for p in problems)
