"""The LUKS volumes the boot unlocks: crypttab, the root's dm-crypt stack, the headers.

Pure parts with fakes (crypttab lines, luksDump JSON, cryptsetup's answers, a
sysfs tree in a tmp directory); ``run_capped`` with stand-in programs (a hang,
a flood, a missing one) and, where the host has cryptsetup, the real tool on
LUKS containers in files.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from liveupd.backends.base import EncryptedVolume, LuksKind, Mount, VolumeScan
from liveupd.devices.sysfs import Sysfs
from liveupd.programs import Completed
from liveupd.storage import crypttab, luks, volumes

TPM2_TOKEN = {
    "type": "systemd-tpm2",
    "keyslots": ["1"],
    "tpm2-blob": "AAAA",
    "tpm2-pcrs": [7],
    "tpm2-pcr-bank": "sha256",
    "tpm2-primary-alg": "ecc",
    "tpm2-policy-hash": "00",
    "tpm2-pin": False,
}


def metadata(tokens: dict[str, object]) -> str:
    return json.dumps({"keyslots": {"0": {"type": "luks2"}}, "tokens": tokens, "segments": {}})


# ------------------------------------------------------------- crypttab ----


def test_crypttab_lines() -> None:
    table = crypttab.parse(
        "# name device key options\n"
        "\n"
        "cryptdata UUID=5f1c none luks,discard\n"
        "  swap /dev/vdb2 /dev/urandom swap,plain,cipher=aes-xts-plain64  \n"
        "later PARTLABEL=backup none noauto\n"
        "tpm /dev/loop0\n"
        "lonely\n"
    )
    assert [(e.name, e.device, e.line) for e in table.entries] == [
        ("cryptdata", "UUID=5f1c", 3),
        ("swap", "/dev/vdb2", 4),
        ("later", "PARTLABEL=backup", 5),
        ("tpm", "/dev/loop0", 6),
    ]
    cryptdata, swap, later, tpm = table.entries
    assert cryptdata.at_boot and cryptdata.maybe_luks
    assert swap.at_boot and not swap.maybe_luks  # plain dm-crypt: no header
    assert not later.at_boot
    assert tpm.options == () and tpm.maybe_luks
    assert table.problems == ("line 7: expected 'name device [key [options]]', got 'lonely'",)


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ("UUID=5f1c-aa", "/dev/disk/by-uuid/5f1c-aa"),
        ('uuid="5f1c"', "/dev/disk/by-uuid/5f1c"),
        ("PARTUUID=0a", "/dev/disk/by-partuuid/0a"),
        ("LABEL=data", "/dev/disk/by-label/data"),
        ("PARTLABEL=backup", "/dev/disk/by-partlabel/backup"),
        ("/dev/vda3", "/dev/vda3"),
        ("/var/lib/images/vol.img", "/var/lib/images/vol.img"),
        ("UUID=../../etc/shadow", None),
        ("UUID=", None),
        ("vda3", None),
        ("ID=abc", None),
    ],
)
def test_device_paths(spec: str, path: str | None) -> None:
    assert crypttab.device_path(spec) == path


# ---------------------------------------------------------- luksDump JSON ----


def test_token_types_in_token_order() -> None:
    tokens = {"10": {"type": "systemd-fido2"}, "2": TPM2_TOKEN, "0": {"type": "clevis"}}
    assert luks.token_types(metadata(tokens)) == ("clevis", "systemd-tpm2", "systemd-fido2")
    assert luks.token_types(metadata({})) == ()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "the metadata is not JSON"),
        ("[]", "the metadata is not a JSON object"),
        ('{"keyslots": {}}', "'tokens': expected an object"),
        ('{"tokens": []}', "'tokens': expected an object"),
        ('{"tokens": {"x": {"type": "a"}}}', "'tokens': 'x' is not a token number"),
        ('{"tokens": {"0": "systemd-tpm2"}}', "'tokens.0': expected an object"),
        ('{"tokens": {"0": {"keyslots": []}}}', "'tokens.0.type': expected a name"),
        ('{"tokens": {"0": {"type": ""}}}', "'tokens.0.type': expected a name"),
        (json.dumps({"tokens": {"0": {"type": "x" * 65}}}), "'tokens.0.type': expected a name"),
    ],
)
def test_token_types_refuses_what_is_not_luks2_metadata(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match="^" + problem.replace("(", r"\(").replace("[", r"\[")):
        luks.token_types(text)


class FakeCryptsetup:
    """Answers cryptsetup commands by their subcommand; records what was run."""

    def __init__(self, **answers: Completed) -> None:
        self.answers = answers
        self.ran: list[list[str]] = []

    async def __call__(self, argv: list[str]) -> Completed:
        self.ran.append(argv)
        assert argv[:2] == ["cryptsetup", "--disable-locks"] and argv[-1] == "/dev/vda3"
        key = "dump" if "luksDump" in argv else ("luks1" if "--type" in argv else "luks")
        return self.answers[key]


def inspect(fake: FakeCryptsetup) -> luks.Header:
    return asyncio.run(luks.inspect("/dev/vda3", fake))


def test_inspect_luks2_with_a_tpm2_token() -> None:
    fake = FakeCryptsetup(dump=Completed(0, metadata({"0": TPM2_TOKEN}), ""))
    assert inspect(fake) == luks.Header(LuksKind.LUKS2, ("systemd-tpm2",))
    assert fake.ran == [
        ["cryptsetup", "--disable-locks", "luksDump", "--dump-json-metadata", "/dev/vda3"]
    ]


def test_inspect_luks1_and_not_luks() -> None:
    no_dump = Completed(1, "", "Dump operation is not supported for this device type.\n")
    luks1 = FakeCryptsetup(dump=no_dump, luks1=Completed(0, "", ""))
    assert inspect(luks1) == luks.Header(LuksKind.LUKS1)
    plain = FakeCryptsetup(dump=no_dump, luks1=Completed(1, "", ""), luks=Completed(1, "", ""))
    assert inspect(plain) == luks.Header(LuksKind.NOT_LUKS)
    assert [a[2] for a in plain.ran] == ["luksDump", "isLuks", "isLuks"]


def test_inspect_reports_what_it_cannot_read() -> None:
    denied = Completed(4, "", "Device /dev/vda3 does not exist or access denied.\n")
    fake = FakeCryptsetup(dump=denied, luks1=denied, luks=denied)
    assert inspect(fake) == luks.Header(
        LuksKind.UNREADABLE,
        problem="cryptsetup exited 4: Device /dev/vda3 does not exist or access denied.",
    )
    hung = FakeCryptsetup(dump=Completed(None, "", "", "cryptsetup did not finish within 10 s"))
    assert inspect(hung) == luks.Header(
        LuksKind.UNREADABLE, problem="cryptsetup did not finish within 10 s"
    )
    assert len(hung.ran) == 1
    flood = FakeCryptsetup(dump=Completed(0, "{", "", "cryptsetup printed more than 9 bytes"))
    assert inspect(flood).problem == "cryptsetup printed more than 9 bytes"
    odd = FakeCryptsetup(dump=Completed(0, '{"tokens": 5}', ""))
    assert inspect(odd) == luks.Header(
        LuksKind.UNREADABLE, problem="unexpected luksDump output: 'tokens': expected an object"
    )


# --------------------------------------------------- the root's dm stack ----


def sysfs_tree(root: Path, nodes: dict[str, dict[str, str]], links: dict[str, str]) -> Sysfs:
    """Directories with attribute files, and symlinks (path -> target), under ``root``."""
    for node, attrs in nodes.items():
        for attr, value in attrs.items():
            f = root / node.lstrip("/") / attr
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(value + "\n")
        (root / node.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for link, target in links.items():
        path = root / link.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(root / target.lstrip("/"))
    return Sysfs(root)


VDA3 = "/sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda/vda3"
DM0 = "/sys/devices/virtual/block/dm-0"
DM1 = "/sys/devices/virtual/block/dm-1"


def test_root_on_lvm_on_luks2(tmp_path: Path) -> None:
    sysfs = sysfs_tree(
        tmp_path,
        {
            VDA3: {"dev": "254:3"},
            DM0: {"dm/uuid": "CRYPT-LUKS2-5f1c0000-vda3_crypt", "dm/name": "vda3_crypt"},
            DM1: {"dm/uuid": "LVM-abc", "dm/name": "vg-root"},
        },
        {
            "/sys/dev/block/252:1": DM1,
            f"{DM1}/slaves/dm-0": DM0,
            f"{DM0}/slaves/vda3": VDA3,
        },
    )
    assert volumes.crypt_mappings(sysfs, "252:1") == [
        volumes.Mapping("vda3_crypt", "/dev/vda3", LuksKind.LUKS2)
    ]
    assert volumes.crypt_mappings(sysfs, "254:3") == []  # a plain partition
    assert volumes.crypt_mappings(sysfs, "9:9") == []  # no such device


def test_luks1_plain_and_odd_names(tmp_path: Path) -> None:
    sysfs = sysfs_tree(
        tmp_path,
        {
            DM0: {"dm/uuid": "CRYPT-LUKS1-aa-root", "dm/name": "root"},
            DM1: {"dm/uuid": "CRYPT-PLAIN-swap", "dm/name": "swap"},
            "/sys/devices/cciss/block/cciss!c0d0": {},
        },
        {
            "/sys/dev/block/252:0": DM0,
            "/sys/dev/block/252:1": DM1,
            f"{DM0}/slaves/cciss!c0d0": "/sys/devices/cciss/block/cciss!c0d0",
        },
    )
    assert volumes.crypt_mappings(sysfs, "252:0") == [
        volumes.Mapping("root", "/dev/cciss/c0d0", LuksKind.LUKS1)
    ]
    assert volumes.crypt_mappings(sysfs, "252:1") == []  # no slave listed: nothing to read


def test_root_devnum_from_mountinfo() -> None:
    mounts = [
        Mount("/", "ext4", "/dev/vda1", True, True, "254:1"),
        Mount("/boot", "ext4", "/dev/vda2", True, True, "254:2"),
        Mount("/", "ext4", "/dev/mapper/root", True, True, "252:0"),  # mounted over
    ]
    assert volumes.root_devnum(mounts) == "252:0"
    assert volumes.root_devnum(mounts[1:2]) is None


# ---------------------------------------------------------------- merge ----


def test_merge_one_volume_per_device() -> None:
    table = crypttab.parse(
        "vda3_crypt UUID=5f1c none luks\n"  # the root's, listed by UUID
        "data /dev/vdb none luks\n"
        "gone UUID=0000 none\n"
        "swap /dev/vdc /dev/urandom swap,plain\n"
        "later /dev/vdd none noauto\n"
        "odd vdx none\n"
    )
    links = {"/dev/disk/by-uuid/5f1c": "/dev/vda3", "/dev/vdb": "/dev/vdb", "/dev/vdc": "/dev/vdc"}
    found = volumes.merge(
        [volumes.Mapping("vda3_crypt", "/dev/vda3", LuksKind.LUKS2)], table, links.get
    )
    by_device = {v.device: v for v in found}
    assert list(by_device) == ["/dev/vda3", "/dev/vdb", "/dev/disk/by-uuid/0000", "/dev/vdc", "vdx"]
    root = by_device["/dev/vda3"]
    assert (root.names, root.root, root.crypttab, root.kind) == (
        ("vda3_crypt",),
        True,
        "UUID=5f1c",
        LuksKind.LUKS2,
    )
    assert by_device["/dev/vdb"].kind is LuksKind.UNREADABLE and volumes.to_read(
        by_device["/dev/vdb"]
    )
    assert by_device["/dev/disk/by-uuid/0000"].kind is LuksKind.MISSING
    assert by_device["/dev/vdc"].kind is LuksKind.NOT_LUKS
    odd = by_device["vdx"]
    assert odd.kind is LuksKind.UNREADABLE and not volumes.to_read(odd)
    assert odd.problem.startswith("/etc/crypttab line 6: 'vdx' is not a device path")
    assert [v.device for v in found if volumes.to_read(v)] == ["/dev/vda3", "/dev/vdb"]


def test_read_crypttab_through_the_safe_open(tmp_path: Path) -> None:
    path = tmp_path / "crypttab"
    assert volumes.read_crypttab(str(path)) == (crypttab.Crypttab((), ()), "")
    path.write_text("data /dev/vdb none luks\n")
    table, problem = volumes.read_crypttab(str(path))
    assert problem == "" and [e.name for e in table.entries] == ["data"]
    path.chmod(0o666)
    table, problem = volumes.read_crypttab(str(path))
    assert table.entries == ()
    assert problem.startswith(str(path)) and "writable" in problem


def test_scan_reads_what_must_be_read() -> None:
    found = VolumeScan(
        (
            EncryptedVolume("/dev/vda3", ("root",), True, "", LuksKind.LUKS2),
            EncryptedVolume("/dev/vdc", ("swap",), False, "/dev/vdc", LuksKind.NOT_LUKS),
        ),
        ("cannot read /proc/self/mountinfo",),
    )
    fake = FakeCryptsetup(dump=Completed(0, metadata({"0": TPM2_TOKEN}), ""))
    scanned = asyncio.run(volumes.scan(fake, lambda: found))
    assert scanned.volumes[0].tokens == ("systemd-tpm2",)
    assert scanned.volumes[1] == found.volumes[1]
    assert scanned.problems == found.problems
    assert len(fake.ran) == 1


# ------------------------------------------------------------ run_capped ----


def program(tmp_path: Path, script: str) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "cryptsetup"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(0o755)
    return str(bin_dir)


def test_run_capped_output_and_status(tmp_path: Path) -> None:
    path = program(tmp_path, 'echo "$@"; echo oops >&2; exit 3\n')
    got = asyncio.run(volumes.run_capped(["cryptsetup", "isLuks", "/dev/x"], search_path=path))
    assert got == Completed(3, "isLuks /dev/x\n", "oops\n")


def test_run_capped_caps_the_output(tmp_path: Path) -> None:
    path = program(tmp_path, "head -c 100000 /dev/zero | tr '\\0' x\n")
    got = asyncio.run(
        volumes.run_capped(["cryptsetup", "luksDump"], search_path=path, output_cap=1000)
    )
    assert got.returncode == 0 and len(got.stdout) == 1000
    assert got.problem == "cryptsetup printed more than 1000 bytes"


def test_run_capped_kills_what_does_not_finish(tmp_path: Path) -> None:
    path = program(tmp_path, "exec sleep 600\n")
    got = asyncio.run(volumes.run_capped(["cryptsetup", "x"], search_path=path, timeout=0.5))
    assert got == Completed(None, "", "", "cryptsetup did not finish within 0.5 s", timed_out=True)


def test_run_capped_without_cryptsetup(tmp_path: Path) -> None:
    got = asyncio.run(volumes.run_capped(["cryptsetup", "x"], search_path=str(tmp_path)))
    assert got.returncode is None
    assert got.problem == "cryptsetup is not installed (Debian: apt install cryptsetup-bin)"


def test_the_event_loop_runs_while_cryptsetup_does(tmp_path: Path) -> None:
    """cryptsetup is awaited, not waited for: the loop serves others meanwhile (here, the
    coroutine that lets the stand-in cryptsetup finish: a blocked loop would never run it)."""
    flag = tmp_path / "go"
    path = program(tmp_path, f"while [ ! -e {flag} ]; do sleep 0.02; done; echo done\n")

    async def main() -> Completed:
        run = asyncio.ensure_future(volumes.run_capped(["cryptsetup", "x"], search_path=path))
        await asyncio.sleep(0)
        assert not run.done()
        flag.touch()  # only reachable while run_capped is suspended
        return await asyncio.wait_for(run, 30)

    assert asyncio.run(main()) == Completed(0, "done\n", "")


# ------------------------------------------------------- real cryptsetup ----

needs_cryptsetup = pytest.mark.skipif(
    shutil.which("cryptsetup", path=volumes.CRYPTSETUP_ENV["PATH"]) is None,
    reason="cryptsetup is not installed (apt-get install cryptsetup-bin)",
)


def luks_file(tmp_path: Path, name: str, kind: str) -> Path:
    path = tmp_path / name
    with path.open("wb") as f:
        f.truncate(20 << 20)
    fast = ["--pbkdf-force-iterations", "1000"]
    if kind == "luks2":
        fast = ["--pbkdf", "pbkdf2", *fast]
    subprocess.run(
        [
            "cryptsetup",
            "luksFormat",
            "--batch-mode",
            "--type",
            kind,
            *fast,
            "--key-file",
            "-",
            str(path),
        ],
        input=b"passphrase",
        check=True,
        capture_output=True,
    )
    return path


@needs_cryptsetup
def test_real_cryptsetup(tmp_path: Path) -> None:
    tpm = luks_file(tmp_path, "tpm.img", "luks2")
    token = tmp_path / "token.json"
    token.write_text(json.dumps({**TPM2_TOKEN, "keyslots": ["0"]}))
    subprocess.run(
        ["cryptsetup", "token", "import", str(tpm), "--json-file", str(token)],
        check=True,
        capture_output=True,
    )
    bare = luks_file(tmp_path, "bare.img", "luks2")
    old = luks_file(tmp_path, "old.img", "luks1")
    other = tmp_path / "other.img"
    other.write_bytes(os.urandom(4096))

    def header(path: Path) -> luks.Header:
        return asyncio.run(luks.inspect(str(path), volumes.run_capped))

    assert header(tpm) == luks.Header(LuksKind.LUKS2, ("systemd-tpm2",))
    assert header(bare) == luks.Header(LuksKind.LUKS2, ())
    assert header(old) == luks.Header(LuksKind.LUKS1)
    assert header(other) == luks.Header(LuksKind.NOT_LUKS)
    gone = header(tmp_path / "gone.img")
    assert gone.kind is LuksKind.UNREADABLE
    assert "does not exist" in gone.problem and gone.problem.startswith("cryptsetup exited 4")
