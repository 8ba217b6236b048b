"""x86_64: QEMU q35 (or pc), the Intel IOMMU's interrupt remapping, qboot under TCG, PVH direct boot."""

from __future__ import annotations

from pathlib import Path

from . import Arch

#: QEMU's minimal firmware: it hands over to the kernel in about half the time SeaBIOS
#: takes (0.10 s vs 0.20 s to the first kernel line under TCG) and keeps q35's PCI, the
#: ACPI tables (DMAR included: intel-iommu interrupt remapping works) and SMP.
QBOOT = Path("/usr/share/qemu/qboot.rom")

#: Initcalls of x86 kernels that the tests do not need and that cost real time
#: under TCG (0.3-0.5 s of QEMU CPU time together on Debian 6.12, measured A/B):
#: parsing the built-in X.509 certificates (our modules are unsigned anyway), the
#: jitter-entropy RNG's self-test, the ACPI PM-timer clocksource's verification
#: (the TSC and HPET remain), and the first BTF kfunc registration (which parses
#: vmlinux's BTF).  A name a kernel does not have is ignored.
SKIPPED_INITCALLS = ("load_system_certificate_list", "jent_mod_init", "init_acpi_pm_clocksource",
                     "bpf_tcp_ca_kfunc_init")


class X86_64(Arch):
    def firmware(self, accel: str) -> list[str]:
        return ["-bios", str(QBOOT)] if accel == "tcg" and QBOOT.is_file() else []

    def machine_arg(self, board, accel: str) -> str:
        if accel == "kvm" and board.iommu == "intel-ir":
            return board.machine + ",kernel-irqchip=split"  # interrupt remapping needs it under KVM
        return board.machine

    def iommu_devices(self, board) -> list[str]:
        return ["-device", "intel-iommu,intremap=on"] if board.iommu == "intel-ir" else []


ARCH = X86_64(
    name="x86_64",
    machines=("q35", "pc"),
    qemu="qemu-system-x86_64",
    console="ttyS0",
    kernel_arch="x86",
    cross_compile="",
    image="arch/x86/boot/bzImage",
    kconfig="x86_64-q35.config",
    debian="amd64",
    order=0,
    slot_tag="",
    accels=("kvm", "tcg"),
    snapshots=True,
    newer_qemu="qemu-system-x86",
    cmdline=("initcall_blacklist=" + ",".join(SKIPPED_INITCALLS),),
    # The driver template's data (generator/arch.py; C that differs: templates/module/driver/arch/).
    c={
        "name": "x86_64",
        "includes": ["asm/hw_irq.h", "asm/irqdomain.h"],
        # Fallback MSI parent when the device has none recorded.
        "default_parent": "x86_vector_domain",
        # The slot index travels to the domain's alloc in irq_alloc_info.
        "hwirq_expr": "((struct irq_alloc_info *)arg)->hwirq",
        # The flow: the vector domain acks an edge.
        "flow_op": "irq_ack",
        "flow_parent": "irq_chip_ack_parent",
        "flow_handler": "handle_edge_irq",
        "flow_name": "edge",
        # The parent chips need no mask / unmask from the device's chip.
        "mask_parent": None,
        # A device whose storage is its PCI MSI capability sends it by edu DMA.
        "pci_msi_by_raise": False,
        # The edu's registers: little-endian, as the emulator's native byte order.
        "edu_byte_order": "little-endian",
        "edu_read32": "readl",
        "edu_write32": "writel",
        "edu_write64": "writeq",
        "msg_writer": "kernel",
        "macros": "module/driver/arch/x86_64.c.j2",
        # An in-tree driver's Kconfig "depends on" (its parent domains' exports).
        "kconfig_depends": "X86_64 && PCI_MSI",
    },
)
