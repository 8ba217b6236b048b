"""A kernel's own modules that msiforge's guest loads at init, found in the kernel's image package.

Debian's 6.1 kernels build the virtio-serial port's drivers (virtio_pci,
virtio_console) as modules; a guest of such a kernel loads them, with what
they depend on, before anything else (vmtests/initramfs.py), so its warm
payload can cross a virtio-serial port as on kernels that build them in.

Dependencies come from each module's ``.modinfo`` section (``depends=``),
read from the ELF file itself: the package's ``modules.dep`` is made by
depmod at install time and is not in the package.
"""

from __future__ import annotations

import struct
from pathlib import Path


class Missing(Exception):
    """A module, or one it depends on, is not there as a loadable file (one line)."""


def modinfo(ko: Path) -> dict[str, str]:
    """The ``key=value`` strings of a module's ``.modinfo`` section (the first of each key)."""
    data = ko.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise Missing(f"{ko.name} is not a 64-bit ELF module")
    end = "<" if data[5] == 1 else ">"
    shoff, = struct.unpack_from(end + "Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _, _, _, off, size = struct.unpack_from(end + "IIQQQQ", data, shoff + i * shentsize)
        return name, off, size

    _, stroff, _ = section(shstrndx)
    for i in range(shnum):
        name, off, size = section(i)
        if data[stroff + name:data.index(b"\0", stroff + name)] == b".modinfo":
            info: dict[str, str] = {}
            for item in data[off:off + size].split(b"\0"):
                key, sep, value = item.decode(errors="replace").partition("=")
                if sep:
                    info.setdefault(key, value)
            return info
    raise Missing(f"{ko.name} has no .modinfo section")


def load_order(modules_dir: Path, names: list[str]) -> list[Path]:
    """The files of ``names`` and of every module they depend on, each after its dependencies.

    Only uncompressed ``.ko`` files count: busybox's insmod loads those.
    """
    files: dict[str, Path] = {}
    for ko in (modules_dir / "kernel").rglob("*.ko"):
        files.setdefault(ko.stem.replace("-", "_"), ko)
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        if name in chain:
            raise Missing(f"modules depend on each other in a cycle: {' -> '.join(chain + (name,))}")
        ko = files.get(name)
        if ko is None:
            what = f"{name}.ko" + (f" (needed by {chain[-1]})" if chain else "")
            raise Missing(f"no {what} under {modules_dir}/kernel")
        for dep in filter(None, modinfo(ko).get("depends", "").split(",")):
            visit(dep, chain + (name,))
        seen.add(name)
        order.append(ko)

    for n in names:
        visit(n, ())
    return order
