"""QEMU: the accelerator probe and the command line for a board.

KVM is detected by running guest code under it, not by the presence of
/dev/kvm (nested setups expose a device node that cannot run guests).
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import arches, hostprogs
from ..board import Board
from ..errors import EnvironmentProblem



@dataclass(frozen=True)
class Accel:
    """The accelerator a run uses and why."""

    name: str  # kvm | tcg
    reason: str

    def describe(self) -> str:
        return f"{self.name.upper()} ({self.reason})"


def qemu_binary(arch: str = "x86_64", binary: str | None = None) -> str:
    """The QEMU of ``arch``: ``binary`` when a plan chose one (vmtests/newer_qemu.py), else the host's."""
    return binary or hostprogs.require(arches.get(arch).qemu)


#: /init of the probe guest: say so, power off.
_PROBE_INIT = """#!/bin/busybox sh
/bin/busybox echo msiforge-probe: ok
/bin/busybox poweroff -f
"""


def _probe_append(arch: str, accel: str) -> str:
    """The kernel command line of a probe boot: quiet, and the words a real boot under ``accel`` has."""
    rec = arches.get(arch)
    return " ".join([f"console={rec.console}", "loglevel=3", "panic=-1", *rec.boot_words(accel)])


def _probe_boot(kernel: Path, accel_args: list[str], timeout: float,
                arch: str = "x86_64", binary: str | None = None) -> tuple[int, str, float]:
    """Boot ``kernel`` to a trivial init; return (outcome index, what was seen, seconds).

    Outcome 0: init ran; 1: KVM internal error; 2: QEMU error; 3: QEMU exited; 4: timeout.
    """
    import time

    import pexpect

    from . import console, initramfs

    with tempfile.TemporaryDirectory(prefix="msiforge-probe-") as tmp:
        initrd = initramfs.build_minimal(Path(tmp) / "probe.cpio", _PROBE_INIT, initramfs.busybox_for(arch))
        argv = [qemu_binary(arch, binary), *accel_args, "-m", "256M", "-nodefaults", "-no-user-config",
                "-display", "none", "-serial", "stdio", "-no-reboot", "-kernel", str(kernel),
                "-initrd", str(initrd), "-append",
                _probe_append(arch, accel_args[accel_args.index("-accel") + 1])]
        start = time.monotonic()
        child = console.spawn(argv, encoding="utf-8", codec_errors="replace", timeout=timeout)
        try:
            # Error patterns end at the line end, so the whole message is captured.
            idx = child.expect(["msiforge-probe: ok", r"KVM internal error[^\r\n]*\r?\n",
                                r"qemu-system-[a-z0-9_]+: [^\r\n]*\r?\n", pexpect.EOF, pexpect.TIMEOUT])
            seen = child.after if isinstance(child.after, str) else ""
        finally:
            child.terminate(force=True)
            child.close()
            console.forget(child)
    return idx, seen.strip(), time.monotonic() - start


def _probe_entry(kind: str, kernel: Path, cache_dir: Path, per_boot: bool, arch: str = "x86_64",
                 binary: str | None = None) -> Path:
    """Where a probe's answer is kept: per kernel and QEMU binary (and host boot, for KVM)."""
    import hashlib

    st = Path(qemu_binary(arch, binary)).stat()
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip() if per_boot else ""
    # The command line is part of the answer: a probe of other boot words is asked again.
    append = _probe_append(arch, "kvm" if kind == "kvm" else "tcg")
    which = f":{Path(binary).resolve()}" if binary else ""  # the host's QEMU keeps its old keys
    key = f"{kernel.resolve()}:{kernel.stat().st_size}:{st.st_size}:{st.st_mtime}:{boot}:{append}{which}"
    return cache_dir / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def _cached_probe(entry: Path, probe) -> tuple[bool, str]:
    import json

    from ..cache import atomic_write

    if entry.exists():
        data = json.loads(entry.read_text())
        return data["ok"], data["why"]
    ok, why = probe()
    atomic_write(entry, json.dumps({"ok": ok, "why": why}) + "\n")
    return ok, why


