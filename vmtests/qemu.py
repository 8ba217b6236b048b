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

from .. import hostprogs
from ..board import Board
from ..errors import EnvironmentProblem

QEMU = "qemu-system-x86_64"
#: arm64 boards: QEMU's virt machine with a GICv3 and its ITS (LPIs for MSIs).
QEMU_ARM64 = "qemu-system-aarch64"
ARM64_MACHINE = "virt,gic-version=3,its=on"
#: -cpu max, with the IMPDEF pointer-authentication algorithm: the
#: architected QARMA5 is costly to emulate under TCG, which only slows the boot.
ARM64_CPU = "max,pauth-impdef=on"
#: The serial console device of each board arch.
CONSOLE = {"x86_64": "ttyS0", "arm64": "ttyAMA0"}


@dataclass(frozen=True)
class Accel:
    """The accelerator a run uses and why."""

    name: str  # kvm | tcg
    reason: str

    def describe(self) -> str:
        return f"{self.name.upper()} ({self.reason})"


def qemu_binary(arch: str = "x86_64") -> str:
    return hostprogs.require(QEMU_ARM64 if arch == "arm64" else QEMU)


#: /init of the probe guest: say so, power off.
_PROBE_INIT = """#!/bin/busybox sh
/bin/busybox echo msiforge-probe: ok
/bin/busybox poweroff -f
"""


def _probe_boot(kernel: Path, accel_args: list[str], timeout: float,
                arch: str = "x86_64") -> tuple[int, str, float]:
    """Boot ``kernel`` to a trivial init; return (outcome index, what was seen, seconds).

    Outcome 0: init ran; 1: KVM internal error; 2: QEMU error; 3: QEMU exited; 4: timeout.
    """
    import time

    import pexpect

    from . import console, initramfs

    with tempfile.TemporaryDirectory(prefix="msiforge-probe-") as tmp:
        initrd = initramfs.build_minimal(Path(tmp) / "probe.cpio", _PROBE_INIT, initramfs.busybox_for(arch))
        argv = [qemu_binary(arch), *accel_args, "-m", "256M", "-nodefaults", "-no-user-config",
                "-display", "none", "-serial", "stdio", "-no-reboot", "-kernel", str(kernel),
                "-initrd", str(initrd), "-append", f"console={CONSOLE[arch]} loglevel=3 panic=-1"]
        start = time.monotonic()
        child = console.spawn(argv, encoding="utf-8", codec_errors="replace", timeout=timeout)
        try:
            # Error patterns end at the line end, so the whole message is captured.
            idx = child.expect(["msiforge-probe: ok", r"KVM internal error[^\r\n]*\r?\n",
                                r"qemu-system-(?:x86_64|aarch64): [^\r\n]*\r?\n", pexpect.EOF, pexpect.TIMEOUT])
            seen = child.after if isinstance(child.after, str) else ""
        finally:
            child.terminate(force=True)
            child.close()
            console.forget(child)
    return idx, seen.strip(), time.monotonic() - start


def _probe_entry(kind: str, kernel: Path, cache_dir: Path, per_boot: bool, arch: str = "x86_64") -> Path:
    """Where a probe's answer is kept: per kernel and QEMU binary (and host boot, for KVM)."""
    import hashlib

    st = Path(qemu_binary(arch)).stat()
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip() if per_boot else ""
    key = f"{kernel.resolve()}:{kernel.stat().st_size}:{st.st_size}:{st.st_mtime}:{boot}"
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


def probe_icount(kernel: Path, cache_dir: Path, arch: str = "x86_64") -> tuple[bool, str]:
    """Whether ``kernel`` boots under TCG with ``-icount`` (cached per kernel and QEMU binary).

    Some kernels stall bringing up secondary CPUs when virtual time follows
    instruction counts (seen with Debian 6.1); they run with real-time clocks.
    """
    def probe() -> tuple[bool, str]:
        machine = ["-M", "q35"] if arch == "x86_64" else ["-M", ARM64_MACHINE, "-cpu", ARM64_CPU]
        idx, _, secs = _probe_boot(kernel, [*machine, "-accel", "tcg", "-smp", "2", *tcg_timing()],
                                   ICOUNT_PROBE_SECONDS, arch)
        if idx == 0:
            return True, f"-icount probe: init reached in {secs:.1f} s"
        return False, f"-icount probe: init not reached within {ICOUNT_PROBE_SECONDS:g} s, using real-time clocks"

    return _cached_probe(_probe_entry("icount", kernel, cache_dir, per_boot=False, arch=arch), probe)


#: QEMU's minimal firmware: it hands over to the kernel in about half the time SeaBIOS
#: takes (0.10 s vs 0.20 s to the first kernel line under TCG) and keeps q35's PCI, the
#: ACPI tables (DMAR included: intel-iommu interrupt remapping works) and SMP.
QBOOT = Path("/usr/share/qemu/qboot.rom")


def x86_firmware(accel: Accel) -> list[str]:
    """Firmware options of an x86 TCG guest: qboot when Debian's qemu-system-data ships it."""
    return ["-bios", str(QBOOT)] if accel.name == "tcg" and QBOOT.is_file() else []


