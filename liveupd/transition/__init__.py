"""The transition engine: plan, run, roll back, journal, recover, history."""