@functools.lru_cache(maxsize=4)
def probe_kvm(kernel: Path, cache_dir: Path | None = None) -> tuple[bool, str]:
    """Boot ``kernel`` under KVM to a trivial init; return (works, explanation).

    A nested or broken KVM can run a few real-mode instructions and still fail
    on a real kernel ("KVM internal error"), so the probe boots the kernel the
    run will use, with the CPU model the run will use.  With ``cache_dir`` the
    answer is kept until the host reboots.
    """
    if not os.path.exists("/dev/kvm"):
        return False, "no /dev/kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not accessible to this user"

    def probe() -> tuple[bool, str]:
        idx, seen, _ = _probe_boot(kernel, ["-M", "q35,kernel-irqchip=split", "-accel", "kvm", "-cpu", "host"], 30)
        if idx == 0:
            return True, "KVM probe: a kernel booted under KVM"
        if idx == 4:
            return False, "KVM probe: the kernel did not reach init under KVM within 30 s"
        return False, f"KVM probe failed: {seen or 'QEMU exited'}"

    if cache_dir is None:
        return probe()
    return _cached_probe(_probe_entry("kvm", kernel, cache_dir, per_boot=True), probe)


#: A kernel that reaches init under -icount within this many seconds uses it.
ICOUNT_PROBE_SECONDS = 15.0


def probe_icount(kernel: Path, cache_dir: Path, arch: str = "x86_64",
                 binary: str | None = None, timeout: float = ICOUNT_PROBE_SECONDS) -> tuple[bool, str]:
    """Whether ``kernel`` boots under TCG with ``-icount`` (cached per kernel and QEMU binary).

    Some kernels stall bringing up secondary CPUs when virtual time follows
    instruction counts on QEMU 7.2 (Debian 6.1: vmtests/newer_qemu.py says
    why); without a QEMU that boots them so, they run with real-time clocks.
    """
    def probe() -> tuple[bool, str]:
        machine = arches.get(arch).probe_machine()
        idx, _, secs = _probe_boot(kernel, [*machine, "-accel", "tcg", "-smp", "2", *tcg_timing()],
                                   timeout, arch, binary)
        if idx == 0:
            return True, f"-icount probe: init reached in {secs:.1f} s"
        return False, f"-icount probe: init not reached within {timeout:g} s, using real-time clocks"

    return _cached_probe(_probe_entry("icount", kernel, cache_dir, per_boot=False, arch=arch, binary=binary), probe)


def probe_pvh(vmlinux: Path, cache_dir: Path, icount: bool, binary: str | None = None) -> tuple[bool, str]:
    """Whether ``vmlinux`` reaches init by PVH direct boot under TCG (cached per image and QEMU binary)."""
    def probe() -> tuple[bool, str]:
        timing = tcg_timing() if icount else []
        args = [*arches.get("x86_64").firmware("tcg"), "-M", "q35", "-accel", "tcg", "-smp", "2", *timing]
        # A kernel that cannot boot by PVH fails the same way every time; a
        # TCG guest very rarely stalls in early boot (once in hundreds of
        # boots here), so a silent timeout is tried once more before the
        # answer, which is cached, sends every later run to the bzImage.
        for attempt in (1, 2):
            idx, seen, secs = _probe_boot(vmlinux, args, 30, binary=binary)
            if idx == 0:
                again = " (on a second try)" if attempt == 2 else ""
                return True, f"PVH probe: init reached in {secs:.1f} s{again}"
            if idx != 4 or seen:
                break
        return False, f"PVH probe: init not reached ({seen or 'no output within 30 s, twice'})"

    kind = "pvh-icount" if icount else "pvh"
    return _cached_probe(_probe_entry(kind, vmlinux, cache_dir, per_boot=False, binary=binary), probe)


