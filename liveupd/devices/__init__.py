"""Devices: enumeration, selection, unbind and rebind."""
