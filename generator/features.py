"""Probe a kernel's headers for the interrupt APIs a generated driver may use.

Strategies are chosen from what the headers declare, never from version
numbers: a distribution kernel may carry backports, a patched tree may add
an API early.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

# feature -> (header relative to the tree, regular expression that proves it)
PROBES: dict[str, tuple[str, str]] = {
    # 6.2+: per-device MSI domains; the device points at its MSI parent.
    "msi_parent": ("include/linux/irqdomain.h", r"\bIRQ_DOMAIN_FLAG_MSI_PARENT\b"),
    # 6.2..6.9 (or a patched kernel): PCI/IMS.
    "pci_ims": ("include/linux/pci.h", r"\bpci_create_ims_domain\s*\("),
    # Seed 001 (patched kernel): platform-MSI group allocation.
    "platform_msi_group": ("include/linux/msi.h", r"\bplatform_msi_domain_alloc_irqs_group\s*\("),
    # 7.x: IRQ_MOVE_PCNTXT is gone and the default flipped: an interrupt moves in
    # process context unless its top-level chip sets IRQCHIP_MOVE_DEFERRED.
    "irqchip_move_deferred": ("include/linux/irq.h", r"\bIRQCHIP_MOVE_DEFERRED\s*="),
    # Domains made from a struct irq_domain_info (6.12 and 7.x, not 6.1):
    # irq_domain_create_hierarchy is a wrapper over it that turns the error into
    # NULL (exported in 6.12, an inline in 7.x).
    "irq_domain_instantiate": ("include/linux/irqdomain.h",
                               r"\bstruct irq_domain \*irq_domain_instantiate\s*\(\s*const struct irq_domain_info\b"),
    # 7.x: msi_domain_ops.msi_teardown reverses msi_prepare (it replaced msi_post_free);
    # the GICv3 ITS frees its device there, no longer with the device's last event.
    "msi_teardown": ("include/linux/msi.h", r"\(\s*\*\s*msi_teardown\s*\)\s*\(\s*struct irq_domain\b"),
    # 7.x: an MSI parent composes the message through the interrupt's msi_desc
    # (msi_msg_set_addr reads its IOMMU IOVA fields): the GICv3 ITS dereferences
    # it, so an interrupt of a module-local domain needs one.
    "msi_msg_set_addr": ("include/linux/msi.h", r"\bstatic inline void msi_msg_set_addr\s*\(\s*struct msi_desc \*desc"),
    # Typed allocators (7.x, backported to 6.12.y): 7.x checkpatch prefers
    # kzalloc_obj(*p) over kzalloc(sizeof(*p), ...).
    "kzalloc_obj": ("include/linux/slab.h", r"#\s*define\s+kzalloc_obj\s*\("),
    # The vfio-platform-msi series: device-specific MSI handlers for vfio-platform.
    "vfio_platform_msi": ("include/linux/vfio_platform.h", r"\bvfio_platform_register_msi\s*\("),
}


@dataclass(frozen=True)
class Features:
    """What one kernel's headers provide."""

    msi_parent: bool
    pci_ims: bool
    platform_msi_group: bool
    # Later probes default to absent, so a Features made by hand for an older kernel still reads right.
    irqchip_move_deferred: bool = False
    irq_domain_instantiate: bool = False
    msi_teardown: bool = False
    kzalloc_obj: bool = False
    msi_msg_set_addr: bool = False
    vfio_platform_msi: bool = False

    def to_json(self) -> dict:
        return asdict(self)


def _find(header_dirs: list[Path], rel: str) -> Path | None:
    for d in header_dirs:
        p = d / rel
        if p.is_file():
            return p
    return None


def probe(header_dirs: list[Path]) -> Features:
    """Probe the given header trees (first match wins for each header)."""
    def read(rel: str) -> str | None:
        path = _find(header_dirs, rel)
        return path.read_text(errors="replace") if path else None

    return probe_with(read, ", ".join(map(str, header_dirs)))


