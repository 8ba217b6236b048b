"""ppc64le: IBM pseries under QEMU (sPAPR), where the hypervisor owns every MSI message.

On pseries the guest never composes or writes an MSI message.  The kernel
asks firmware for vectors (RTAS ``ibm,change-msi``, then
``ibm,query-interrupt-source-number``); QEMU's RTAS writes the message into
the device's MSI capability itself (hw/ppc/spapr_pci.c: spapr_msi_setmsg():
address SPAPR_PCI_MSI_WINDOW, data the interrupt source number, the LISN), and
the kernel's ``pseries_msi_write_msg`` only records what it reads back.  A
write of the data word to the MSI window raises that LISN at the interrupt
controller (XIVE with a POWER9 CPU, or XICS): the window is in every PHB
device's DMA address space, outside the TCE windows, so an edu DMA of the
stored data word to it is a real interrupt (docs/research/pseries.md).
"""

from __future__ import annotations

from . import Arch

#: QEMU's sPAPR MSI window (include/hw/pci-host/spapr.h: SPAPR_PCI_MSI_WINDOW).
SPAPR_MSI_WINDOW = 0x40000000000

#: VOF (QEMU's virtual Open Firmware) boots the kernel directly, quicker and
#: quieter than SLOF; the kernel assigns the PCI BARs itself.  The cap-* spectre
#: mitigations are ones TCG cannot provide: named broken, QEMU does not warn.
MACHINE = "pseries,x-vof=on,cap-cfpc=broken,cap-sbbc=broken,cap-ibs=broken,cap-ccf-assist=off"
#: POWER9: the guest negotiates XIVE at CAS (XICS with xive=off on its command line).
CPU = "POWER9"


class Ppc64le(Arch):
    def firmware(self, accel: str) -> list[str]:
        # With a firmware variable QEMU formats the sPAPR NVRAM (spapr_nvram_realize():
        # a system and a free partition); VOF leaves it blank otherwise, and the
        # kernel warns of "nvram corruption detected: 0-length partition".
        return ["-prom-env", "msiforge=1"]


ARCH = Ppc64le(
    name="ppc64le",
    machines=("pseries",),
    qemu_machine=MACHINE,
    cpu_model=CPU,
    qemu="qemu-system-ppc64",
    console="hvc0",
    kernel_arch="powerpc",
    cross_compile="powerpc64le-linux-gnu-",
    # QEMU loads the ELF vmlinux itself (no boot wrapper).
    image="vmlinux",
    kconfig="ppc64le-pseries.config",
    debian="ppc64el",
    order=20,
    slot_tag="-ppc64le",
    guest_iommu="hypervisor",
    # The hypervisor (RTAS) writes every MSI message: only a device whose storage
    # is its PCI MSI capability can exist here.
    storages=("pci-msi",),
    storage_refusal=("on pseries the hypervisor owns every MSI message (RTAS ibm,change-msi writes it into "
                     "the device); no parent domain takes device-specific storage"),
    # The doorbell is at 4 TiB: edu's DMA mask must not clamp it.
    edu_dma_mask=0xffffffffffffffff,
    c={
        "name": "ppc64le",
        "includes": [],
        "default_parent": "NULL",
        "pci_msi_by_raise": False,
        "macros": "module/driver/arch/ppc64le.c.j2",
        "kconfig_depends": "PPC_PSERIES && PCI_MSI",
        # QEMU's edu registers are in the emulator's native byte order, big-endian
        # on qemu-system-ppc64 whatever the guest's; readl()/writel() are little-endian.
        "edu_byte_order": "big-endian on qemu-system-ppc64, whatever the guest's",
        "edu_read32": "ioread32be",
        "edu_write32": "iowrite32be",
        "edu_write64": "iowrite64be",
        # Who writes the message the device holds (the guest script reports it).
        "msg_writer": "hypervisor",
        # The chip of the PCI/MSI domains (domain-layout): the PHB's global one
        # (6.12), or pSeries-PCI-MSI-<bdf> per device (7.3).
        "pci_msi_chip": "pSeries-PCI-MSI",
        # The MSI window as the guest script reads a message: "addr_hi/addr_lo".
        "msi_window": f"{SPAPR_MSI_WINDOW >> 32:#010x}/{SPAPR_MSI_WINDOW & 0xffffffff:#010x}",
    },
)
