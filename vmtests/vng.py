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

from .. import arches, hostprogs
from ..board import Board
from .qemu import Accel, tcg_timing


#: The kernel command line vng adds to its own (and the arch's TCG words: ``append``).
APPEND = "loglevel=5 panic=-1"


def append(arch: str, accel: str) -> str:
    """What vng's --append gets under ``accel``: the arch's TCG words (the clock probe's answer
    depends on them), not the qemu backend's speed-ups (virtme-ng boots as virtme-ng does)."""
    return " ".join([APPEND, *(arches.get(arch).tcg_cmdline if accel == "tcg" else ())])


def vng_path() -> tuple[str, dict[str, str]]:
    """The vng executable and the environment it needs (its helpers on PATH)."""
    bindir = str(Path(sys.executable).parent)
    path = bindir + os.pathsep + os.environ.get("PATH", "")
    exe = hostprogs.require("vng")
    return exe, dict(os.environ, PATH=path)


def command(board: Board, accel: Accel, kernel: Path, tree: Path,
            icount: bool = False, moddir: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """The vng argv (and environment) that runs ``tree/run.sh`` with the modules in ``moddir`` (default: ``tree``)."""
    exe, env = vng_path()
    arch = arches.get(board.arch)
    qemu_opts = ["-M", board.machine] + (tcg_timing() if accel.name != "kvm" and icount else [])
    # The same IOMMU and devices as the qemu backend's, from the same record.
    qemu_opts += arch.iommu_devices(board) + arches.device_args(board)
    argv = [exe, "--run", str(kernel), "--disable-microvm", "--verbose",
            "--cpus", str(board.cpus), "--memory", f"{board.memory_mib}M",
            "--qemu-opts", " ".join(qemu_opts), "--append", append(board.arch, accel.name),
            "--exec", f"MODDIR={shlex.quote(str(moddir or tree))} sh {shlex.quote(str(tree / 'run.sh'))}"]
    if accel.name != "kvm":
        argv.insert(3, "--disable-kvm")
    return argv, env
