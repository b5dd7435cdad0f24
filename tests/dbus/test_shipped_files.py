"""The data files in dbus/ and units/: well-formed, valid, and what the daemon really does."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from liveupd.service import interface_xml, names
from tests.dbus.buses import (
    BUS_NAME,
    MANAGER,
    NOBODY,
    OBJECT_PATH,
    TRANSITION,
    Daemon,
    PrivateBus,
    Processes,
    as_user,
    system_style_config,
)
from tests.dbus.fixtures import DaemonFactory

REPO = Path(__file__).resolve().parents[2]
DBUS = REPO / "dbus"
UNITS = REPO / "units"
XML = DBUS / "org.liveupd.LiveUpdate1.xml"
INTROSPECT_DTD = Path("/usr/share/xml/dbus-1/introspect.dtd")  # libdbus-1-dev
BUSCONFIG_DTD = Path("/usr/share/xml/dbus-1/busconfig.dtd")  # libdbus-1-dev
POLICYCONFIG_DTD = Path("/usr/share/polkit-1/policyconfig-1.dtd")  # polkitd


def xmllint(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("xmllint") is None:
        pytest.fail("xmllint is missing: apt-get install libxml2-utils (make host-deps)")
    return subprocess.run(
        ["xmllint", "--noout", *args], capture_output=True, text=True, check=False
    )


def need(path: Path, package: str) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: apt-get install {package}")
    return path


# ---------------------------------------------------------- introspection --


def normalize(node: ET.Element, interfaces: set[str]) -> dict[str, Any]:
    """Our interfaces of an introspection document, as comparable data."""
    out: dict[str, Any] = {}
    for iface in node.findall("interface"):
        name = iface.get("name", "")
        if name not in interfaces:
            continue
        members: dict[str, Any] = {}
        for m in iface:
            if m.tag == "annotation":
                continue
            args = [(a.get("name"), a.get("type"), a.get("direction")) for a in m.findall("arg")]
            notes = {a.get("name"): a.get("value") for a in m.findall("annotation")}
            members[f"{m.tag}:{m.get('name')}"] = (m.get("type"), m.get("access"), args, notes)
        out[name] = members
    return out


def test_shipped_xml_is_what_the_code_generates() -> None:
    assert XML.read_text() == interface_xml.xml(), (
        "regenerate it: python -m liveupd.service.interface_xml > dbus/org.liveupd.LiveUpdate1.xml"
    )


def test_shipped_xml_is_valid() -> None:
    result = xmllint("--dtdvalid", str(need(INTROSPECT_DTD, "libdbus-1-dev")), str(XML))
    assert result.returncode == 0, result.stderr


def test_introspection_equals_the_shipped_xml(daemon: Daemon, bus: PrivateBus) -> None:
    shipped = normalize(ET.parse(XML).getroot(), {MANAGER, TRANSITION})
    assert set(shipped) == {MANAGER, TRANSITION}
    [tid, path] = bus.call("Stage", "sssa{sv}", "", "", "", "0")
    for obj, iface in ((OBJECT_PATH, MANAGER), (path, TRANSITION)):
        [xml] = bus.busctl_json(
            "call", BUS_NAME, obj, "org.freedesktop.DBus.Introspectable", "Introspect"
        )["data"]
        live = normalize(ET.fromstring(xml), {iface})
        assert live == {iface: shipped[iface]}, f"{obj} exports something else than {XML}"
    # The manager object lists the transition objects as children.
    [xml] = bus.busctl_json(
        "call",
        BUS_NAME,
        f"{OBJECT_PATH}/transition",
        "org.freedesktop.DBus.Introspectable",
        "Introspect",
    )["data"]
    assert f'<node name="{tid}"' in xml


# ------------------------------------------------------------------ polkit --


def test_polkit_policy_is_valid_and_names_our_actions() -> None:
    policy = DBUS / "org.liveupd.policy"
    result = xmllint("--dtdvalid", str(need(POLICYCONFIG_DTD, "polkitd")), str(policy))
    assert result.returncode == 0, result.stderr
    actions = {
        a.get("id"): {d.tag: d.text for d in a.find("defaults") or []}
        for a in ET.parse(policy).getroot().findall("action")
    }
    assert set(actions) == {
        names.ACTION_STAGE,
        names.ACTION_EXECUTE,
        names.ACTION_EXECUTE_IGNORE_INHIBITORS,
    }
    for defaults in actions.values():
        assert defaults == {
            "allow_any": "no",
            "allow_inactive": "no",
            "allow_active": "auth_admin_keep",
        }


# -------------------------------------------------------------- bus policy --

# Attributes dbus-daemon(1) documents for <allow>/<deny>, which the DTD the
# dbus packages ship (upstream's, unchanged for years) never declared: even
# systemd's own policy files fail it on exactly these.
DOCUMENTED_ATTRIBUTES = {
    "send_interface",
    "send_member",
    "send_error",
    "send_destination",
    "send_path",
    "send_type",
    "send_requested_reply",
    "send_broadcast",
    "receive_interface",
    "receive_member",
    "receive_error",
    "receive_sender",
    "receive_path",
    "receive_type",
    "receive_requested_reply",
    "eavesdrop",
    "group",
    "user",
    "own",
    "own_prefix",
}


def test_bus_policy_is_well_formed_and_only_uses_documented_attributes() -> None:
    conf = DBUS / "org.liveupd.LiveUpdate1.conf"
    result = xmllint("--dtdvalid", str(need(BUSCONFIG_DTD, "libdbus-1-dev")), str(conf))
    undeclared = re.findall(
        r"No declaration for attribute (\S+) of element (?:allow|deny)", result.stderr
    )
    other = [
        line
        for line in result.stderr.splitlines()
        if "error" in line
        and "No declaration for attribute" not in line
        and not line.startswith("Document ")
    ]
    assert not other, result.stderr
    assert set(undeclared) <= DOCUMENTED_ATTRIBUTES


@pytest.fixture
def system_bus(procs: Processes) -> PrivateBus:
    """A real dbus-daemon with the host's system.conf policy plus ours."""
    return PrivateBus(procs, system_style_config(DBUS / "org.liveupd.LiveUpdate1.conf"))


