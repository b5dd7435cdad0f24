"""``liveupctl`` starts without the configuration model or the hooks (issues 14, 19).

Every verb but ``hooks`` only talks to the daemon over D-Bus; importing the
configuration model (then built with pydantic, which built its schemas at import)
made every call start several times slower, seconds per call on a slow machine (a
TCG guest, where fleet tools and the VM suite call it hundreds of times).  Read in
a fresh interpreter, as the program starts; a behavioural guard, not a timing test.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROGRAM = """
import json, sys
import liveupd.ctl.main
print(json.dumps(sorted(sys.modules)))
"""

ONLY_FOR_HOOKS = ("liveupd.config", "liveupd.hooks")


def test_the_client_imports_no_configuration_model() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120, check=True
    )
    modules = json.loads(out.stdout)
    assert "liveupd.ctl.client" in modules  # it did import the client
    assert sorted(m for m in modules if m.startswith(ONLY_FOR_HOOKS)) == []
