"""Hooks: manifests, discovery with overrides and masks, trust checks, the runner."""
