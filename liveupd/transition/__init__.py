"""The transition engine: plan, run, journal, roll back, history (built-ins: see assembly)."""
