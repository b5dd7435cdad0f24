"""The quarantine of kernels transitions fell back from: the typed file and its rules."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from liveupd import schema
from liveupd.errors import KernelQuarantined
from liveupd.kernel import quarantine
from liveupd.kernel.quarantine import Quarantine, QuarantinedKernel

A = "6.12.118+deb13-cloud-amd64"
B = "7.3.4+deb13-cloud-amd64"
C = "7.4.1+deb13-cloud-amd64"


def entry(release: str = B, transition: str = "T1", reason: str = "came back") -> QuarantinedKernel:
    return QuarantinedKernel(
        release=release,
        kernel=f"/usr/lib/modules/{release}/vmlinuz",
        transition=transition,
        reason=reason,
        since=1_700_000_000.0,
    )


def test_nothing_is_quarantined_without_the_file(tmp_path: Path) -> None:
    held = quarantine.read(tmp_path)
    assert held == Quarantine(quarantine.path_in(tmp_path))
    assert held.reason(B, A) == ""
    quarantine.refuse(tmp_path, B, A)  # no error


def test_add_persists_a_typed_record_that_reads_back(tmp_path: Path) -> None:
    quarantine.add(tmp_path, entry())
    path = quarantine.path_in(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["kernels"][0]["release"] == B
    held = quarantine.read(tmp_path)
    assert held.kernels == (entry(),) and not held.problem
    why = held.reason(B, A)
    assert why.startswith(f"{B} is quarantined: transition T1 fell back from it (came back) on ")
    assert why.endswith(f"clear it with 'liveupctl unquarantine {B}'")
    assert held.reason(A, A) == "" and held.reason(C, A) == ""


def test_add_replaces_the_entry_of_the_same_release(tmp_path: Path) -> None:
    quarantine.add(tmp_path, entry(transition="T1"))
    quarantine.add(tmp_path, entry(C, transition="T2"))
    quarantine.add(tmp_path, entry(transition="T3"))
    held = quarantine.read(tmp_path)
    assert [(k.release, k.transition) for k in held.kernels] == [(C, "T2"), (B, "T3")]


def test_the_oldest_entries_go_beyond_the_limit(tmp_path: Path) -> None:
    for n in range(quarantine.MAX_ENTRIES + 3):
        quarantine.add(tmp_path, entry(f"6.1.{n}", transition=f"T{n}"))
    held = quarantine.read(tmp_path)
    assert len(held.kernels) == quarantine.MAX_ENTRIES
    assert held.kernels[0].release == "6.1.3" and not held.problem


def test_refuse_names_the_quarantine_and_how_to_clear_it(tmp_path: Path) -> None:
    quarantine.add(tmp_path, entry(reason="the hardware watchdog (watchdog0) reset the machine"))
    with pytest.raises(KernelQuarantined) as e:
        quarantine.refuse(tmp_path, B, A)
    assert e.value.dbus_name == "org.liveupd.LiveUpdate1.Error.Quarantined"
    assert "transition T1 fell back from it (the hardware watchdog" in e.value.message
    assert f"'liveupctl unquarantine {B}'" in e.value.message
    quarantine.refuse(tmp_path, C, A)


def test_clear_one_release_or_all(tmp_path: Path) -> None:
    quarantine.add(tmp_path, entry(B, transition="T1"))
    quarantine.add(tmp_path, entry(C, transition="T2"))
    assert quarantine.clear(tmp_path, A).kernels == ()  # not quarantined: nothing changes
    assert [k.release for k in quarantine.clear(tmp_path, B).kernels] == [B]
    assert [k.release for k in quarantine.read(tmp_path).kernels] == [C]
    assert [k.release for k in quarantine.clear(tmp_path, "").kernels] == [C]
    assert quarantine.read(tmp_path).kernels == ()


BAD = [
    ("not json", "{", "Invalid JSON"),
    ("wrong version", '{"version": 2, "kernels": []}', "version"),
    ("unknown field", '{"version": 1, "kernels": [], "extra": 1}', "extra"),
    ("release type", '{"version": 1, "kernels": [{"release": 5}]}', "kernels.0.release"),
    (
        "missing field",
        '{"version": 1, "kernels": [{"release": "x", "transition": "T", "since": 1.0}]}',
        "kernels.0.reason",
    ),
    ("a list", "[]", "the file"),
]


@pytest.mark.parametrize(("text", "where"), [(t, w) for _, t, w in BAD], ids=[i for i, *_ in BAD])
def test_a_bad_file_is_reported_and_holds_every_kernel_but_the_running_one(
    tmp_path: Path, text: str, where: str
) -> None:
    path = quarantine.path_in(tmp_path)
    path.write_text(text)
    held = quarantine.read(tmp_path)  # never a crash
    assert where in held.problem, held.problem
    assert len(held.problem) <= 200
    assert held.kernels == ()
    assert held.reason(A, A) == ""  # the running kernel: a fast reboot is no risk
    why = held.reason(B, A)
    assert f"{path} cannot be read" in why and "'liveupctl unquarantine --all'" in why
    with pytest.raises(KernelQuarantined, match="unquarantine --all"):
        quarantine.clear(tmp_path, B)
    assert path.read_text() == text  # unchanged by the refusal
    assert quarantine.clear(tmp_path, "").problem == held.problem
    assert quarantine.read(tmp_path) == Quarantine(path)


def test_an_oversized_file_is_not_read_whole(tmp_path: Path) -> None:
    quarantine.path_in(tmp_path).write_bytes(b" " * (quarantine.MAX_BYTES + 1))
    assert "larger than" in quarantine.read(tmp_path).problem


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text('{"version": 1, "kernels": []}')
    os.symlink(target, quarantine.path_in(tmp_path))
    assert "cannot open it" in quarantine.read(tmp_path).problem


def test_add_over_a_bad_file_keeps_the_new_entry(tmp_path: Path) -> None:
    quarantine.path_in(tmp_path).write_text("{")
    quarantine.add(tmp_path, entry())
    assert quarantine.read(tmp_path).kernels == (entry(),)


def test_an_overlong_reason_is_refused_by_the_model(tmp_path: Path) -> None:
    long = entry(reason="x" * (quarantine.MAX_REASON + 1))
    with pytest.raises(schema.Invalid, match="reason: String should have at most 500"):
        schema.load(QuarantinedKernel, schema.dump(long))
    # add() checks the entry before writing: a file it wrote always reads back.
    with pytest.raises(ValueError, match="reason"):
        quarantine.add(tmp_path, long)
    assert not quarantine.path_in(tmp_path).exists()
