"""The PVH boot image: the vmlinux taken out of a bzImage, its cache, and the probe."""

from __future__ import annotations

import gzip
import lzma
import shutil
import struct

import pytest

from msiforge import arches
from msiforge.arches import x86_64
from msiforge.vmtests import bootimage, qemu


def _elf(pvh: bool, tail: bytes = b"") -> bytes:
    """A minimal ELF64 kernel: one PT_LOAD, one PT_NOTE (Xen notes), then ``tail`` (the relocations)."""
    notes = b""
    for ntype in ([6, bootimage.XEN_ELFNOTE_PHYS32_ENTRY] if pvh else [6]):
        desc = struct.pack("<I", 0x1000000)
        notes += struct.pack("<III", 4, len(desc), ntype) + b"Xen\0" + desc
    body_off = 64 + 2 * 56
    text = b"\x90" * 64
    hdr = bytearray(64)
    hdr[:16] = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    struct.pack_into("<HHIQQQIHHHHHH", hdr, 16, 2, 0x3E, 1, 0x1000000, 64, 0, 0, 64, 56, 2, 64, 0, 0)
    load = struct.pack("<IIQQQQQQ", 1, 5, body_off, 0x1000000, 0x1000000, len(text), len(text), 0x200000)
    note = struct.pack("<IIQQQQQQ", 4, 4, body_off + len(text), 0, 0, len(notes), len(notes), 4)
    return bytes(hdr) + load + note + text + notes + tail


def _bzimage(payload: bytes, setup_sects: int = 3, version: int = 0x20F) -> bytes:
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    prefix = b"decompressor stub" * 10
    struct.pack_into("<II", setup, 0x248, len(prefix), len(payload))
    return bytes(setup) + prefix + payload + b"trailing setup data"


def _with_size(data: bytes, size: int) -> bytes:
    return data + struct.pack("<I", size)  # what Kbuild's size_append adds after the stream


RELOCS = b"\x11\x22\x33\x44" * 8


@pytest.mark.parametrize("fmt", ["gzip", "xz", "lzma", "zstd"])
def test_extract_each_compression(fmt):
    elf = _elf(pvh=True, tail=RELOCS)
    if fmt == "gzip":
        packed = gzip.compress(elf)
    elif fmt == "xz":
        packed = _with_size(lzma.compress(elf, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32), len(elf))
    elif fmt == "lzma":
        packed = _with_size(lzma.compress(elf, format=lzma.FORMAT_ALONE), len(elf))
    else:
        import subprocess  # zstd is a registered host program: make deps installs it

        packed = _with_size(subprocess.run(["zstd", "-q", "-c"], input=elf, capture_output=True,
                                           check=True).stdout, len(elf))
    out = bootimage.extract_pvh_vmlinux(_bzimage(packed))
    assert out == elf[:-len(RELOCS)]  # the ELF, without the relocation table after it
    assert bootimage.has_pvh_entry(out)


def test_kernel_without_pvh_note_is_refused():
    with pytest.raises(bootimage.NotExtractable, match="CONFIG_PVH"):
        bootimage.extract_pvh_vmlinux(_bzimage(gzip.compress(_elf(pvh=False))))


@pytest.mark.parametrize("image,why", [
    (b"MZ" + b"\0" * 4096, "not a bzImage"),
    (_bzimage(gzip.compress(_elf(True)), version=0x206), "no payload fields"),
    (_bzimage(b"\x00\x01\x02\x03 not compressed"), "unknown payload compression"),
    (_bzimage(gzip.compress(b"not an ELF file at all" * 4)), "not a little-endian ELF64"),
    (_bzimage(b"\x1f\x8b garbage"), "gzip payload"),
])
def test_bad_images(image, why):
    with pytest.raises(bootimage.NotExtractable, match=why):
        bootimage.extract_pvh_vmlinux(image)


