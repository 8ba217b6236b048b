"""The header probes on real header text: each probe true on one kernel, false on another.

tests/data/headers/<kernel>/<path> holds verbatim excerpts of real headers
(tests/data/headers/README.md says which lines of which package): the Debian
6.1, 6.12 and 7.3 kernels and the two source kernels with an msiforge patch
series.  A probe is a regular expression on one header (features.PROBES), so
its verdict on an excerpt is its verdict on the whole header.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from msiforge.generator import features

DATA = Path(__file__).parent / "data" / "headers"

#: kernel -> the probes its headers declare (every other probe: absent).
DECLARED = {
    "6.1.0-56": set(),
    "6.12.117+deb12": {"msi_parent", "irq_domain_instantiate", "kzalloc_obj"},
    "7.3.4+deb13": {"msi_parent", "irqchip_move_deferred", "irq_domain_instantiate", "msi_teardown",
                    "kzalloc_obj", "msi_msg_set_addr"},
    "6.12.117+pci-ims": {"msi_parent", "pci_ims", "irq_domain_instantiate", "kzalloc_obj"},
    "6.1.192+platform-msi-group": {"platform_msi_group"},
    # Only the headers the series adds or a probe needs (the rest are 6.12's, above).
    "6.12.118+vfio-platform-msi": {"msi_parent", "irq_domain_instantiate", "vfio_platform_msi"},
}

#: probe -> (a kernel that declares it, one that does not): the drift each probe follows.
CONTRASTS = {
    "msi_parent": ("6.12.117+deb12", "6.1.0-56"),
    "pci_ims": ("6.12.117+pci-ims", "6.12.117+deb12"),
    "platform_msi_group": ("6.1.192+platform-msi-group", "6.1.0-56"),
    "irqchip_move_deferred": ("7.3.4+deb13", "6.12.117+deb12"),
    "irq_domain_instantiate": ("7.3.4+deb13", "6.1.0-56"),
    "msi_teardown": ("7.3.4+deb13", "6.12.117+deb12"),
    "kzalloc_obj": ("7.3.4+deb13", "6.1.0-56"),
    "msi_msg_set_addr": ("7.3.4+deb13", "6.12.117+deb12"),
    "vfio_platform_msi": ("6.12.118+vfio-platform-msi", "6.12.117+deb12"),
}


#: Probes of a header that a patch series adds (the kernels without it have no such file).
NEW_HEADERS = {"vfio_platform_msi"}


def _probe(kernel: str) -> features.Features:
    return features.probe([DATA / kernel])


def test_every_probe_has_a_contrast_and_every_feature_a_probe():
    assert set(CONTRASTS) == set(features.PROBES)
    assert set(features.Features.__dataclass_fields__) == set(features.PROBES)
    assert sorted(p.name for p in DATA.iterdir() if p.is_dir()) == sorted(DECLARED)


@pytest.mark.parametrize("kernel", sorted(DECLARED))
def test_probe_of_each_kernel(kernel):
    """What each kernel's header text declares, probe by probe."""
    got = _probe(kernel).to_json()
    assert {name for name, on in got.items() if on} == DECLARED[kernel]


@pytest.mark.parametrize("name", sorted(CONTRASTS))
def test_probe_true_on_one_kernel_false_on_another(name):
    """Each probe reads its header: present in one kernel's text, absent from the other's."""
    have, lack = CONTRASTS[name]
    header, _ = features.PROBES[name]
    assert (DATA / have / header).is_file()
    # The other kernel's header is excerpted too, unless it has none (a header a series adds).
    assert (DATA / lack / header).is_file() or name in NEW_HEADERS
    assert getattr(_probe(have), name) is True
    assert getattr(_probe(lack), name) is False


def test_irqchip_move_deferred_replaced_irq_move_pcntxt():
    """7.x: the per-interrupt IRQ_MOVE_PCNTXT is gone; a chip sets IRQCHIP_MOVE_DEFERRED instead."""
    old = (DATA / "6.12.117+deb12" / "include/linux/irq.h").read_text()
    new = (DATA / "7.3.4+deb13" / "include/linux/irq.h").read_text()
    assert "IRQCHIP_MOVE_DEFERRED" not in old
    assert re.search(r"IRQCHIP_MOVE_DEFERRED:\s+Move the interrupt in actual interrupt context", new)


def test_irq_domain_create_hierarchy_is_an_inline_over_instantiate_on_7_3():
    """6.12 exports irq_domain_create_hierarchy; 7.3 makes it an inline that calls irq_domain_instantiate."""
    old = (DATA / "6.12.117+deb12" / "include/linux/irqdomain.h").read_text()
    new = (DATA / "7.3.4+deb13" / "include/linux/irqdomain.h").read_text()
    assert "extern struct irq_domain *irq_domain_create_hierarchy(" in old
    inline = new[new.index("static inline struct irq_domain *irq_domain_create_hierarchy("):]
    assert "irq_domain_instantiate(&info)" in inline and "IS_ERR(d) ? NULL : d" in inline


def test_msi_teardown_replaced_msi_post_free():
    """The msi_domain_ops hook after the last free: msi_post_free (6.12), msi_teardown (7.3)."""
    old = (DATA / "6.12.117+deb12" / "include/linux/msi.h").read_text()
    new = (DATA / "7.3.4+deb13" / "include/linux/msi.h").read_text()
    assert "(*msi_post_free)" in old and "msi_teardown" not in old
    assert "(*msi_teardown)" in new and "msi_post_free" not in new


def test_kzalloc_obj_is_a_backport_on_6_12():
    """Declarations, not versions: Debian's 6.12.117 carries the 7.x typed allocators."""
    assert _probe("6.12.117+deb12").kzalloc_obj and not _probe("6.1.0-56").kzalloc_obj


def test_msi_msg_set_addr_reads_the_msi_desc_on_7_3():
    """7.3's helper takes the msi_desc (the ITS passes the interrupt's own); 6.12 composes without it."""
    new = (DATA / "7.3.4+deb13" / "include/linux/msi.h").read_text()
    assert "msi_msg_set_addr(struct msi_desc *desc, struct msi_msg *msg," in new
    assert "msi_msg_set_addr" not in (DATA / "6.12.117+deb12" / "include/linux/msi.h").read_text()


def test_a_header_missing_from_the_tree_reads_as_absent(tmp_path):
    inc = tmp_path / "include" / "linux"
    inc.mkdir(parents=True)
    (inc / "irqdomain.h").write_text((DATA / "7.3.4+deb13" / "include/linux/irqdomain.h").read_text())
    got = features.probe([tmp_path])
    assert got.msi_parent and got.irq_domain_instantiate
    assert not (got.irqchip_move_deferred or got.msi_teardown or got.kzalloc_obj)
