"""The polkit rule example (docs/examples/50-liveupd-group.rules).

Checked with node, as polkitd would run it: the file is valid JavaScript, it
names only actions dbus/org.liveupd.policy defines, and evaluated against a
stand-in for polkit's ``polkit`` object it grants exactly what its comment
says.  The docs show the same rule.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from liveupd.service import names
from tests.dbus.buses import REPO

RULE = REPO / "docs" / "examples" / "50-liveupd-group.rules"
POLICY = REPO / "dbus" / "org.liveupd.policy"
DOCS = [REPO / "docs" / "fleet.md", REPO / "docs" / "dbus-api.md"]

# Loads the rule the way polkitd does (polkit.addRule), then answers each case.
HARNESS = """
const fs = require("fs");
const rules = [];
const polkit = {
    Result: {NO: "no", YES: "yes", AUTH_SELF: "auth_self", AUTH_SELF_KEEP: "auth_self_keep",
             AUTH_ADMIN: "auth_admin", AUTH_ADMIN_KEEP: "auth_admin_keep",
             NOT_HANDLED: null},
    addRule: function (f) { rules.push(f); },
    addAdminRule: function () {},
    log: function () {},
    spawn: function () { throw new Error("the rule must not spawn programs"); },
};
new Function("polkit", fs.readFileSync(process.argv[1], "utf8"))(polkit);
const cases = JSON.parse(process.argv[2]);
const out = cases.map(function (c) {
    const subject = {
        user: c.user, local: c.local, active: c.active,
        isInGroup: function (g) { return c.groups.indexOf(g) >= 0; },
        isInNetGroup: function () { return false; },
    };
    const action = {id: c.action, lookup: function () { return undefined; }};
    for (let i = 0; i < rules.length; i++) {
        const r = rules[i](action, subject);
        if (r !== undefined && r !== null) return r;
    }
    return null;
});
process.stdout.write(JSON.stringify({rules: rules.length, results: out}));
"""


def node() -> str:
    found = shutil.which("node") or shutil.which("nodejs")
    if found is None:
        pytest.skip("node is not installed (apt-get install nodejs)")
    return found


def policy_actions() -> set[str]:
    return {a.get("id", "") for a in ET.parse(POLICY).getroot().iter("action")}


def the_rule() -> str:
    """The polkit.addRule(...) call, as it appears in the file (comments left out)."""
    text = RULE.read_text()
    return text[text.index("polkit.addRule(") :].strip()


def test_the_rule_is_valid_javascript(tmp_path: Path) -> None:
    copy = tmp_path / "rule.js"
    shutil.copy(RULE, copy)
    result = subprocess.run(
        [node(), "--check", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    # polkit's interpreter (duktape, mozjs) is ECMAScript 5: keep the rule to it.
    code = "\n".join(line.split("//")[0] for line in the_rule().splitlines())
    assert not re.search(r"=>|\blet\b|\bconst\b|`", code), code


def test_the_rule_names_the_real_actions() -> None:
    named = set(re.findall(r'"(org\.liveupd\.[a-z.-]+)"', the_rule()))
    assert named == {names.ACTION_STAGE, names.ACTION_EXECUTE}
    assert named <= policy_actions()
    assert names.ACTION_EXECUTE_IGNORE_INHIBITORS in policy_actions()


def evaluate(cases: list[dict[str, Any]]) -> list[str | None]:
    result = subprocess.run(
        [node(), "-e", HARNESS, "--", str(RULE), json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["rules"] == 1
    answers: list[str | None] = out["results"]
    return answers


def test_group_members_in_an_active_local_session_need_no_password() -> None:
    member = {"user": "alice", "local": True, "active": True, "groups": ["alice", "liveupd"]}
    stranger = {**member, "user": "bob", "groups": ["bob"]}
    remote = {**member, "local": False}
    inactive = {**member, "active": False}
    cases = []
    expected: list[str | None] = []
    for action in sorted(policy_actions()):
        granted = action in (names.ACTION_STAGE, names.ACTION_EXECUTE)
        for subject, yes in ((member, granted), (stranger, False), (remote, False)):
            cases.append({**subject, "action": action})
            expected.append("yes" if yes else None)
        cases.append({**inactive, "action": action})
        expected.append(None)
    cases.append({**member, "action": "org.freedesktop.login1.reboot"})
    expected.append(None)
    assert evaluate(cases) == expected


def test_the_docs_show_this_rule() -> None:
    rule = the_rule()
    for doc in DOCS:
        text = doc.read_text()
        assert rule in text, f"{doc.name} does not show {RULE.name} as it is"
        assert "examples/50-liveupd-group.rules" in text
