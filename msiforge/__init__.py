"""msiforge: generate, build, boot and test MSI / IMS interrupt drivers in QEMU."""

__version__ = "0.1.0"
