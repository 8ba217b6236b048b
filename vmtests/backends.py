"""Boot backends: one interface for booting a kernel with a board's devices and the guest script.

``qemu`` boots QEMU directly with msiforge's own minimal initramfs (busybox,
the stripped modules, the script); ``vng`` boots through virtme-ng with the
host's root filesystem and runs the script in place.  Both take the board's
QEMU devices from the same place (its arch record, msiforge/arches) and
their consoles are driven the same way (vmtests/console.py).

A backend answers, at plan time, what ``-kernel`` gets and the kernel
command line; at boot time, the command (and environment) to run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .. import arches
from ..errors import InputError


class Backend:
    """What every backend provides."""

    name = ""
    #: Injected guest faults (--guest-fault) need msiforge's own init.
    faults = False
    #: Arches whose guests it can boot.
    arches: tuple[str, ...] = ()

    def check(self, board, fault: str | None) -> None:
        """InputError (one line) when this backend cannot run ``board`` (with ``fault``)."""
        if fault and not self.faults:
            raise InputError("--guest-fault needs the qemu backend (it is injected by msiforge's own init)")
        if self.arches and board.arch not in self.arches:
            raise InputError(f"--backend {self.name}: board {board.name} is {board.arch}; only the qemu "
                             "backend boots foreign-arch guests")

    def check_kernel(self, spec: str, kernel) -> None:
        """InputError (one line) when this backend cannot boot the Debian kernel ``kernel`` (a DebianKernel)."""

    #: Whether its boots can run on a QEMU other than the host's (vmtests/newer_qemu.py).
    newer_qemu = False

    def image(self, board, kernel, accel, icount: bool, cache: Path, binary: str | None = None) -> tuple[Path, str]:
        """What the guest boots, and how (cached probes; ``binary``: the QEMU, None for the host's)."""
        return kernel.vmlinuz, "the kernel's image"

    def cmdline(self, board, fault: str | None, accel) -> str:
        """The kernel command line of a boot of ``board`` under ``accel`` (a qemu.Accel)."""
        raise NotImplementedError

    def command(self, board, boot, tree: Path, kdir: Path, modules: list[Path]) -> tuple[list[str], dict | None]:
        """The argv (and environment, None: msiforge's) of one boot per ``boot`` (a plan.BootPlan)."""
        raise NotImplementedError

    def warm(self, board, boot, tree: Path, kdir: Path, modules) -> tuple[list[str], Callable[[], bytes]]:
        """For a warm start: the argv of the base guest (the snapshot's), and what makes the payload a resumed
        one gets (``modules()`` gives the built modules, waiting for their build)."""
        raise NotImplementedError


class Qemu(Backend):
    name = "qemu"
    faults = True
    newer_qemu = True

    def image(self, board, kernel, accel, icount, cache, binary=None):
        from . import qemu

        if board.arch == "x86_64":
            return qemu.boot_image(kernel.vmlinuz, accel, icount, cache, binary)
        return kernel.vmlinuz, arches.get(board.arch).image.rsplit("/", 1)[-1]  # Image, vmlinux

    def cmdline(self, board, fault, accel):
        from . import qemu

        return qemu.kernel_cmdline(fault, board.arch, accel.name)

    def command(self, board, boot, tree, kdir, modules):
        from ..kmod import build as kbuild
        from . import initramfs, qemu

        guest_modules = kbuild.strip_for_guest(modules, kdir / "modules", board.arch)
        initrd = initramfs.build(kdir / "initramfs.cpio", guest_modules, tree / "run.sh",
                                 initramfs.busybox_for(board.arch), [Path(p) for p in boot.port_modules])
        accel = qemu.Accel(boot.accel.value, boot.accel.why)
        argv = qemu.command(board, accel, Path(boot.image.value), initrd, boot.cmdline,
                            boot.clock.value == "icount", boot.qemu.value or None)
        return argv + _port_bus(boot), None

    def warm(self, board, boot, tree, kdir, modules):
        from ..cache import cache_root
        from ..kmod import build as kbuild
        from . import initramfs, qemu

        base = initramfs.warm_base(cache_root() / "snapshots", initramfs.busybox_for(board.arch),
                                   [Path(p) for p in boot.port_modules])
        accel = qemu.Accel(boot.accel.value, boot.accel.why)
        argv = qemu.command(board, accel, Path(boot.image.value), base, boot.cmdline, boot.clock.value == "icount",
                            boot.qemu.value or None)
        argv += _port_bus(boot)

        def payload() -> bytes:
            guest_modules = kbuild.strip_for_guest(modules(), kdir / "modules", board.arch)
            return initramfs.payload(guest_modules, tree / "run.sh")

        return argv, payload


def _port_bus(boot) -> list[str]:
    """The virtio-serial bus a warm guest's payload port is hot-added on, where the plan has one: on cold
    boots too, so that a cold and a resumed guest of one kernel run on the same machine."""
    from . import snapshot

    return list(snapshot.PORT_DEVICE) if boot.handover.value == snapshot.VIRTIO_SERIAL else []


class Vng(Backend):
    name = "vng"
    arches = ("x86_64",)

    def check_kernel(self, spec, kernel):
        # virtme-ng mounts its root over virtio and 9p: from 6.19 on Debian builds those as
        # modules in linux-modules-<rel> (100-160 MB), which msiforge does not fetch.
        if kernel.kernel_package.startswith("linux-binary-unsigned-"):
            raise InputError(f"--backend vng: kernel {spec} ({kernel.release}) has its virtio and 9p drivers "
                             "in linux-modules, which msiforge does not fetch; use the qemu backend")

    def image(self, board, kernel, accel, icount, cache, binary=None):
        return kernel.vmlinuz, "bzImage, booted by virtme-ng"

    def cmdline(self, board, fault, accel):
        from . import vng

        return vng.append(board.arch, accel.name)

    def command(self, board, boot, tree, kdir, modules):
        from . import qemu, vng

        accel = qemu.Accel(boot.accel.value, boot.accel.why)
        moddir = modules[0].parent  # the built modules, used in place
        return vng.command(board, accel, Path(boot.image.value), tree, boot.clock.value == "icount", moddir)


BACKENDS: dict[str, Backend] = {b.name: b for b in (Qemu(), Vng())}


def get(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise InputError(f"--backend {name!r}: not one of {', '.join(BACKENDS)}") from None
