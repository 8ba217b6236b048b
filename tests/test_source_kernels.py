"""Kernels built from source: specs, the config fragment, and a real build and boot."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from msiforge import source_kernels
from msiforge.errors import SpecError
from msiforge.kspec import parse_spec


@pytest.mark.parametrize("text,series,patches", [
    ("source:6.12", (6, 12), None),
    ("source:6.1+platform-msi-group", (6, 1), "platform-msi-group"),
    ("source:6.12+pci-ims", (6, 12), "pci-ims"),
])
def test_source_specs(text, series, patches):
    s = parse_spec(text)
    assert (s.kind, (s.major, s.minor), s.patch_series) == ("source", series, patches)
    assert not s.debug


@pytest.mark.parametrize("text,patches,in_tree", [
    ("source:6.12+debug", None, False),
    ("source:6.12+pci-ims+debug", "pci-ims", False),
    ("source:7.3+pci-ims+in-tree+debug", "pci-ims", True),
])
def test_debug_specs_come_last_and_get_a_slot_of_their_own(text, patches, in_tree):
    s = parse_spec(text)
    assert (s.patch_series, s.in_tree, s.debug) == (patches, in_tree, True)
    with pytest.raises(SpecError, match=r"\[\+debug\]"):
        parse_spec("source:6.12+debug+pci-ims")
    plain, debug = source_kernels.target("source:6.12"), source_kernels.target("source:6.12+debug")
    assert debug.debug and not plain.debug and debug.slot == plain.slot + "+debug"
    assert source_kernels._key(debug, Path("/nonexistent")) != source_kernels._key(plain, Path("/nonexistent"))


def test_debug_fragment_has_the_checks():
    opts = source_kernels._fragment_options(source_kernels.debug_fragment())
    for name in ("CONFIG_PROVE_LOCKING", "CONFIG_DEBUG_ATOMIC_SLEEP", "CONFIG_PROVE_RCU", "CONFIG_DEBUG_OBJECTS",
                 "CONFIG_KASAN", "CONFIG_KASAN_GENERIC", "CONFIG_DEBUG_KMEMLEAK"):
        assert opts.get(name) == "y", name
    assert opts["CONFIG_SLUB_TINY"] == "n"  # generic KASAN needs the full SLUB


@pytest.mark.parametrize("text,path,rev", [("tree:/src/linux", "/src/linux", None),
                                           ("tree:~/linux@v6.9", "~/linux", "v6.9")])
def test_tree_specs(text, path, rev):
    s = parse_spec(text)
    assert (s.kind, s.path, s.rev) == ("tree", path, rev)


@pytest.mark.parametrize("text", ["source:6", "source:6.12+", "source:6.12+Bad", "tree:", "tree:/x@", "source:x"])
def test_bad_source_specs(text):
    with pytest.raises(SpecError):
        parse_spec(text)


def test_unsupported_source_series():
    with pytest.raises(SpecError, match=r"source:5.10: no Debian source package .*source:6.12"):
        source_kernels.pristine("5.10")


@pytest.mark.parametrize("spec,message", [
    ("source:6.1+pci-ims", "patch series 'pci-ims' does not support kernel 6.1 (use source:6.12+pci-ims, source:7.3+pci-ims)"),
    ("source:6.12+platform-msi-group", "patch series 'platform-msi-group' does not support kernel 6.12"),
    ("source:6.12+nope", "patch series 'nope': unknown"),
])
def test_unsupported_series_fails_before_fetching(spec, message, monkeypatch):
    from msiforge.errors import InputError

    monkeypatch.setattr(source_kernels, "pristine", lambda series: pytest.fail("fetched a source"))
    with pytest.raises(InputError) as exc:
        source_kernels.target(spec)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_tree_must_be_a_kernel_tree(tmp_path):
    with pytest.raises(SpecError, match="is not a kernel source tree"):
        source_kernels.target(f"tree:{tmp_path}")


def test_missing_options_names_what_was_lost():
    frag = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=8\n"
    assert source_kernels.missing_options(frag, "CONFIG_A=y\nCONFIG_C=8\n") == []
    assert source_kernels.missing_options(frag, "CONFIG_B=y\nCONFIG_C=4\n") == [
        "CONFIG_A=y (got n)", "CONFIG_B=n (got y)", "CONFIG_C=8 (got 4)"]


def test_fragment_has_what_the_board_needs():
    opts = source_kernels._fragment_options(source_kernels.config_fragment())
    for name in ("CONFIG_PCI_MSI", "CONFIG_IRQ_REMAP", "CONFIG_INTEL_IOMMU", "CONFIG_SERIAL_8250_CONSOLE",
                 "CONFIG_BLK_DEV_INITRD", "CONFIG_MODULES", "CONFIG_MODULE_UNLOAD", "CONFIG_DEBUG_FS"):
        assert opts.get(name) == "y", name


_INIT = """#!/bin/busybox sh
/bin/busybox echo msiforge-source-boot: ok
/bin/busybox poweroff -f
"""


@pytest.mark.build
@pytest.mark.vm
@pytest.mark.source_kernels("source:6.12")
def test_source_kernel_boots_with_interrupt_remapping():
    import pexpect

    from msiforge.vmtests import initramfs, qemu

    k = source_kernels.build("source:6.12")
    assert k.release.startswith("6.12.") and (k.build_dir / "Module.symvers").exists()
    with tempfile.TemporaryDirectory() as tmp:
        initrd = initramfs.build_minimal(Path(tmp) / "i.cpio", _INIT)
        argv = [qemu.qemu_binary(), "-M", "q35", "-accel", "tcg", "-smp", "2", "-m", "512M",
                "-device", "intel-iommu,intremap=on", "-nodefaults", "-no-user-config", "-display", "none",
                "-serial", "stdio", "-no-reboot", "-kernel", str(k.vmlinuz), "-initrd", str(initrd),
                "-append", "console=ttyS0 panic=-1"]
        child = pexpect.spawn(argv[0], argv[1:], encoding="utf-8", codec_errors="replace", timeout=120)
        child.expect(r"DMAR-IR: Enabled IRQ remapping in \w+ mode")
        child.expect("msiforge-source-boot: ok")
        child.expect("reboot: Power down")
        child.expect(pexpect.EOF)  # -no-reboot: QEMU exits
