"""msiforge: generate, build, boot and test MSI / IMS interrupt drivers in QEMU."""

__version__ = "0.1.0"

import os as _os

if _os.environ.get("MSIFORGE_AUDIT_PROGRAMS"):  # the test suite's check of every program run
    from .hostprogs import install_audit as _install_audit

    _install_audit(_os.environ["MSIFORGE_AUDIT_PROGRAMS"])
