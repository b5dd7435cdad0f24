"""What a distribution builds and ships: man pages, the sample configuration,
shell completions, the release tarball, and the dependency floors.

liveupd.conf(5) is the one reference for the configuration: every key of the
configuration's dataclasses must appear there with its type and default.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import tarfile
import tomllib
from pathlib import Path
from typing import Any, get_type_hints

import pytest

from liveupd import schema
from liveupd.config.model import Config, DeviceSelector
from liveupd.ctl.main import parser as ctl_parser

REPO = Path(__file__).resolve().parent.parent
MAN = REPO / "man"
CONF_PAGE = MAN / "liveupd.conf.5.rst"
SAMPLE = REPO / "docs" / "examples" / "liveupd.conf"
BASH = REPO / "completions" / "liveupctl.bash"
ZSH = REPO / "completions" / "_liveupctl"


def keys(model: type[Any]) -> list[str]:
    return [f.metadata.get(schema.KEY, f.name) for f in dataclasses.fields(model)]


def sections() -> dict[str, type[Any]]:
    """Config's sections by name: the dataclass of each."""
    hints = get_type_hints(Config)
    out = {
        f.name: hints[f.name]
        for f in dataclasses.fields(Config)
        if f.init and not f.metadata.get(schema.INTERNAL)
    }
    for name, model in out.items():
        assert dataclasses.is_dataclass(model) and isinstance(model, type), name
    return out


def toml_value(value: Any) -> str:
    """A default as liveupd.conf(5) writes it (TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return f'"{value}"'
    if dataclasses.is_dataclass(value):
        fields = schema.dump(value, exclude_none=True, by_key=True)
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in fields.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def key_line(page: str, section: str, key: str) -> str:
    """The definition line of ``key`` under the heading ``section`` of the page."""
    m = re.search(
        rf"^{re.escape(section)}\n[=-]+\n(.*?)(?=^\S[^\n]*\n[=-]+\n|\Z)", page, re.M | re.S
    )
    assert m, f"liveupd.conf(5) has no section {section}"
    line = re.search(rf"^``{re.escape(key)}`` \(.*$", m.group(1), re.M)
    assert line, f"liveupd.conf(5) does not describe {section} {key} (``{key}`` (type...))"
    return line.group(0)


def test_the_config_page_lists_every_key_with_its_type_and_default() -> None:
    page = CONF_PAGE.read_text()
    defaults = Config()
    for name, section_model in sections().items():
        section = getattr(defaults, name)
        for f in dataclasses.fields(section_model):
            line = key_line(page, f"[{name}]", f.metadata.get(schema.KEY, f.name))
            assert "default" in line, line
            assert toml_value(getattr(section, f.name)) in line, (line, getattr(section, f.name))
    for key in keys(DeviceSelector):
        key_line(page, "Device selectors", key)


def test_the_sample_configuration_is_every_key_at_its_default() -> None:
    """docs/examples/liveupd.conf, uncommented, is exactly the defaults."""
    lines = SAMPLE.read_text().splitlines()
    active = [ln for ln in lines if ln.strip() and not ln.startswith("#")]
    assert all(ln.startswith("[") for ln in active), active  # only section headers
    uncommented = "\n".join(
        ln[1:] if re.match(r"^#[a-z][a-z0-9-]* = ", ln) else ln
        for ln in lines
        if not ln.startswith("# ")
    )
    data = tomllib.loads(uncommented)
    for name, model in sections().items():
        assert sorted(data[name]) == sorted(keys(model)), name
    assert schema.load(Config, data) == Config()


# ---------------------------------------------------------------- man pages --


def test_the_man_pages_build_without_warnings(tmp_path: Path) -> None:
    if shutil.which("rst2man") is None:
        pytest.skip("rst2man is not installed (apt-get install python3-docutils)")
    pages = sorted(MAN.glob("*.rst"))
    assert [p.name for p in pages] == [
        "liveupctl.1.rst",
        "liveupd.8.rst",
        "liveupd.conf.5.rst",
        "liveupd.hook.5.rst",
    ]
    for page in pages:
        out = tmp_path / page.stem
        result = subprocess.run(
            ["rst2man", "--exit-status=2", str(page), str(out)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0 and not result.stderr, (page, result.stderr)
        name, section = page.stem.rsplit(".", 1)
        header = rf'^\.TH "?{re.escape(name.upper())}"? "?{section}"? '
        assert re.search(header, out.read_text(), re.M), out.read_text()[:400]


def test_every_liveupctl_command_and_option_is_in_its_man_page() -> None:
    page = (MAN / "liveupctl.1.rst").read_text()
    for command, sub in subcommands().items():
        assert f"``{command}``" in page, command
        for option in sub:
            if option not in ("-h", "--help"):
                assert f"``{option}``" in page, (command, option)


# -------------------------------------------------------------- completions --


def subcommands() -> dict[str, list[str]]:
    import argparse

    p = ctl_parser()
    action = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return {
        name: [o for a in sub._actions for o in a.option_strings]
        for name, sub in action.choices.items()
    }


@pytest.fixture
def kernels_root(tmp_path: Path) -> Path:
    """/ with two kernels: 6.12 in /boot, 7.3 in /usr/lib/modules only (new packaging)."""
    root = tmp_path / "root"
    (root / "boot").mkdir(parents=True)
    (root / "boot" / "vmlinuz-6.12.118+deb13-cloud-amd64").write_text("k")
    (root / "usr/lib/modules/6.12.118+deb13-cloud-amd64").mkdir(parents=True)
    (root / "usr/lib/modules/7.3.4+deb13-cloud-amd64").mkdir(parents=True)
    (root / "usr/lib/modules/7.3.4+deb13-cloud-amd64/vmlinuz").write_text("k")
    (root / "usr/lib/modules/5.0.0-modules-only").mkdir(parents=True)  # no kernel image
    return root


def bash_complete(line: str, root: Path) -> list[str]:
    """What bash completion offers for ``line`` (the word under the cursor is the last)."""
    library = Path("/usr/share/bash-completion/bash_completion")
    if not library.is_file() or shutil.which("bash") is None:
        pytest.skip("bash-completion is not installed (apt-get install bash-completion)")
    script = f"""