def probe_with(read, where: str) -> Features:
    """Probe headers that ``read(relative path)`` returns (None: no such file), e.g. from a git commit."""
    found = {}
    for name, (rel, pattern) in PROBES.items():
        text = read(rel)
        found[name] = bool(text and re.search(pattern, text))
    if read("include/linux/irqdomain.h") is None:
        raise FileNotFoundError(f"no include/linux/irqdomain.h under {where}")
    return Features(**found)


@dataclass(frozen=True)
class Strategy:
    """How a generated driver gets its interrupts on one kernel.

    ``name`` is what DESIGN calls it: ``native`` (the kernel has the API),
    ``patched`` (an msiforge patch series added it) or ``module-local`` (the
    module stacks its own domain on an exported parent).  ``api`` is the
    interface the driver code uses; ``why`` says why it was chosen.
    """

    name: str
    api: str  # module-local | pci-ims | platform-msi-group | pci-msi
    why: str


@dataclass(frozen=True)
class Backend:
    """What the driver template needs to know of one API: its backend and its traits.

    Each API has a backend template, ``templates/module/driver/backends/<api>.c.j2``,
    which extends the driver's base (``module/driver/base.c.j2``) and fills its
    blocks.  The traits are the facts the shared parts of the driver (the
    msi_storage ops, the edu and debugfs test harness) depend on.  A new API
    is one backend file and one row of BACKENDS.
    """

    api: str
    #: The messages live in the device's own storage (else in its PCI MSI capability).
    stored: bool
    #: The edu's own PCI MSI vector is free to signal DMA completion (else the DMA is polled).
    dma_msi: bool
    #: The msi_storage ops are irq_chip callbacks (else platform_msi_ops).
    chip_ops: bool
    #: The driver creates its interrupt domain itself (debugfs names it and its parent).
    own_domain: bool
    #: The core allocates a group of slots at once and names it (debugfs shows the id).
    group_ids: bool

    @property
    def template(self) -> str:
        return f"module/driver/backends/{self.api}.c.j2"


#: API -> its backend, for every API ``strategy`` may choose.
BACKENDS: dict[str, Backend] = {b.api: b for b in [
    Backend("module-local", stored=True, dma_msi=True, chip_ops=True, own_domain=True, group_ids=False),
    Backend("pci-ims", stored=True, dma_msi=True, chip_ops=True, own_domain=False, group_ids=False),
    Backend("platform-msi-group", stored=True, dma_msi=False, chip_ops=False, own_domain=False, group_ids=True),
    Backend("pci-msi", stored=False, dma_msi=False, chip_ops=False, own_domain=False, group_ids=False),
]}


#: storage kind -> (feature, API, the patch series that adds it)
_APIS = {
    "ims": ("pci_ims", "pci-ims", "pci-ims"),
    "platform-msi": ("platform_msi_group", "platform-msi-group", "platform-msi-group"),
}


def strategy(storage: str, features: Features, patch_series: str | None = None,
             iommu: str = "intel-ir") -> Strategy:
    """The driver strategy for a device's ``storage`` on a kernel with ``features``.

    ``patch_series`` is the msiforge series the kernel was built with (if
    any): an API it provides is ``patched``, one the kernel had anyway is
    ``native``.  PCI/IMS needs an MSI parent that supports IMS, which only
    the interrupt-remapping domain advertises, so boards without an IOMMU
    keep the module-local domain.
    """
    if storage == "pci-msi":
        return Strategy("native", "pci-msi", "the device's storage is its PCI MSI capability")
    feature, api, series = _APIS[storage]
    if not getattr(features, feature):
        return Strategy("module-local", "module-local",
                        f"the kernel's headers declare no {api} API")
    if api == "pci-ims" and iommu != "intel-ir":
        return Strategy("module-local", "module-local",
                        "PCI/IMS needs the interrupt-remapping MSI parent (board iommu: none)")
    if patch_series == series:
        return Strategy("patched", api, f"the {series} patch series adds the {api} API")
    return Strategy("native", api, f"the kernel's headers declare the {api} API")