def boot_image(kernel: Path, accel: Accel, icount: bool, cache_dir: Path,
               binary: str | None = None) -> tuple[Path, str]:
    """What an x86 guest passes to ``-kernel``, and a word on why.

    Under TCG: the kernel's uncompressed vmlinux by PVH direct boot, when the
    kernel has a PVH entry (CONFIG_PVH) and a probe boot of it reached init;
    it skips the bzImage's decompressor (~0.85 s of Debian 6.12's boot under
    TCG).  Otherwise, and under KVM (decompression is quick there), the image
    itself.
    """
    if accel.name != "tcg":
        return kernel, "bzImage"
    from . import bootimage

    vmlinux, why = bootimage.pvh_vmlinux(kernel, cache_dir / "vmlinux")
    if vmlinux is None:
        return kernel, f"bzImage: {why}"
    ok, why = probe_pvh(vmlinux, cache_dir / "probes", icount, binary)
    return (vmlinux, "PVH") if ok else (kernel, f"bzImage: {why}")


def choose_accel(requested: str, kernel: Path, cache_dir: Path | None = None) -> Accel:
    """Resolve a board's ``accel`` (auto | kvm | tcg) to what this machine can do with ``kernel``."""
    if requested == "tcg":
        return Accel("tcg", "the board asks for TCG")
    works, why = probe_kvm(kernel, cache_dir)
    if works:
        return Accel("kvm", why)
    if requested == "kvm":
        raise EnvironmentProblem(f"the board asks for KVM, but it cannot run guests here: {why}")
    return Accel("tcg", why)


def command(board: Board, accel: Accel, kernel: Path, initrd: Path, append: str,
            icount: bool = False, binary: str | None = None) -> list[str]:
    """The QEMU argv for one boot of ``board``: its arch's record (msiforge/arches) fills in the differences.

    ``binary``: the QEMU the plan chose (vmtests/newer_qemu.py), None for the host's.
    """
    arch = arches.get(board.arch)
    if accel.name not in arch.accels:
        raise EnvironmentProblem(f"board {board.name}: an {arch.name} guest runs under "
                                 f"{' or '.join(a.upper() for a in arch.accels)} here, not {accel.name.upper()}")

    def argv_for(machine: str) -> list[str]:
        argv = [qemu_binary(board.arch, binary), *arch.firmware(accel.name), "-M", machine, "-accel", accel.name,
                *arch.cpu(accel.name), "-smp", str(board.cpus), "-m", f"{board.memory_mib}M", *arches.COMMON]
        if accel.name == "tcg" and icount:
            argv += tcg_timing()
        # An IOMMU must come before the devices it translates for.
        return argv + arch.iommu_devices(board) + arches.device_args(board)

    argv = argv_for(arch.machine_arg(board, accel.name))
    return argv + arch.finish(board, argv_for) + ["-kernel", str(kernel), "-initrd", str(initrd), "-append", append]


def tcg_timing() -> list[str]:
    """TCG clock options: virtual time follows instructions and warps while all vCPUs idle.

    Each edu DMA completes 100 ms of virtual time after it starts; with
    sleep=off a guest waiting for it does not wait in real time (measured:
    the default board's boot and scenarios took 24 s without, 9 s with).
    """
    return ["-icount", "shift=auto,sleep=off"]


def kernel_cmdline(fault: str | None = None, arch: str = "x86_64", accel: str = "tcg") -> str:
    """The guest kernel command line (fixed; nothing from the board reaches it).

    loglevel=5 keeps informational messages off the console but shows
    warnings (WARN is KERN_WARNING) and worse; panic=-1 with -no-reboot makes
    QEMU exit on a panic.  ``fault`` is for the harness's own tests.
    """
    rec = arches.get(arch)
    parts = [f"console={rec.console}", "loglevel=5", "panic=-1", *rec.boot_words(accel)]
    if fault == "hang-hard":
        parts[0] = f"console={rec.console}9"  # no such port: the guest says nothing at all
    if fault:
        parts.append(f"msiforge.fault={fault}")
    return " ".join(parts)
