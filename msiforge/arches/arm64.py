"""arm64: QEMU virt with a GICv3 and its ITS (LPIs for MSIs), cross-built kernels, a device tree of our own."""

from __future__ import annotations

from . import Arch

#: The ITS DeviceID of a message sent by an edu's DMA engine on QEMU (7.2):
#: edu_dma_timer() -> pci_dma_write() -> pci_dma_rw(..., MEMTXATTRS_UNSPECIFIED),
#: so the write reaches GITS_TRANSLATER with requester_id 0, and
#: gicv3_its_translation_write() takes the DeviceID from requester_id.  (The
#: edu's own PCI MSI, msi_notify(), carries its requester ID instead.)  The
#: board's device tree gives the platform devices the same DeviceID
#: (vmtests/dtb.py).
EDU_DMA_ITS_DEVICE_ID = 0

#: GICv3 with the ITS: MSIs are LPIs translated by (DeviceID, EventID).
MACHINE = "virt,gic-version=3,its=on"
#: -cpu max, with the IMPDEF pointer-authentication algorithm: the architected
#: QARMA5 is costly to emulate under TCG, which only slows the boot.
CPU = "max,pauth-impdef=on"


class Arm64(Arch):
    def finish(self, board, argv_for) -> list[str]:
        # The board's platform devices (msi-parent: the ITS) in QEMU's own device tree.
        from ..vmtests import dtb

        return ["-dtb", str(dtb.board_dtb(board, argv_for, MACHINE))]


ARCH = Arm64(
    name="arm64",
    machines=("virt",),
    qemu_machine=MACHINE,
    cpu_model=CPU,
    qemu="qemu-system-aarch64",
    console="ttyAMA0",
    kernel_arch="arm64",
    cross_compile="aarch64-linux-gnu-",
    image="arch/arm64/boot/Image",
    kconfig="arm64-virt.config",
    debian="arm64",
    order=10,
    slot_tag="-arm64",
    guest_iommu="its",
    device_tree=True,
    # The driver template's data (generator/arch.py; C that differs: templates/module/driver/arch/).
    c={
        "name": "arm64",
        "includes": [],
        # The MSI parent is the GICv3 ITS; there is no fallback.
        "default_parent": "NULL",
        # msi_alloc_info_t (asm-generic/msi.h) carries the slot index.
        "hwirq_expr": "((msi_alloc_info_t *)arg)->hwirq",
        # The flow: the GIC takes an end-of-interrupt (the ITS chip has no ack).
        "flow_op": "irq_eoi",
        "flow_parent": "irq_chip_eoi_parent",
        "flow_handler": "handle_fasteoi_irq",
        "flow_name": "fasteoi",
        # Why the device's chip masks and unmasks at the parent (irq_chip_mask_parent).
        "mask_parent": "The ITS enables an LPI only once it is unmasked there",
        # The ITS takes a message's DeviceID from the write's requester ID, which
        # QEMU gives the edu's own MSI but not its DMA: a device whose storage is
        # its PCI MSI capability sends it by raising the edu's interrupt.
        "pci_msi_by_raise": True,
        "its_device_id": EDU_DMA_ITS_DEVICE_ID,
        # The edu's registers: little-endian, as the emulator's native byte order.
        "edu_byte_order": "little-endian",
        "edu_read32": "readl",
        "edu_write32": "writel",
        "edu_write64": "writeq",
        "msg_writer": "kernel",
        "macros": "module/driver/arch/arm64.c.j2",
        # An in-tree driver's Kconfig "depends on" (its parent domains' exports).
        "kconfig_depends": "ARM64 && PCI_MSI && ARM_GIC_V3_ITS",
    },
)
