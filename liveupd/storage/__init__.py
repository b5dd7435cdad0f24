"""Storage: sync, syncfs, freeze and thaw."""