def probe_pvh(vmlinux: Path, cache_dir: Path, icount: bool) -> tuple[bool, str]:
    """Whether ``vmlinux`` reaches init by PVH direct boot under TCG (cached per image and QEMU binary)."""
    def probe() -> tuple[bool, str]:
        timing = tcg_timing() if icount else []
        idx, seen, secs = _probe_boot(vmlinux, [*x86_firmware(Accel("tcg", "probe")), "-M", "q35",
                                                "-accel", "tcg", "-smp", "2", *timing], 30)
        if idx == 0:
            return True, f"PVH probe: init reached in {secs:.1f} s"
        return False, f"PVH probe: init not reached ({seen or 'no output within 30 s'})"

    kind = "pvh-icount" if icount else "pvh"
    return _cached_probe(_probe_entry(kind, vmlinux, cache_dir, per_boot=False), probe)


def boot_image(kernel: Path, accel: Accel, icount: bool, cache_dir: Path) -> tuple[Path, str]:
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
    ok, why = probe_pvh(vmlinux, cache_dir / "probes", icount)
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
            icount: bool = False) -> list[str]:
    """The qemu-system-x86_64 (or, for arm64 boards, qemu-system-aarch64) argv for one boot of ``board``."""
    if board.arch == "arm64":
        return _arm64_command(board, accel, kernel, initrd, append, icount)
    machine = board.machine
    if accel.name == "kvm" and board.iommu == "intel-ir":
        machine += ",kernel-irqchip=split"  # interrupt remapping needs the split irqchip under KVM
    argv = [qemu_binary(), *x86_firmware(accel), "-M", machine, "-accel", accel.name,
            "-smp", str(board.cpus), "-m", f"{board.memory_mib}M",
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot"]
    if accel.name == "kvm":
        argv += ["-cpu", "host"]
    elif icount:
        argv += tcg_timing()
    if board.iommu == "intel-ir":
        # Must come before the devices it translates for.
        argv += ["-device", "intel-iommu,intremap=on"]
    for dev in board.devices:
        # dma_mask: edu's default 28-bit mask silently clamps MSI addresses into RAM.
        argv += ["-device", f"edu,dma_mask=0xffffffff,addr={dev.pci_slot:#04x}"]
    argv += ["-kernel", str(kernel), "-initrd", str(initrd), "-append", append]
    return argv


def _arm64_command(board: Board, accel: Accel, kernel: Path, initrd: Path, append: str,
                   icount: bool) -> list[str]:
    """QEMU virt with a GICv3 ITS under TCG; the board's platform devices come in a DTB of our own."""
    from . import dtb

    if accel.name != "tcg":
        raise EnvironmentProblem(f"board {board.name}: an arm64 guest runs under TCG here, not {accel.name}")
    argv = [qemu_binary("arm64"), "-M", ARM64_MACHINE, "-accel", "tcg", "-cpu", ARM64_CPU,
            "-smp", str(board.cpus), "-m", f"{board.memory_mib}M",
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot"]
    if icount:
        argv += tcg_timing()
    for dev in board.devices:
        # dma_mask: edu's default 28-bit mask clamps addresses into 0..256M (RAM starts at 1G here).
        argv += ["-device", f"edu,dma_mask=0xffffffff,addr={dev.pci_slot:#04x}"]
    return argv + ["-dtb", str(dtb.board_dtb(board, argv)), "-kernel", str(kernel), "-initrd", str(initrd),
                   "-append", append]


def tcg_timing() -> list[str]:
    """TCG clock options: virtual time follows instructions and warps while all vCPUs idle.

    Each edu DMA completes 100 ms of virtual time after it starts; with
    sleep=off a guest waiting for it does not wait in real time (measured:
    the default board's boot and scenarios took 24 s without, 9 s with).
    """
    return ["-icount", "shift=auto,sleep=off"]


#: Initcalls of x86 kernels that the tests do not need and that cost real time
#: under TCG (0.3-0.5 s of QEMU CPU time together on Debian 6.12, measured A/B):
#: parsing the built-in X.509 certificates (our modules are unsigned anyway), the
#: jitter-entropy RNG's self-test, the ACPI PM-timer clocksource's verification
#: (the TSC and HPET remain), and the first BTF kfunc registration (which parses
#: vmlinux's BTF).  A name a kernel does not have is ignored.
X86_SKIPPED_INITCALLS = ("load_system_certificate_list", "jent_mod_init", "init_acpi_pm_clocksource",
                         "bpf_tcp_ca_kfunc_init")


def kernel_cmdline(fault: str | None = None, arch: str = "x86_64") -> str:
    """The guest kernel command line (fixed; nothing from the board reaches it).

    loglevel=5 keeps informational messages off the console but shows
    warnings (WARN is KERN_WARNING) and worse; panic=-1 with -no-reboot makes
    QEMU exit on a panic.  ``fault`` is for the harness's own tests.
    """
    parts = [f"console={CONSOLE[arch]}", "loglevel=5", "panic=-1"]
    if arch == "x86_64":
        parts.append("initcall_blacklist=" + ",".join(X86_SKIPPED_INITCALLS))
    if fault == "hang-hard":
        parts[0] = f"console={CONSOLE[arch]}9"  # no such port: the guest says nothing at all
    if fault:
        parts.append(f"msiforge.fault={fault}")
    return " ".join(parts)
