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


def test_liveupds_own_words_are_not_carried_over_to_the_next_update() -> None:
    """A -> B adds panic=10 and the watchdog's blacklist; B -> C starts from B's
    /proc/cmdline: exactly those words go, the admin's stay, C's own are added."""
    from liveupd.kernel.cmdline import Additions
    from liveupd.kernel.cmdline import build as build_line

    b = build_line(
        "root=/dev/vda ro quiet",
        "",
        "B",
        LIMIT,
        source="x",
        additions=Additions(defaults=("panic=10",), extra=("modprobe.blacklist=i6300esb",)),
    )
    assert (
        b.line == "root=/dev/vda ro quiet panic=10 modprobe.blacklist=i6300esb liveupd.transition=B"
    )
    assert b.added == ("panic=10", "modprobe.blacklist=i6300esb")
    # C: panic-sec = 30, and no watchdog to arm (its kernel lacks the driver).
    c = build_line(
        b.line,
        "",
        "C",
        LIMIT,
        source="x",
        additions=Additions(defaults=("panic=30",)),
        carried=b.added,
    )
    assert c.line == "root=/dev/vda ro quiet panic=30 liveupd.transition=C"
    assert c.added == ("panic=30",)
    # The admin's own panic= (not added by liveupd) is kept, and wins over panic-sec.
    own = build_line("root=/dev/vda panic=5", "", "B", LIMIT, source="x",
                     additions=Additions(defaults=("panic=10",)))  # fmt: skip
    assert own.added == ()
    again = build_line(own.line, "", "C", LIMIT, source="x",
                       additions=Additions(defaults=("panic=10",)), carried=own.added)  # fmt: skip
    assert again.line == "root=/dev/vda panic=5 liveupd.transition=C"
