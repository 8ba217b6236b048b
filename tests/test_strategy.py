"""Driver strategy per kernel: chosen from the kernel's headers and the series it was built with."""

from __future__ import annotations

import pytest

from msiforge.generator import features
from msiforge.generator.features import Features

STOCK_612 = Features(msi_parent=True, pci_ims=False, platform_msi_group=False)
PCI_IMS_612 = Features(msi_parent=True, pci_ims=True, platform_msi_group=False)
GROUPS_61 = Features(msi_parent=False, pci_ims=False, platform_msi_group=True)


@pytest.mark.parametrize("storage,feats,series,iommu,want", [
    ("ims", STOCK_612, None, "intel-ir", ("module-local", "module-local")),
    ("ims", PCI_IMS_612, "pci-ims", "intel-ir", ("patched", "pci-ims")),
    # The same API in a kernel msiforge did not patch (6.2..6.9, or a user's tree) is native.
    ("ims", PCI_IMS_612, None, "intel-ir", ("native", "pci-ims")),
    # Only the remapping domain advertises IMS: without it the module keeps its own domain.
    ("ims", PCI_IMS_612, "pci-ims", "none", ("module-local", "module-local")),
    ("platform-msi", PCI_IMS_612, "pci-ims", "intel-ir", ("module-local", "module-local")),
    ("platform-msi", GROUPS_61, "platform-msi-group", "intel-ir", ("patched", "platform-msi-group")),
    ("platform-msi", GROUPS_61, "platform-msi-group", "none", ("patched", "platform-msi-group")),
    ("ims", GROUPS_61, "platform-msi-group", "intel-ir", ("module-local", "module-local")),
    ("pci-msi", GROUPS_61, None, "intel-ir", ("native", "pci-msi")),
])
def test_strategy(storage, feats, series, iommu, want):
    s = features.strategy(storage, feats, series, iommu)
    assert (s.name, s.api) == want
    assert s.why


def test_probe_reads_headers(tmp_path):
    """The probe looks at declarations, not at version numbers."""
    inc = tmp_path / "include" / "linux"
    inc.mkdir(parents=True)
    (inc / "irqdomain.h").write_text("#define IRQ_DOMAIN_FLAG_MSI_PARENT (1 << 8)\n")
    (inc / "pci.h").write_text("bool pci_create_ims_domain(struct pci_dev *pdev, const void *t,\n"
                               "                           unsigned int hwsize, void *data);\n")
    (inc / "msi.h").write_text("/* platform_msi_domain_alloc_irqs_group is not here */\n")
    assert features.probe([tmp_path]) == Features(msi_parent=True, pci_ims=True, platform_msi_group=False)


def test_every_api_is_one_backend_row_and_one_backend_file():
    """The driver of an API is its BACKENDS row and backends/<api>.c.j2, which extends the base.

    The shared driver templates test traits and arch data, never the API or
    the architecture by name; each arch names its macro file.
    """
    import itertools
    import re
    from importlib import resources
    from pathlib import Path

    from msiforge.generator import render
    from msiforge.generator.arch import ARCHES

    chosen = {features.strategy(storage, Features(*f), series, iommu).api
              for storage in ("ims", "platform-msi", "pci-msi")
              for f in itertools.product([False, True], repeat=3)
              for series in (None, "pci-ims", "platform-msi-group")
              for iommu in ("intel-ir", "none")}
    assert chosen == set(features.BACKENDS)
    root = Path(str(resources.files("msiforge.templates")))
    for backend in features.BACKENDS.values():
        assert f'{{% extends "{render.DRIVER_BASE}" %}}' in (root / backend.template).read_text()
    for arch in ARCHES.values():
        assert (root / arch["macros"]).is_file()
    for template in (root / "module" / "driver").rglob("*.j2"):
        assert not re.search(r"\bapi\s*(==|!=|in\b|not\s+in\b)|arch\.name\b", template.read_text()), template
