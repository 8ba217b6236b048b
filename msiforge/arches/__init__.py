"""One record per board architecture, one file each (``x86_64.py``, ``arm64.py``, ...).

An :class:`Arch` holds everything msiforge knows of an architecture: the
QEMU machines a board may use and the QEMU command line, the serial console,
the kernel's ``ARCH=`` and cross toolchain, the bootable image, the kconfig
fragment, the Debian architecture (for the guest's busybox), and the data the
driver template needs.  The records are discovered from this package: adding
an architecture is one new file here (plus a board, a kconfig fragment and,
for the template, its C data).

In the spirit of the kernel's ``tools/testing/kunit/qemu_configs/`` (one
``QemuArchParams`` per architecture) and tuxmake's targets (small data plus
one generic class).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: a record is data, it imports nothing heavy
    from ..board import Board


@dataclass(frozen=True)
class Arch:
    """A board architecture.  Subclasses (one per file) override the QEMU hooks where they differ."""

    name: str  # the board's ``arch``
    machines: tuple[str, ...]  # the QEMU machines a board may name (the first is the default)
    qemu: str  # the QEMU binary
    console: str  # the guest's serial console device
    kernel_arch: str  # the kernel's ARCH=
    cross_compile: str  # the toolchain prefix ("" for the host's own)
    image: str  # the bootable image, relative to a kernel build's O=
    kconfig: str  # the fragment in kconfigs/ merged onto tinyconfig for source kernels
    debian: str  # the Debian architecture (foreign busybox-static, packages)
    slot_tag: str  # in kernel build slot names ("" for x86_64: its slots predate arches)
    #: Accelerators a guest of this arch can use on this (x86_64) host.
    accels: tuple[str, ...] = ("tcg",)
    #: What the guest script calls the board's MSI translation when the arch fixes it
    #: (arm64: the GICv3 ITS); None: the board's ``iommu``.
    guest_iommu: str | None = None
    #: The -M value of every boot, when the arch fixes it (its options included); None: the board's machine.
    qemu_machine: str | None = None
    #: The -cpu model under TCG; None: QEMU's default.
    cpu_model: str | None = None
    #: Kernel command line words of every boot (after console=, loglevel=, panic=).
    cmdline: tuple[str, ...] = ()
    #: Words added under TCG only (what holds for QEMU's emulated CPUs, not for a real one under KVM).
    tcg_cmdline: tuple[str, ...] = ()
    #: Where the arch is listed among the others (help texts, error messages).
    order: int = 50
    #: The device storages a board of this arch may use, and why the others are refused.
    storages: tuple[str, ...] = ("ims", "platform-msi", "pci-msi")
    storage_refusal: str = ""
    #: The edu's DMA mask: it must not clamp the MSI doorbell's address.
    edu_dma_mask: int = 0xffffffff
    #: Whether runs resume warm snapshots of the booted guest (vmtests/snapshot.py): verified per arch.
    snapshots: bool = False
    #: The Debian package of a newer QEMU for this arch (vmtests/newer_qemu.py), "" if none is verified.
    newer_qemu: str = ""
    #: Whether msiforge writes the guest's device tree (platform devices, their wired interrupts).
    device_tree: bool = False
    #: The data the driver template needs (generator/arch.py reads it).
    c: dict = field(default_factory=dict, compare=False)

    # ---- building --------------------------------------------------------------------

    @property
    def make_vars(self) -> tuple[str, ...]:
        """ARCH= and CROSS_COMPILE= for make (none for the host's own arch)."""
        if not self.cross_compile:
            return ()
        return (f"ARCH={self.kernel_arch}", f"CROSS_COMPILE={self.cross_compile}")

    @property
    def cc(self) -> str:
        """The compiler, as CC= of the kernel build."""
        return f"{self.cross_compile}gcc"

    @property
    def strip(self) -> str:
        return f"{self.cross_compile}strip"

    @property
    def fragment(self) -> Path:
        return Path(str(resources.files("msiforge.kconfigs"))) / self.kconfig

    @property
    def foreign(self) -> bool:
        """Whether guest programs (busybox) must come from another Debian architecture."""
        return bool(self.cross_compile)

    # ---- QEMU ------------------------------------------------------------------------

    def firmware(self, accel: str) -> list[str]:
        """Firmware options (-bios ...)."""
        return []

    def machine_arg(self, board: "Board", accel: str) -> str:
        """The -M value of a boot of ``board``."""
        return self.qemu_machine or board.machine

    def cpu(self, accel: str) -> list[str]:
        """-cpu options."""
        if accel == "kvm":
            return ["-cpu", "host"]
        return ["-cpu", self.cpu_model] if self.cpu_model else []

    def iommu_devices(self, board: "Board") -> list[str]:
        """Devices that must come before the board's devices (an IOMMU translates for those after it)."""
        return []

    def boot_words(self, accel: str) -> tuple[str, ...]:
        """The arch's kernel command line words of a boot under ``accel`` (kvm | tcg)."""
        return self.cmdline + (self.tcg_cmdline if accel == "tcg" else ())

    def probe_machine(self) -> list[str]:
        """-M / -cpu of the probe boots (accelerator, clock mode): the arch's default machine."""
        return ["-M", self.qemu_machine or self.machines[0], *self.cpu("tcg")]

    def finish(self, board: "Board", argv_for) -> list[str]:
        """Options made from the rest of the command line (arm64: the board's device tree).

        ``argv_for(machine)`` gives the command line so far with ``-M machine``.
        """
        return []


#: QEMU options common to every boot: no default devices or config, the console on stdio,
#: and QEMU exits when the guest reboots (a panic reboots at once: panic=-1).
COMMON = ["-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot"]


def device_args(board: "Board") -> list[str]:
    """The board's devices for QEMU: one edu per device, at its PCI slot (one source for every backend)."""
    argv = []
    mask = get(board.arch).edu_dma_mask
    for dev in board.devices:
        # dma_mask: edu's default 28-bit mask clamps MSI addresses into 0..256M
        # (silently into RAM on x86; RAM starts at 1G on arm64 virt).
        argv += ["-device", f"edu,dma_mask={mask:#x},addr={dev.pci_slot:#04x}"]
    return argv


@functools.cache
def all_arches() -> dict[str, Arch]:
    """Every architecture record in this package, by name."""
    found = {}
    for mod in pkgutil.iter_modules(__path__):
        arch = importlib.import_module(f"{__name__}.{mod.name}").ARCH
        found[arch.name] = arch
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))


def get(name: str) -> Arch:
    """The record of ``name``; KeyError for an unknown arch (board validation names the known ones)."""
    return all_arches()[name]


def names() -> tuple[str, ...]:
    return tuple(all_arches())
