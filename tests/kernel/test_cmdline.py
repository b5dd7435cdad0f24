"""Command-line rules: what is dropped, what is added, what is refused."""

from __future__ import annotations

import pytest

from liveupd.errors import InvalidArgument
from liveupd.kernel.cmdline import build_cmdline, split_cmdline, transition_param

TID = "20250101T000000_abcdef"
LIMIT = 2016


def build(base: str, append: str = "", limit: int = LIMIT) -> str:
    return build_cmdline(base, append, TID, limit, source="the running command line")


@pytest.mark.parametrize(
    ("base", "append", "expected"),
    [
        ("root=/dev/vda ro quiet", "", f"root=/dev/vda ro quiet liveupd.transition={TID}"),
        (
            "BOOT_IMAGE=/boot/vmlinuz-6.1 root=UUID=x ro initrd=\\initrd.img",
            "",
            f"root=UUID=x ro liveupd.transition={TID}",
        ),
        (
            "root=/dev/vda liveupd.transition=OLD console=ttyS0",
            "debug",
            f"root=/dev/vda console=ttyS0 debug liveupd.transition={TID}",
        ),
        (
            'root=/dev/vda dyndbg="file foo.c +p" ro',
            'x="a b"',
            f'root=/dev/vda dyndbg="file foo.c +p" ro x="a b" liveupd.transition={TID}',
        ),
        (
            "root=/dev/vda ro -- single initrd=keep-me",
            "quiet",
            f"root=/dev/vda ro quiet liveupd.transition={TID} -- single initrd=keep-me",
        ),
        ("  root=/dev/vda\tro  ", "", f"root=/dev/vda ro liveupd.transition={TID}"),
        ("", "", f"liveupd.transition={TID}"),
    ],
    ids=["plain", "boot-loader-words", "old-transition", "quotes", "init-args", "spaces", "empty"],
)
def test_built_command_lines(base: str, append: str, expected: str) -> None:
    assert build(base, append) == expected


def test_the_transition_id_can_be_read_back() -> None:
    line = build("root=/dev/vda liveupd.transition=OLD -- liveupd.transition=init-arg")
    assert transition_param(line) == TID


@pytest.mark.parametrize(
    ("base", "append", "message"),
    [
        ("root=/dev/vda\nro", "", "the running command line has a newline at position 13"),
        ("root=/dev/vda\0", "", "has a NUL at position 13"),
        ("root=/dev/vda", "quiet\r", "the appended options has a carriage return"),
        ("root=/dev/vda", "a\x1bb", "the control character '\\x1b'"),
        ('root=/dev/vda x="open', "", "unbalanced double quote"),
        ("root=/dev/vda", "liveupd.transition=mine", "liveupd sets it itself"),
        ("root=/dev/vda", "quiet -- single", "contain '--'"),
    ],
)
def test_refused(base: str, append: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        build(base, append)
    assert message in e.value.message


def test_length_limit_counts_bytes_and_names_both_sizes() -> None:
    fixed = len(f" liveupd.transition={TID}")
    base = "x" * (LIMIT - fixed)
    assert len(build(base).encode()) == LIMIT
    with pytest.raises(InvalidArgument, match=f"would be {LIMIT + 1} bytes .* at most {LIMIT}"):
        build(base + "y")
    # Multi-byte characters count as bytes, as the kernel counts them.
    with pytest.raises(InvalidArgument, match="bytes"):
        build("é" * (LIMIT // 2))


def test_bad_transition_id() -> None:
    with pytest.raises(InvalidArgument, match="not a valid parameter value"):
        build_cmdline("ro", "", "a b", LIMIT, source="x")


def test_split_keeps_quotes_like_the_kernel() -> None:
    assert split_cmdline('a="b c" d "e f"') == ['a="b c"', "d", '"e f"']
