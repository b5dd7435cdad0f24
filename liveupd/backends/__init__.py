"""Interfaces to the machine, and their dry-run stand-ins."""
