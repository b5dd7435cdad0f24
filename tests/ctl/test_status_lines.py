"""``liveupctl status``'s lines for the current transition, from the daemon's data."""

from __future__ import annotations

from typing import Any

from liveupd.ctl.status import transition_lines


def ended(state: str, step: str | None) -> dict[str, Any]:
    return {
        "id": "T1",
        "dry_run": False,
        "state": state,
        "old_release": "A",
        "new_release": "B",
        "mode": "direct",
        "finished": 0,
        "elapsed_s": 1.0,
        "error": {"step": step, "message": "why"},
    }


def test_a_failure_names_the_step_it_failed_at() -> None:
    lines = transition_lines(ended("failed", "hook:10-db"))
    assert "  failed at:    hook 10-db" in lines and "  reason:       why" in lines


def test_a_cancel_is_not_called_a_failure() -> None:
    lines = transition_lines(ended("cancelled", "devices:devices"))
    assert "  cancelled at: devices" in lines
    assert not any("failed" in line for line in lines)
    staged = transition_lines(ended("cancelled", None))  # a staged kernel unloaded
    assert not any(" at:" in line for line in staged)
    assert "  reason:       why" in staged
