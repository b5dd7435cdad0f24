"""Configuration: defaults, drop-ins, and errors that name the file and the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from liveupd.config import Config, load_config
from liveupd.config.load import dropin_files
from liveupd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_no_file_means_documented_defaults() -> None:
    c = Config()
    assert c.kernel.allowed_dirs == ["/boot", "/usr/lib/modules", "/efi", "/boot/efi"]
    assert c.kernel.signature == "auto"
    assert c.hooks.dirs == ["/usr/lib/liveupd/hooks.d", "/etc/liveupd/hooks.d"]
    assert c.hooks.timeout == 30
    assert [s.subsystem for s in c.devices.unbind] == ["net"]
    assert c.devices.keep == []
    assert c.storage.freeze == "auto"
    assert c.verify.on_failure == "report"
    assert c.daemon.state_dir == "/var/lib/liveupd"


def test_documented_example_parses(tmp_path: Path) -> None:
    conf = write(
        tmp_path / "liveupd.conf",
        """
        [kernel]
        allowed-dirs = ["/boot", "/usr/lib/modules", "/efi", "/boot/efi"]
        signature = "require"
        [hooks]
        dirs = ["/usr/lib/liveupd/hooks.d", "/etc/liveupd/hooks.d"]
        timeout = 45
        [devices]
        unbind = [{ subsystem = "net" }, { pci-class = "0x0c03", driver = "xhci_hcd" }]
        keep = [{ sysfs-path = "/sys/devices/pci0000:00/0000:00:1f.6" }]
        [storage]
        freeze = ["/", "/data"]
        [verify]
        on-failure = "rollback"
        [daemon]
        state-dir = "/var/lib/liveupd"
        """.replace("\n        ", "\n"),
    )
    c = load_config(conf)
    assert c.kernel.signature == "require"
    assert c.hooks.timeout == 45
    assert c.devices.unbind[1].pci_class == "0x0c03"
    assert c.devices.keep[0].sysfs_path == "/sys/devices/pci0000:00/0000:00:1f.6"
    assert c.storage.freeze == ["/", "/data"]
    assert c.verify.on_failure == "rollback"


def test_dropins_merge_in_name_order_tables_by_key_lists_replaced(tmp_path: Path) -> None:
    conf = write(tmp_path / "liveupd.conf", '[hooks]\ntimeout = 10\ndirs = ["/a"]\n')
    write(tmp_path / "liveupd.conf.d" / "20-b.conf", "[hooks]\ntimeout = 20\n")
    write(tmp_path / "liveupd.conf.d" / "10-a.conf", '[hooks]\ntimeout = 99\ndirs = ["/b", "/c"]\n')
    write(tmp_path / "liveupd.conf.d" / "30-c.conf.disabled", "[hooks]\ntimeout = 1\n")
    c = load_config(conf)
    assert c.hooks.timeout == 20  # 20-b.conf applies after 10-a.conf
    assert c.hooks.dirs == ["/b", "/c"]  # lists are replaced, not appended


def test_dropin_in_later_dir_replaces_same_name_and_dev_null_masks(tmp_path: Path) -> None:
    usr = write(tmp_path / "usr" / "50-x.conf", "").parent
    etc = write(tmp_path / "etc" / "50-x.conf", "").parent
    write(usr / "60-y.conf", "")
    (etc / "60-y.conf").symlink_to("/dev/null")
    assert dropin_files([usr, etc]) == [etc / "50-x.conf"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[kernel]\nsignature = "maybe"\n',
            "kernel.signature: Input should be 'auto', 'require' or 'off' (got 'maybe')",
        ),
        ("[hooks]\ntimeout = -1\n", "hooks.timeout: Input should be greater than 0 (got -1)"),
        ("[hooks]\ntimout = 5\n", "hooks.timout: unknown key (remove it or check its spelling)"),
        ("[colour]\nx = 1\n", "colour: unknown key"),
        (
            '[kernel]\nallowed-dirs = ["boot"]\n',
            "kernel.allowed-dirs: expected an absolute path starting with '/', not 'boot'",
        ),
        ("[devices]\nunbind = [{}]\n", "devices.unbind[0]: empty selector"),
        (
            '[devices]\nunbind = [{ pci-class = "net" }]\n',
            "devices.unbind[0].pci-class: expected a hex PCI class prefix",
        ),
        ('[storage]\nfreeze = "everything"\n', "storage.freeze"),
        (
            '[verify]\non-failure = "panic"\n',
            "verify.on-failure: Input should be 'report' or 'rollback'",
        ),
        ("[kernel\n", "not valid TOML"),
        # Strict: a number in quotes is not a number, 1 is not true.
        ('[hooks]\ntimeout = "30"\n', "hooks.timeout: Input should be a valid number (got '30')"),
        (
            "[kernel]\nauto-stage = 1\n",
            "kernel.auto-stage: Input should be a valid boolean (got 1)",
        ),
        # Only the documented (kebab-case) names.
        ("[kernel]\nauto_stage = true\n", "kernel.auto_stage: unknown key"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    conf = write(tmp_path / "liveupd.conf", text)
    with pytest.raises(ConfigError) as e:
        load_config(conf)
    assert any(p.startswith(f"{conf}: ") and expected in p for p in e.value.problems), (
        e.value.problems
    )


def test_error_in_dropin_names_the_dropin(tmp_path: Path) -> None:
    conf = write(tmp_path / "liveupd.conf", "")
    bad = write(tmp_path / "liveupd.conf.d" / "10-bad.conf", "[daemon]\nstate-dir = 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(conf)
    assert e.value.problems == [f"{bad}: daemon.state-dir: Input should be a valid string (got 3)"]


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    conf = write(tmp_path / "liveupd.conf", '[kernel]\nsignature = 1\n[hooks]\ntimeout = "x"\n')
    with pytest.raises(ConfigError) as e:
        load_config(conf)
    assert len(e.value.problems) == 2


def test_explicit_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "nope.conf")
    assert "cannot read" in e.value.message and "nope.conf" in e.value.message


def _check(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "liveupd.daemon.main", "--check", "--config", str(conf)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_prints_each_problem_on_its_own_line_and_exits_1(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    write(hooks / "10-a.hook", 'phase = "quiesce"\nrun = ["/bin/true"]\nextra = 1\n')
    write(hooks / "20-b.hook", 'phase = "sometime"\nrun = ["/bin/true"]\n')
    conf = write(tmp_path / "liveupd.conf", f'[hooks]\ndirs = ["{hooks}"]\n')
    out = _check(conf)
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        f"{hooks}/10-a.hook: extra: unknown key (remove it or check its spelling)",
        f"{hooks}/20-b.hook: phase: Value error, expected one of quiesce, unbind, checkpoint, "
        "flush, verify, restore (got 'sometime')".replace("Value error, ", ""),
    ]


def test_check_accepts_a_good_setup(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    write(hooks / "10-a.hook", 'phase = "quiesce"\nrun = ["/bin/true"]\n')
    boot = tmp_path / "boot"
    boot.mkdir()
    conf = write(
        tmp_path / "liveupd.conf",
        f'[hooks]\ndirs = ["{hooks}"]\n[kernel]\nallowed-dirs = ["{boot}"]\n',
    )
    out = _check(conf)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout == "configuration, hooks and kernel directories are valid\n"


def test_check_reports_every_violation_with_the_file_and_the_reason(tmp_path: Path) -> None:
    import os

    hooks, admin, boot = tmp_path / "hooks", tmp_path / "admin", tmp_path / "boot"
    prog = write(tmp_path / "progs" / "prog", "#!/bin/sh\n")
    prog.chmod(0o775)
    write(hooks / "10-a.hook", f'phase = "quiesce"\nrun = ["{prog}"]\n')
    os.mkfifo(hooks / "20-fifo.hook")
    write(admin / "30-c.hook", 'phase = "quiesce"\nrun = ["/bin/true"]\n')
    admin.chmod(0o777)
    entries = boot / "loader" / "entries"
    entries.mkdir(parents=True)
    os.mkfifo(entries / "fifo.conf")
    conf = write(
        tmp_path / "liveupd.conf",
        f'[hooks]\ndirs = ["{hooks}", "{admin}"]\n[kernel]\nallowed-dirs = ["{boot}"]\n',
    )
    out = _check(conf)
    assert out.returncode == 1
    fix = "only root may be able to change it or the directories holding it. Fix: chmod go-w"
    assert out.stdout.splitlines() == [
        f"{admin}: refusing hook directory: writable by group and others (mode 0777); "
        f"{fix} {admin}",
        f"{hooks}/10-a.hook: run: refusing program {prog}: writable by group (mode 0775); "
        f"{fix} {prog}",
        f"{hooks}/20-fifo.hook: refusing hook: is a FIFO, not a regular file; give the hook "
        "manifest itself",
        f"{admin}/30-c.hook: refusing hook: its directory {admin} cannot be trusted",
        f"{entries}/fifo.conf: is a FIFO, not a regular file; give the boot loader entry itself",
    ]


def test_check_reports_a_bad_config_and_exits_1(tmp_path: Path) -> None:
    conf = write(tmp_path / "liveupd.conf", "[hooks]\ntimeout = 0\n")
    out = _check(conf)
    assert out.returncode == 1
    assert out.stdout.strip() == f"{conf}: hooks.timeout: Input should be greater than 0 (got 0)"


def test_config_files_are_opened_safely(tmp_path: Path) -> None:
    """A FIFO, a device, a huge file or a world-writable drop-in directory: named, never read."""
    import os

    conf = write(tmp_path / "liveupd.conf", "")
    dropins = tmp_path / "liveupd.conf.d"
    dropins.mkdir()
    os.mkfifo(dropins / "10-fifo.conf")
    (dropins / "20-zero.conf").symlink_to("/dev/zero")
    write(dropins / "30-big.conf", "#" * (64 * 1024 + 1))
    with pytest.raises(ConfigError) as e:
        load_config(conf)
    assert e.value.problems == [
        f"{dropins / '10-fifo.conf'}: refusing configuration file: is a FIFO, not a regular "
        "file; give the configuration file itself",
        f"{dropins / '20-zero.conf'}: refusing configuration file: /dev/zero: is a device, not "
        "a regular file; give the configuration file itself",
        f"{dropins / '30-big.conf'}: refusing configuration file: is 65537 bytes, larger than a "
        "configuration file may be (64 KiB); that is not a genuine one",
    ]
    for name in ("10-fifo.conf", "20-zero.conf", "30-big.conf"):
        (dropins / name).unlink()
    dropins.chmod(0o777)
    with pytest.raises(ConfigError) as e:
        load_config(conf)
    assert e.value.problems[0].startswith(
        f"{dropins}: refusing drop-in directory: writable by group and others (mode 0777)"
    )
