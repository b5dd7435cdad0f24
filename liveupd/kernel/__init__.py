"""Kernels: discovery, validation, the kexec syscalls, and the kernel steps."""
