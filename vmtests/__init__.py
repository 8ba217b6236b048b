"""Booting kernels in QEMU and running the guest tests (console, KTAP, verdicts)."""