def test_pvh_vmlinux_is_cached_by_content(tmp_path, monkeypatch):
    calls = []
    real = bootimage.extract_pvh_vmlinux
    monkeypatch.setattr(bootimage, "extract_pvh_vmlinux", lambda data: calls.append(1) or real(data))
    img = tmp_path / "vmlinuz"
    img.write_bytes(_bzimage(gzip.compress(_elf(True, RELOCS))))
    cache = tmp_path / "cache"
    first, how = bootimage.pvh_vmlinux(img, cache)
    assert first is not None and first.parent == cache and how == "uncompressed vmlinux"
    assert first.read_bytes() == _elf(True)
    copy = tmp_path / "elsewhere"
    shutil.copy(img, copy)  # same content, other path: same entry, not extracted again
    assert bootimage.pvh_vmlinux(copy, cache)[0] == first
    assert len(calls) == 1


def test_no_pvh_answer_is_cached_too(tmp_path, monkeypatch):
    img = tmp_path / "vmlinuz"
    img.write_bytes(_bzimage(gzip.compress(_elf(False))))
    assert bootimage.pvh_vmlinux(img, tmp_path / "c") == (None, "no PVH entry note (kernel built without CONFIG_PVH)")
    monkeypatch.setattr(bootimage, "extract_pvh_vmlinux", lambda data: pytest.fail("extracted again"))
    assert bootimage.pvh_vmlinux(img, tmp_path / "c")[0] is None


def test_elf_kernel_is_used_as_it_is(tmp_path):
    elf = tmp_path / "vmlinux"
    elf.write_bytes(_elf(True))
    assert bootimage.pvh_vmlinux(elf, tmp_path / "c") == (elf, "ELF kernel")
    elf.write_bytes(_elf(False))
    assert bootimage.pvh_vmlinux(elf, tmp_path / "c")[0] is None


def test_boot_image_under_kvm_is_the_kernel_itself(tmp_path):
    img = tmp_path / "vmlinuz"
    img.write_bytes(b"not even looked at")
    assert qemu.boot_image(img, qemu.Accel("kvm", "t"), False, tmp_path) == (img, "bzImage")
    assert arches.get("x86_64").firmware("kvm") == []


def test_boot_image_falls_back_when_the_probe_fails(tmp_path, monkeypatch):
    img = tmp_path / "vmlinuz"
    img.write_bytes(_bzimage(gzip.compress(_elf(True))))
    monkeypatch.setattr(qemu, "probe_pvh",
                        lambda vmlinux, cache, icount, binary=None: (False, "PVH probe: init not reached"))
    image, how = qemu.boot_image(img, qemu.Accel("tcg", "t"), True, tmp_path)
    assert image == img and how == "bzImage: PVH probe: init not reached"
    monkeypatch.setattr(qemu, "probe_pvh", lambda vmlinux, cache, icount, binary=None: (True, "ok"))
    image, how = qemu.boot_image(img, qemu.Accel("tcg", "t"), True, tmp_path)
    assert image.suffix == ".elf" and how == "PVH"


@pytest.mark.vm
@pytest.mark.parametrize("spec", ["debian:6.1.0-56", "debian:6.12.117+deb12"])
def test_debian_kernels_boot_by_pvh(spec, fetched_kernels, tmp_path):
    """Debian's xz (6.1) and zstd (6.12) kernels yield a vmlinux that reaches init by PVH."""
    k = fetched_kernels[spec]
    vmlinux, how = bootimage.pvh_vmlinux(k.vmlinuz, tmp_path / "vmlinux")
    assert vmlinux is not None, how
    data = vmlinux.read_bytes()
    assert bootimage.has_pvh_entry(data) and len(data) > 4 * k.vmlinuz.stat().st_size
    ok, why = qemu.probe_pvh(vmlinux, tmp_path / "probes", icount=False)
    assert ok, why


def test_x86_cmdline_skips_the_slow_initcalls_only_on_x86():
    x86 = qemu.kernel_cmdline(None, "x86_64").split()
    assert "initcall_blacklist=" + ",".join(x86_64.SKIPPED_INITCALLS) in x86
    assert x86[:3] == ["console=ttyS0", "loglevel=5", "panic=-1"]
    assert not any(p.startswith("initcall_blacklist") for p in qemu.kernel_cmdline(None, "arm64").split())
