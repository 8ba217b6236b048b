"""The kernel image an x86 guest boots: the bzImage, or its uncompressed vmlinux by PVH.

Under TCG a bzImage's decompressor is slow: it inflates a ~57 MB kernel
(Debian's are zstd- or xz-compressed) instruction by instruction before the
kernel proper starts.  A kernel built with CONFIG_PVH carries a 32-bit entry
point in an ELF note (XEN_ELFNOTE_PHYS32_ENTRY) that QEMU's ``-kernel``
boots directly, through its pvh.bin option ROM, from the uncompressed ELF.
So msiforge takes the vmlinux out of the bzImage once (cached, addressed by
the bzImage's SHA-256) and boots that when the kernel has the note and a
probe boot of it reached init (also cached).

Measured on the default board and Debian 6.12 under TCG (README, Performance):
the kernel's first line comes after 0.2 s instead of 1.0 s, and the whole
boot to init costs ~1.4 s less QEMU CPU time.  A PVH-booted kernel runs at its
link address (no KASLR), which a test guest does not need.
"""

from __future__ import annotations

import bz2
import hashlib
import json
import lzma
import struct
import subprocess
import zlib
from pathlib import Path

from .. import hostprogs

#: ELF note (owner "Xen") holding the 32-bit PVH entry point.
XEN_ELFNOTE_PHYS32_ENTRY = 18

#: Magic bytes of the compressed payload formats a bzImage may carry.
_FORMATS = [
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
    (b"\x5d\x00\x00", "lzma"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x89LZO", "lzo"),
]
#: Formats Python cannot read itself: the command that decompresses them to stdout.
_TOOLS = {"zstd": ["zstd", "-dcq"], "lz4": ["lz4", "-dcq"], "lzo": ["lzop", "-dcq"]}


class NotExtractable(Exception):
    """The image has no vmlinux this module can take out (the reason is the message)."""


def payload(bzimage: bytes) -> tuple[str, bytes]:
    """The compression format and the compressed kernel of a bzImage (boot protocol >= 2.08)."""
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != b"HdrS":
        raise NotExtractable("not a bzImage (no HdrS setup header)")
    version = struct.unpack_from("<H", bzimage, 0x206)[0]
    if version < 0x208:
        raise NotExtractable(f"boot protocol {version >> 8}.{version & 0xff:02d} has no payload fields")
    setup_sects = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + offset
    data = bzimage[start:start + length]
    if len(data) != length or not length:
        raise NotExtractable("payload outside the image")
    for magic, name in _FORMATS:
        if data.startswith(magic):
            return name, data
    raise NotExtractable(f"unknown payload compression (magic {data[:4].hex()})")


def decompress(fmt: str, data: bytes) -> bytes:
    """Decompress a bzImage payload; trailing bytes (Kbuild appends the size) are ignored."""
    try:
        if fmt == "gzip":
            return zlib.decompressobj(31).decompress(data)
        if fmt == "xz":
            return lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(data)
        if fmt == "lzma":
            return lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(data)
        if fmt == "bzip2":
            return bz2.BZ2Decompressor().decompress(data)
    except (zlib.error, lzma.LZMAError, OSError) as exc:
        raise NotExtractable(f"{fmt} payload: {exc}") from exc
    tool = _TOOLS[fmt]
    if not hostprogs.optional(tool[0]):
        raise NotExtractable(f"{fmt} payload and no {tool[0]} command to decompress it")
    # The kernel's size word after the frame makes the tools complain; without it they do not.
    for chunk in (data, data[:-4]):
        proc = subprocess.run(tool, input=chunk, capture_output=True)
        if proc.returncode == 0:
            return proc.stdout
    raise NotExtractable(f"{tool[0]} failed: {proc.stderr.decode(errors='replace').strip()[-200:]}")


def _elf64_phdrs(elf: bytes):
    if len(elf) < 64 or elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise NotExtractable("the payload is not a little-endian ELF64 file")
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        base = phoff + i * phentsize
        if base + 56 > len(elf):
            raise NotExtractable("truncated ELF program headers")
        p_type, _flags, p_offset = struct.unpack_from("<IIQ", elf, base)
        p_filesz, = struct.unpack_from("<Q", elf, base + 0x20)
        yield p_type, p_offset, p_filesz


def has_pvh_entry(elf: bytes) -> bool:
    """Whether an ELF64 kernel has a Xen PHYS32_ENTRY note (CONFIG_PVH)."""
    for p_type, off, size in _elf64_phdrs(elf):
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = off, min(off + size, len(elf))
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def elf_size(elf: bytes) -> int:
    """Where the ELF file ends (segments and section headers); what follows is the relocation table."""
    end = 0
    for _type, off, size in _elf64_phdrs(elf):
        end = max(end, off + size)
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", elf, 0x3A)
    return min(len(elf), max(end, shoff + shentsize * shnum))


def extract_pvh_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed, PVH-bootable vmlinux inside ``bzimage`` (raises NotExtractable)."""
    fmt, data = payload(bzimage)
    elf = decompress(fmt, data)
    if not has_pvh_entry(elf):
        raise NotExtractable("no PVH entry note (kernel built without CONFIG_PVH)")
    return elf[:elf_size(elf)]


def pvh_vmlinux(image: Path, cache_dir: Path) -> tuple[Path | None, str]:
    """The cached PVH vmlinux of the bzImage ``image``, or (None, why not).

    Entries are addressed by the SHA-256 of the bzImage; a kernel that has no
    PVH vmlinux is remembered too, so it is looked at once.
    """
    from ..cache import atomic_write, locked

    data = image.read_bytes()
    if data[:4] == b"\x7fELF":  # already an ELF kernel: QEMU boots it by PVH or not at all
        return (image, "ELF kernel") if has_pvh_entry(data) else (None, "ELF kernel without a PVH note")
    digest = hashlib.sha256(data).hexdigest()[:24]
    elf, no = cache_dir / f"{digest}.elf", cache_dir / f"{digest}.none.json"
    with locked(cache_dir / f"{digest}.lock"):
        if elf.exists():
            return elf, "uncompressed vmlinux"
        if no.exists():
            return None, json.loads(no.read_text())["why"]
        try:
            atomic_write(elf, extract_pvh_vmlinux(data))
        except NotExtractable as exc:
            atomic_write(no, json.dumps({"why": str(exc)}) + "\n")
            return None, str(exc)
    return elf, "uncompressed vmlinux"
