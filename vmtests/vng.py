"""The virtme-ng backend: the same guest script, booted by ``vng`` instead of our own initramfs.

virtme-ng boots the kernel with the host's root filesystem (read-only
overlay), so the guest script and the modules are used in place.  With
Debian kernels vng cannot find its script I/O ports (virtio_console is a
module there) and falls back to the serial console, which is silent unless
``--verbose``: the console is driven with pexpect exactly like our own boots.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from .. import hostprogs
from ..board import Board
from .qemu import Accel, tcg_timing


def vng_path() -> tuple[str, dict[str, str]]:
    """The vng executable and the environment it needs (its helpers on PATH)."""
    bindir = str(Path(sys.executable).parent)
    path = bindir + os.pathsep + os.environ.get("PATH", "")
    exe = hostprogs.require("vng")
    return exe, dict(os.environ, PATH=path)


def command(board: Board, accel: Accel, kernel: Path, tree: Path,
            icount: bool = False) -> tuple[list[str], dict[str, str]]:
    """The vng argv (and environment) that runs ``tree/run.sh`` with the modules built in ``tree``."""
    exe, env = vng_path()
    qemu_opts = ["-M", board.machine] + (tcg_timing() if accel.name != "kvm" and icount else [])
    if board.iommu == "intel-ir":
        qemu_opts += ["-device", "intel-iommu,intremap=on"]
    for dev in board.devices:
        qemu_opts += ["-device", f"edu,dma_mask=0xffffffff,addr={dev.pci_slot:#04x}"]
    argv = [exe, "--run", str(kernel), "--disable-microvm", "--verbose",
            "--cpus", str(board.cpus), "--memory", f"{board.memory_mib}M",
            "--qemu-opts", " ".join(qemu_opts), "--append", "loglevel=5 panic=-1",
            "--exec", f"MODDIR={shlex.quote(str(tree))} sh {shlex.quote(str(tree / 'run.sh'))}"]
    if accel.name != "kvm":
        argv.insert(3, "--disable-kvm")
    return argv, env