source {library}
source {BASH}
COMP_LINE={line!r}
COMP_POINT=${{#COMP_LINE}}
read -r -a COMP_WORDS <<< "$COMP_LINE"
[[ $COMP_LINE == *' ' ]] && COMP_WORDS+=('')
COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))
_liveupctl liveupctl "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "LIVEUPD_COMPLETION_ROOT": str(root)},
        timeout=60,
        check=True,
    )
    return sorted(w for w in result.stdout.splitlines() if w)


def test_bash_completes_commands_options_and_kernel_releases(kernels_root: Path) -> None:
    assert bash_complete("liveupctl ", kernels_root) == sorted(subcommands())
    assert bash_complete("liveupctl st", kernels_root) == ["stage", "status"]
    assert bash_complete("liveupctl stage ", kernels_root) == [
        "6.12.118+deb13-cloud-amd64",
        "7.3.4+deb13-cloud-amd64",
    ]
    assert bash_complete("liveupctl reboot 7", kernels_root) == ["7.3.4+deb13-cloud-amd64"]
    assert bash_complete("liveupctl exec --mode ", kernels_root) == ["direct", "systemd"]
    for command, options in subcommands().items():
        offered = bash_complete(f"liveupctl {command} -", kernels_root)
        assert set(options) - {"-h"} <= set(offered), (command, offered)


def test_zsh_completion_knows_every_command_and_the_kernel_releases(kernels_root: Path) -> None:
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed (apt-get install zsh)")
    subprocess.run(["zsh", "-n", str(ZSH)], check=True, timeout=60)
    text = ZSH.read_text()
    for command, options in subcommands().items():
        assert f"'{command}:" in text, command
        for option in options:
            if option not in ("-h", "--help"):
                assert re.search(rf"['(]{re.escape(option)}[\[=]|\){re.escape(option)}\[", text), (
                    command,
                    option,
                )
    # The release lister, with zsh's completion builtins replaced by a printer.
    script = f"""
_wanted() {{ shift 3; "$@"; }}
compadd() {{ [[ $1 == -a ]] && print -l -- ${{(P)3}}; }}
source <(sed -n '/^_liveupctl_releases()/,/^}}/p' {ZSH})
_liveupctl_releases
"""
    result = subprocess.run(
        ["zsh", "-f", "-c", script],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "LIVEUPD_COMPLETION_ROOT": str(kernels_root)},
        timeout=60,
        check=True,
    )
    assert sorted(result.stdout.split()) == [
        "6.12.118+deb13-cloud-amd64",
        "7.3.4+deb13-cloud-amd64",
    ]


# ------------------------------------------------------- release tarball, deps --


def test_the_sdist_holds_what_the_build_needs(tmp_path: Path) -> None:
    pytest.importorskip("build")
    subprocess.run(
        ["python", "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path), "."],
        cwd=REPO,
        capture_output=True,
        timeout=300,
        check=True,
        env={"PATH": f"{Path(__import__('sys').executable).parent}:/usr/bin:/bin"},
    )
    (sdist,) = tmp_path.glob("liveupd-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in (
        "LICENSE",
        "Makefile",
        "README.md",
        "pyproject.toml",
        "units/liveupd.service",
        "units/liveupd-verify.service",
        "units/liveupd-shutdown",
        "units/liveupd.tmpfiles",
        "dbus/org.liveupd.LiveUpdate1.conf",
        "dbus/org.liveupd.LiveUpdate1.service",
        "dbus/org.liveupd.LiveUpdate1.xml",
        "dbus/org.liveupd.policy",
        "hooks.d/20-network.hook",
        "kernel-install/99-liveupd.install",
        "kernel-install/postinst.d/zz-liveupd",
        "kernel-install/postrm.d/zz-liveupd",
        "man/liveupd.conf.5.rst",
        "completions/liveupctl.bash",
        "completions/_liveupctl",
        "docs/examples/liveupd.conf",
        "debian/control",
        "debian/rules",
        "liveupd/daemon/main.py",
        "tests/conftest.py",
    ):
        assert needed in names, needed
    assert not any(n.endswith(".pyc") or "__pycache__" in n for n in names)


def test_the_dependency_floors_match_debian_13() -> None:
    """pyproject's floors are what debian/control asks of Debian's packages."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    floors = {}
    for dep in project["dependencies"]:
        m = re.match(r"^([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", dep)
        if m:
            floors[m.group(1)] = m.group(2)
    assert floors["dbus-fast"] == "2.44"
    control = (REPO / "debian" / "control").read_text()
    assert "python3-dbus-fast (>= 2.44)" in control
    assert "LGPL-2.1" in (REPO / "debian" / "copyright").read_text()
    assert "GNU LESSER GENERAL PUBLIC LICENSE" in (REPO / "LICENSE").read_text()
