"""Per-architecture data for the driver template.

Architecture differences live here as data, not as copies of the template.
"""

#: The ITS DeviceID of a message sent by an edu's DMA engine on QEMU (7.2):
#: edu_dma_timer() -> pci_dma_write() -> pci_dma_rw(..., MEMTXATTRS_UNSPECIFIED),
#: so the write reaches GITS_TRANSLATER with requester_id 0, and
#: gicv3_its_translation_write() takes the DeviceID from requester_id.  (The
#: edu's own PCI MSI, msi_notify(), carries its requester ID instead.)  The
#: board's device tree gives the platform devices the same DeviceID
#: (vmtests/dtb.py).
EDU_DMA_ITS_DEVICE_ID = 0

ARCHES: dict[str, dict] = {
    "x86_64": {
        "name": "x86_64",
        "includes": ["asm/hw_irq.h", "asm/irqdomain.h"],
        # Fallback MSI parent when the device has none recorded.
        "default_parent": "x86_vector_domain",
        # The slot index travels to the domain's alloc in irq_alloc_info.
        "hwirq_expr": "((struct irq_alloc_info *)arg)->hwirq",
        # The flow: the vector domain acks an edge.
        "flow_op": "irq_ack",
        "flow_handler": "handle_edge_irq",
        "flow_name": "edge",
    },
    "arm64": {
        "name": "arm64",
        "includes": [],
        # The MSI parent is the GICv3 ITS; there is no fallback.
        "default_parent": "NULL",
        # msi_alloc_info_t (asm-generic/msi.h) carries the slot index.
        "hwirq_expr": "((msi_alloc_info_t *)arg)->hwirq",
        # The flow: the GIC takes an end-of-interrupt (the ITS chip has no ack).
        "flow_op": "irq_eoi",
        "flow_handler": "handle_fasteoi_irq",
        "flow_name": "fasteoi",
        "its_device_id": EDU_DMA_ITS_DEVICE_ID,
    },
}
