"""The device tree of arm64 (QEMU ``virt``) boards: QEMU's own, plus msiforge's platform devices.

QEMU builds the ``virt`` machine's DTB itself (``-M virt,dumpdtb=FILE``
writes it out).  For each board device with ``platform-msi`` storage msiforge
adds a platform device node whose ``msi-parent`` is the ITS, so the kernel's
ITS platform-MSI domain serves it::

    msiforge-pmsi0 {
        compatible = "msiforge,pmsi0";
        msi-parent = <&its 0x0>;     /* the ITS DeviceID of its messages */
        interrupts = <0 128 4>, ...; /* its wired_irqs: GIC SPIs, level high */
    };

The wired interrupts (a board device's ``wired_irqs``) are only described:
a driver of the device (vfio-platform) enumerates and requests them, nothing
raises them.  Device *i* gets SPIs ``128 + 8 * i`` onwards, which QEMU's
virt machine leaves unused (its own devices sit below 112).

The DeviceID is the one the messages really carry.  The device's storage is
sent by its edu, whose DMA writes reach GITS_TRANSLATER with
``MEMTXATTRS_UNSPECIFIED`` (QEMU 7.2: ``edu_dma_timer`` ->
``pci_dma_write`` -> ``pci_dma_rw(..., MEMTXATTRS_UNSPECIFIED)``), so
``requester_id`` is 0 and ``gicv3_its_translation_write`` uses DeviceID 0,
not the edu's requester ID (only ``msi_notify``, the edu's own PCI MSI,
carries that).  Every device-side message store therefore lives on ITS
DeviceID 0 (RID 00:00.0, the host bridge, which never takes MSIs).

The result is cached per QEMU binary and machine arguments.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from .. import hostprogs
from ..board import Board
from ..cache import atomic_write, cache_root, ensure_entry
from ..errors import EnvironmentProblem

#: The ITS DeviceID of a write by the edu's DMA engine (QEMU 7.2, see above).
EDU_DMA_DEVICE_ID = 0
#: The first GIC SPI of the wired interrupts of device 0; each device has 8 (board.MAX_WIRED_IRQS).
WIRED_SPI_BASE = 128
#: GIC interrupt specifier: SPI, level high (include/dt-bindings/interrupt-controller/arm-gic.h).
_GIC_SPI, _LEVEL_HIGH = 0, 4


def wired_spis(dev) -> list[int]:
    """The GIC SPIs of a device's wired interrupts."""
    return [WIRED_SPI_BASE + 8 * dev.index + j for j in range(dev.wired_irqs)]

_ITS_RE = re.compile(r"\bits@[0-9a-f]+ \{\s*phandle = <(0x[0-9a-f]+)>;", re.S)


def nodes(board: Board, its_phandle: str) -> str:
    """The DTS fragment of the board's platform devices."""
    out = []
    for dev in board.devices:
        if dev.storage != "platform-msi":
            continue
        wired = ""
        if dev.wired_irqs:
            specs = ", ".join(f"<{_GIC_SPI} {spi} {_LEVEL_HIGH}>" for spi in wired_spis(dev))
            wired = f"\t\tinterrupts = {specs};\n"
        out.append(f"\tmsiforge-{dev.name} {{\n"
                   f"\t\tcompatible = \"msiforge,{dev.name}\";\n"
                   f"\t\tmsi-parent = <{its_phandle} {EDU_DMA_DEVICE_ID:#x}>;\n"
                   f"{wired}"
                   f"\t}};\n")
    return "/ {\n" + "".join(out) + "};\n" if out else ""


def _run(cmd: list[str], what: str) -> str:
    hostprogs.require(cmd[0])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise EnvironmentProblem(f"{what} failed: {(proc.stdout + proc.stderr).strip()[-300:]}")
    return proc.stdout


def board_dtb(board: Board, argv_for: Callable[[str], list[str]], machine: str) -> Path:
    """The DTB to boot ``board`` with: QEMU's for this machine plus the board's nodes.

    ``argv_for(m)`` is the board's QEMU command line with ``-M m``, without
    ``-kernel``/``-initrd``/``-append``/``-dtb`` (those do not change the tree
    QEMU generates); QEMU dumps its tree when ``m`` asks it to (dumpdtb=).
    """
    qemu_argv = argv_for(machine)
    binary = shutil.which(qemu_argv[0]) or qemu_argv[0]
    st = Path(binary).stat()
    key = hashlib.sha256("\0".join([binary, str(st.st_size), str(st.st_mtime), *qemu_argv[1:],
                                    nodes(board, "ITS")]).encode()).hexdigest()[:20]
    entry = cache_root() / "dtb" / key

    def make(tmp: Path) -> None:
        _run(argv_for(f"{machine},dumpdtb={tmp / 'qemu.dtb'}"), "qemu dumpdtb")
        dts = _run(["dtc", "-q", "-I", "dtb", "-O", "dts", str(tmp / "qemu.dtb")], "dtc (decompile)")
        m = _ITS_RE.search(dts)
        if not m:
            raise EnvironmentProblem("QEMU's virt device tree has no ITS node (its=on?)")
        atomic_write(tmp / "board.dts", dts + nodes(board, m[1]))
        _run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(tmp / "board.dtb"), str(tmp / "board.dts")],
             "dtc (compile)")

    ensure_entry(entry, make)
    return entry / "board.dtb"