def request_name(bus: PrivateBus, uid: int | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        as_user(
            uid,
            [
                "gdbus",
                "call",
                "--address",
                bus.address,
                "--dest",
                "org.freedesktop.DBus",
                "--object-path",
                "/org/freedesktop/DBus",
                "--method",
                "org.freedesktop.DBus.RequestName",
                BUS_NAME,
                "4",
            ],
        ),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_bus_policy_nobody_may_call_but_not_own(
    system_bus: PrivateBus,
    procs: Processes,
    write_config: Any,
    tmp_path: Path,
) -> None:
    # nobody may not own the name ...
    denied = request_name(system_bus, NOBODY)
    assert denied.returncode != 0
    assert "AccessDenied" in denied.stderr
    # ... root may: the daemon owns it on this bus.
    config = write_config("")
    Daemon(procs, system_bus, tmp_path / "liveupd.conf", config.state_dir).start()
    # nobody may call methods and read properties; the daemon decides the rest.
    assert system_bus.call("CanLiveUpdate", uid=NOBODY) == ["no"]  # no polkit here
    assert system_bus.get("State") == "idle"
    got = system_bus.busctl("get-property", BUS_NAME, OBJECT_PATH, MANAGER, "Version", uid=NOBODY)
    assert got.startswith('s "')
    stage = system_bus.gdbus(f"{MANAGER}.Stage", "", "", "", "{}", uid=NOBODY)
    assert stage.error == "org.freedesktop.DBus.Error.AccessDenied"
    assert "polkit gave no answer" in stage.message  # refused by the daemon, not the bus
    # Set is not for anyone but root, by the bus policy itself.
    sett = system_bus.gdbus(
        "org.freedesktop.DBus.Properties.Set", MANAGER, "State", "<'idle'>", uid=NOBODY
    )
    assert sett.error == "org.freedesktop.DBus.Error.AccessDenied"


def test_without_our_policy_not_even_root_may_own_the_name(
    procs: Processes, tmp_path: Path
) -> None:
    """The control: the system-style bus denies what our policy file allows."""
    empty = tmp_path / "empty.conf"
    empty.write_text("<busconfig/>\n")
    bus = PrivateBus(procs, system_style_config(empty))
    assert "AccessDenied" in request_name(bus, 0).stderr


# -------------------------------------------------------------------- units --


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make install DESTDIR=... PREFIX=/usr``: everything where a package puts it."""
    root = tmp_path_factory.mktemp("destdir")
    out = subprocess.run(
        [
            "make",
            "-C",
            str(REPO),
            "install",
            f"DESTDIR={root}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return root


def test_install_puts_every_file_in_place(installed: Path) -> None:
    for path, mode in [
        ("usr/share/dbus-1/system.d/org.liveupd.LiveUpdate1.conf", 0o644),
        ("usr/share/dbus-1/system-services/org.liveupd.LiveUpdate1.service", 0o644),
        ("usr/share/dbus-1/interfaces/org.liveupd.LiveUpdate1.xml", 0o644),
        ("usr/share/polkit-1/actions/org.liveupd.policy", 0o644),
        ("usr/lib/systemd/system/liveupd.service", 0o644),
        ("usr/lib/systemd/system/liveupd-verify.service", 0o644),
        ("usr/lib/tmpfiles.d/liveupd.conf", 0o644),
        ("usr/lib/systemd/system-shutdown/liveupd", 0o755),
        ("usr/sbin/liveupd", 0o755),
        ("usr/bin/liveupctl", 0o755),
        ("usr/libexec/liveupd/kernel-hook", 0o755),
        ("usr/libexec/liveupd/shutdown-unbind", 0o755),
        ("usr/share/kernel/postinst.d/zz-liveupd", 0o755),
        ("usr/share/kernel/postrm.d/zz-liveupd", 0o755),
        ("usr/lib/kernel/install.d/99-liveupd.install", 0o755),
        ("usr/lib/liveupd/hooks.d/20-network.hook", 0o644),
        ("usr/share/man/man1/liveupctl.1", 0o644),
        ("usr/share/man/man8/liveupd.8", 0o644),
        ("usr/share/man/man5/liveupd.conf.5", 0o644),
        ("usr/share/man/man5/liveupd.hook.5", 0o644),
        ("usr/share/bash-completion/completions/liveupctl", 0o644),
        ("usr/share/zsh/vendor-completions/_liveupctl", 0o644),
        ("usr/share/doc/liveupd/examples/liveupd.conf", 0o644),
        ("usr/lib/python3/dist-packages/liveupd/__init__.py", 0o644),
    ]:
        f = installed / path
        assert f.is_file(), path
        assert f.stat().st_mode & 0o777 == mode, path
    # Every unit's Documentation= page is installed.
    for name in ("liveupd.service", "liveupd-verify.service"):
        for doc in unit(name)["Unit"]["Documentation"].split():
            page, section = doc.removeprefix("man:").rstrip(")").split("(")
            assert (installed / f"usr/share/man/man{section}/{page}.{section}").is_file(), doc


def test_install_ships_no_bytecode_and_names_the_system_python(installed: Path) -> None:
    """Programs run /usr/bin/python3 (never a python3 found on PATH); no .pyc shipped."""
    assert not list(installed.rglob("*.pyc")) and not list(installed.rglob("__pycache__"))
    for program in (
        "usr/sbin/liveupd",
        "usr/bin/liveupctl",
        "usr/libexec/liveupd/kernel-hook",
        "usr/libexec/liveupd/shutdown-unbind",
    ):
        assert (installed / program).read_text().startswith("#!/usr/bin/python3\n"), program
    helpers = ("usr/share/kernel/postinst.d/zz-liveupd", "usr/lib/systemd/system-shutdown/liveupd")
    for helper in helpers:
        text = (installed / helper).read_text()
        assert "/usr/libexec/liveupd/" in text and "python3 -" not in text, helper
    activation = installed / "usr/share/dbus-1/system-services/org.liveupd.LiveUpdate1.service"
    assert "SystemdService=liveupd.service" in activation.read_text()


def test_install_refuses_a_prefix_nothing_reads(tmp_path: Path) -> None:
    out = subprocess.run(
        ["make", "-C", str(REPO), "install", f"DESTDIR={tmp_path}", "PREFIX=/usr/local"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode != 0
    assert "PREFIX=/usr/local refused" in out.stderr
    assert not any(tmp_path.iterdir())


def test_systemd_analyze_verify_is_clean(installed: Path, tmp_path: Path) -> None:
    """Verified in an image of this host's systemd units plus the installed files."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    shutil.copytree(installed, root, symlinks=True, dirs_exist_ok=True)
    units = [
        str(root / "usr/lib/systemd/system" / name)
        for name in ("liveupd.service", "liveupd-verify.service")
    ]
    out = subprocess.run(
        # --man=no: the Documentation= pages are in the installed tree, not on this host
        # (test_install_puts_every_file_in_place checks them).
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", *units],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "" and out.stdout.strip() == "", out.stderr


def test_daemon_unit_contract() -> None:
    service = unit("liveupd.service")["Service"]
    assert service["Type"] == "notify"
    assert service["BusName"] == BUS_NAME
    assert service["ExecStart"] == "/usr/sbin/liveupd"
    assert service["WatchdogSec"]
    assert "PYTHONDONTWRITEBYTECODE=1" in service["Environment"].split()
    assert service["ProtectKernelTunables"] == "no"
    caps = service["CapabilityBoundingSet"].split()
    assert {"CAP_SYS_BOOT", "CAP_SYS_ADMIN"} <= set(caps)
    assert service["StateDirectoryMode"] == "0700"
    activation = configparser.ConfigParser(interpolation=None)
    activation.optionxform = str  # type: ignore[assignment,method-assign]
    activation.read(DBUS / "org.liveupd.LiveUpdate1.service")
    assert activation["D-BUS Service"]["Name"] == BUS_NAME
    assert activation["D-BUS Service"]["SystemdService"] == "liveupd.service"
    assert activation["D-BUS Service"]["Exec"] == service["ExecStart"] == "/usr/sbin/liveupd"


def test_verify_unit_contract() -> None:
    u = unit("liveupd-verify.service")
    assert u["Unit"]["ConditionPathExists"] == "/var/lib/liveupd/pending"
    assert u["Unit"]["DefaultDependencies"] == "no"
    assert "liveupd.service" in u["Unit"]["Before"].split()
    assert u["Service"]["Type"] == "oneshot"
    assert u["Service"]["ExecStart"] == "/usr/sbin/liveupd --verify"


def test_tmpfiles_state_dir_is_root_only() -> None:
    lines = [
        line.split()
        for line in (UNITS / "liveupd.tmpfiles").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ["d", "/var/lib/liveupd", "0700", "root", "root", "-"] in lines


def shutdown_helper(tmp_path: Path, verb: str, pending: bool) -> tuple[int, list[str]]:
    """Run units/liveupd-shutdown with a fake shutdown-unbind that records its calls."""
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    (state / "pending").unlink(missing_ok=True)
    if pending:
        (state / "pending").write_text('{"id": "t"}')
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    record = tmp_path / "calls"
    record.unlink(missing_ok=True)
    fake = bindir / "shutdown-unbind"
    fake.write_text(f'#!/bin/sh\necho "$PYTHONDONTWRITEBYTECODE $*" >> {record}\nexit 7\n')
    fake.chmod(0o755)
    env = {
        "PATH": "/usr/bin:/bin",
        "LIVEUPD_STATE_DIR": str(state),
        "LIVEUPD_SHUTDOWN_UNBIND": str(fake),
    }
    out = subprocess.run(
        ["/bin/sh", str(UNITS / "liveupd-shutdown"), verb],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    calls = record.read_text().splitlines() if record.exists() else []
    return out.returncode, calls


def test_shutdown_helper_only_for_a_pending_kexec(tmp_path: Path) -> None:
    assert shutdown_helper(tmp_path, "kexec", pending=True) == (
        0,  # a failing helper never fails the shutdown
        ["1 kexec"],  # the installed program, never writing bytecode
    )
    for verb in ("reboot", "poweroff", "halt"):
        assert shutdown_helper(tmp_path, verb, pending=True) == (0, [])
    assert shutdown_helper(tmp_path, "kexec", pending=False) == (0, [])


def test_shutdown_helper_records_a_failure_it_could_not_record_itself(tmp_path: Path) -> None:
    """The program failed before saying why (it could not start): the wrapper leaves the
    line the new kernel's verification reports as a warning."""
    shutdown_helper(tmp_path, "kexec", pending=True)
    record = tmp_path / "state" / "late-failures.jsonl"
    [line] = record.read_text().splitlines()
    entry = json.loads(line)
    assert entry["transition"] == "t"
    assert entry["message"].startswith(
        "the system-shutdown helper (shutdown-unbind) failed with status 7 before it could say why"
    )
    record.unlink()
    for verb in ("reboot", "poweroff"):
        shutdown_helper(tmp_path, verb, pending=True)
    assert not record.exists()


def test_no_package_named_dbus_in_the_repo() -> None:
    """A dbus/__init__.py would shadow dbus-python (python-dbusmock needs it)."""
    assert not (DBUS / "__init__.py").exists()


def test_start_daemon_fixture_is_dry_run(start_daemon: DaemonFactory, bus: PrivateBus) -> None:
    daemon = start_daemon()
    assert "dry_run=True" in daemon.log()


def test_the_api_document_covers_every_member_and_error() -> None:
    doc = (REPO / "docs" / "dbus-api.md").read_text()
    root = ET.parse(XML).getroot()
    for iface in root.findall("interface"):
        assert f"## {iface.get('name')}" in doc
        for member in iface:
            assert f"`{member.get('name')}" in doc, member.get("name")
    from liveupd.errors import all_error_kinds

    for kind in all_error_kinds():
        assert f"`{kind.dbus_name}`" in doc, kind.dbus_name
