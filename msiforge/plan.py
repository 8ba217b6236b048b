"""The plan: what a run will do, as pure data, decided before anything is generated or booted.

For a board and its kernels the plan says, per kernel: each device's driver
strategy and why (from the kernel's headers, never its version), the
accelerator and why, the clock mode and why, the boot image and kernel
command line, the backend and the scenarios.  Probes (the kernel's headers,
the KVM, -icount and PVH probe boots, all cached) are the only I/O before it;
after it, ``generate`` writes each kernel's part as that tree's manifest, the
runner executes it, and the guest script takes its facts (a device's API) from
it rather than asking the module again.

``msiforge plan BOARD --kernel ...`` prints it; ``--json`` for tools.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import arches
from .board import Board
from .errors import EnvironmentProblem
from .generator import features as feat


@dataclass(frozen=True)
class Choice:
    """One decision and the reason for it."""

    value: str
    why: str


@dataclass(frozen=True)
class DevicePlan:
    """How one device's driver gets its interrupts on one kernel."""

    name: str
    module: str
    storage: str
    strategy: str  # native | patched | module-local
    api: str  # the backend template: module-local | pci-ims | platform-msi-group | pci-msi
    why: str


#: A boot on the host's own QEMU.
HOST_QEMU = Choice("", "the host's QEMU")


@dataclass(frozen=True)
class BootPlan:
    """How one kernel is booted (absent when only generating)."""

    backend: str  # qemu | vng
    accel: Choice  # kvm | tcg
    clock: Choice  # icount | real-time (TCG only; KVM: host)
    image: Choice  # what -kernel gets, and how it boots (PVH, bzImage, Image)
    cmdline: str
    #: warm: resumed from a snapshot of the booted base guest (vmtests/snapshot.py); cold: booted.
    start: Choice = Choice("cold", "")
    #: The QEMU binary when it is not the host's ("": the host's), e.g. a newer one for -icount (vmtests/newer_qemu.py).
    qemu: Choice = HOST_QEMU
    #: A warm start's way for the payload into the guest: virtio-serial | console ("": no warm start possible).
    #: With virtio-serial every boot of the kernel (cold ones too) has the port's bus: one machine.
    handover: Choice = Choice("", "")
    #: The kernel's own modules every guest of it loads first, for the port (its drivers are modules there).
    port_modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class KernelPlan:
    """Everything decided for one kernel of the board."""

    spec: str
    release: str
    arch: str
    patch_series: str | None
    features: dict[str, bool]
    devices: tuple[DevicePlan, ...]
    scenarios: tuple[str, ...]
    boot: BootPlan | None = None
    #: The compiler its modules are built with, and where (the host or a build root).
    compiler: Choice | None = None
    suite: str = ""  # debian: the Debian suite it came from

    def device(self, name: str) -> DevicePlan:
        return next(d for d in self.devices if d.name == name)


@dataclass(frozen=True)
class Plan:
    """The board and one plan per kernel."""

    board: str
    board_path: str
    arch: str
    machine: str
    kernels: tuple[KernelPlan, ...] = field(default_factory=tuple)

    def to_json(self) -> dict:
        return asdict(self)

    def kernel(self, release: str) -> KernelPlan:
        return next(k for k in self.kernels if k.release == release)


def devices(board: Board, features: feat.Features, patch_series: str | None) -> tuple[DevicePlan, ...]:
    """Each device's strategy on a kernel with ``features`` (pure)."""
    out = []
    for dev in board.devices:
        s = feat.strategy(dev.storage, features, patch_series, board.iommu)
        out.append(DevicePlan(dev.name, dev.module, dev.storage, s.name, s.api, s.why))
    return tuple(out)


def kernel_plan(board: Board, spec: str, release: str, features: feat.Features, patch_series: str | None,
                boot: BootPlan | None = None, compiler: Choice | None = None, suite: str = "") -> KernelPlan:
    """One kernel's plan from what its headers declare (pure)."""
    return KernelPlan(spec=spec, release=release, arch=board.arch, patch_series=patch_series,
                      features=features.to_json(), devices=devices(board, features, patch_series),
                      scenarios=tuple(board.scenarios), boot=boot, compiler=compiler, suite=suite)


def compiler_choice(kernel) -> Choice:
    """The compiler of ``kernel``'s modules and where it runs (``toolchains.py``)."""
    tc = getattr(kernel, "toolchain", None)
    if tc is None:
        return Choice("the host's", "msiforge built this kernel with the host's compiler")
    return Choice(tc.describe(), tc.why)


def start_choice(board: Board, accel, backend: str, cold: bool) -> Choice:
    """Whether a boot resumes a warm snapshot or boots, and why (pure)."""
    arch = arches.get(board.arch)
    if cold:
        return Choice("cold", "--cold: booted")
    if backend != "qemu":
        return Choice("cold", f"the {backend} backend boots the host's root filesystem: no snapshot")
    if not arch.snapshots:
        return Choice("cold", f"warm snapshots are not verified on {arch.name} guests yet")
    if accel.name != "tcg":
        return Choice("cold", "warm snapshots are verified under TCG only")
    return Choice("warm", "the first run of this kernel and machine saves the booted guest at its ready "
                          "point, later runs resume it (--cold boots)")


#: What the payload's virtio-serial port needs in the base guest, and the module each option builds.
PORT_OPTIONS = {"CONFIG_VIRTIO_PCI": "virtio_pci", "CONFIG_VIRTIO_CONSOLE": "virtio_console"}
_PORT_WHY = ("a virtio-serial port, hot-added to the resumed guest, carries the payload (cold boots have its bus "
             "too: the same machine)")


def _config_values(kernel) -> dict[str, str] | None:
    config = Path(kernel.build_dir) / ".config"
    if not config.is_file():
        return None
    lines = config.read_text(errors="replace").splitlines()
    return dict(line.split("=", 1) for line in lines if line.startswith("CONFIG_") and "=" in line)


def handover_plan(kernel) -> tuple[Choice, list[Path]]:
    """How a warm guest of ``kernel`` gets its payload, from the kernel's ``.config`` (its build directory's),
    and the kernel's own modules every guest of it then loads first for the port, dependencies first (none
    where the drivers are built in, or where the payload takes the console)."""
    from .vmtests import kernel_modules

    console = "the serial console carries the payload, base64 in acknowledged chunks"
    values = _config_values(kernel)
    if values is None:
        return Choice("console", f"no .config in its build directory: {console}"), []
    if all(values.get(o) == "y" for o in PORT_OPTIONS):
        return Choice("virtio-serial", f"CONFIG_VIRTIO_PCI=y, CONFIG_VIRTIO_CONSOLE=y: {_PORT_WHY}"), []
    missing = [o for o in PORT_OPTIONS if values.get(o) not in ("y", "m")]
    if missing:
        return Choice("console", f"{' and '.join(missing)} not set: {console}"), []
    modular = [o for o in PORT_OPTIONS if values[o] == "m"]
    said = ", ".join(f"{o}=m" for o in modular)
    if kernel.modules_dir is None:
        return Choice("console", f"{said}, but its modules are not here: {console}"), []
    try:
        mods = kernel_modules.load_order(Path(kernel.modules_dir), [PORT_OPTIONS[o] for o in modular])
    except kernel_modules.Missing as exc:
        return Choice("console", f"{said}, but {exc}: {console}"), []
    return Choice("virtio-serial", f"{said}: every guest of it loads {', '.join(m.stem for m in mods)} "
                                   f"from its image package first; {_PORT_WHY}"), mods


def handover_choice(kernel) -> Choice:
    """How a warm guest of ``kernel`` gets its payload (handover_plan)."""
    return handover_plan(kernel)[0]


def boot_plan(board: Board, kernel, accel, backend: str, fault: str | None, cache: Path,
              cold: bool = False) -> BootPlan:
    """How ``kernel`` (a fetched or built ``kernels.Kernel``) boots: runs the cached clock and image probes."""
    from .vmtests import backends, newer_qemu, qemu

    clock = Choice("host", "KVM: the host's clocks")
    icount = False
    be = backends.get(backend)
    binary = HOST_QEMU
    if accel.name == "tcg" and board.tcg_clock == "auto":
        icount, why = qemu.probe_icount(kernel.vmlinuz, cache / "probes", board.arch)
        if not icount and be.newer_qemu and newer_qemu.available(board.arch):
            binary, icount, why = _newer_qemu_for_icount(board, kernel, cache, why)
        clock = Choice("icount" if icount else "real-time", why)
    elif accel.name == "tcg":
        clock = Choice("real-time", "real-time clocks (the board's tcg_clock)")
    image, how = be.image(board, kernel, accel, icount, cache, binary.value or None)
    start = start_choice(board, accel, backend, cold)
    # A snapshot's command line is the one it was saved with: a resumed guest gets its fault with the payload.
    cmdline = be.cmdline(board, None if start.value == "warm" else fault, accel)
    # Decided for --cold runs too: a warm guest's machine has the payload's virtio-serial bus, and so do
    # cold boots of the kernel, so that both are the same machine (interrupt remapping entries, PCI slots).
    can_warm = start_choice(board, accel, backend, False).value == "warm"
    handover, port = handover_plan(kernel) if can_warm else (Choice("", ""), [])
    return BootPlan(backend=backend, accel=Choice(accel.name, accel.reason), clock=clock,
                    image=Choice(str(image), how), cmdline=cmdline, start=start, qemu=binary, handover=handover,
                    port_modules=tuple(str(p) for p in port))


def _newer_qemu_for_icount(board: Board, kernel, cache: Path, host_why: str) -> tuple[Choice, bool, str]:
    """The kernel stalls under -icount on the host's QEMU: (the QEMU, icount, why) with the newer one, if it boots."""
    from .vmtests import newer_qemu, qemu

    host_why = host_why.split(", using")[0]
    try:
        path = str(newer_qemu.binary(board.arch))
    except EnvironmentProblem as exc:  # a mirror without the suite: the kernel still runs, on real-time clocks
        return HOST_QEMU, False, f"{host_why} (no newer QEMU: {exc}), using real-time clocks"
    # Twice the host's limit: it is asked only of kernels known to stall there, once (cached).
    ok, why = qemu.probe_icount(kernel.vmlinuz, cache / "probes", board.arch, binary=path,
                                timeout=2 * qemu.ICOUNT_PROBE_SECONDS)
    host = f"the host's QEMU {newer_qemu.version(qemu.qemu_binary(board.arch))}"
    newer = f"QEMU {newer_qemu.version(path)} from {newer_qemu.SUITE}"
    if not ok:
        return HOST_QEMU, False, f"{host_why} ({host}; {newer} neither), using real-time clocks"
    return (Choice(path, f"{newer}: on {host} this kernel stalls under -icount (its vCPUs take turns "
                         "without fairness, fixed in QEMU 8.1)"),
            True, f"{why} on {newer} ({host}: {host_why.removeprefix('-icount probe: ')})")


def make(board: Board, kernels: list, accel=None, backend: str = "qemu", fault: str | None = None,
         cache: Path | None = None, cold: bool = False) -> Plan:
    """The plan of ``board`` on ``kernels`` (``kernels.Kernel``); with ``accel``, how each boots too."""
    kplans = []
    for k in kernels:
        boot = boot_plan(board, k, accel, backend, fault, cache, cold) if accel is not None else None
        kplans.append(kernel_plan(board, k.spec, k.release, feat.probe(k.header_dirs), k.patch_series, boot,
                                  compiler_choice(k), getattr(k, "suite", "")))
    return Plan(board=board.name, board_path=board.path, arch=board.arch, machine=board.machine,
                kernels=tuple(kplans))


def describe(plan: Plan) -> list[str]:
    """The plan as text, one fact per line, each with its reason."""
    arch = arches.get(plan.arch)
    lines = [f"board {plan.board} from {plan.board_path}: {plan.arch} {plan.machine}, console {arch.console}"]
    for k in plan.kernels:
        lines.append(f"kernel {k.spec}: {k.release}" + (f" (patch series {k.patch_series})" if k.patch_series else ""))
        have = [name for name, on in k.features.items() if on]
        lines.append(f"  headers declare: {', '.join(have) if have else 'none of the probed APIs'}")
        if k.compiler:
            lines.append(f"  modules built with {k.compiler.value}: {k.compiler.why}")
        for d in k.devices:
            lines.append(f"  device {d.name} ({d.storage}): {d.strategy}, api {d.api}: {d.why}")
        if k.boot:
            b = k.boot
            lines.append(f"  backend {b.backend}; accelerator {b.accel.value.upper()}: {b.accel.why}")
            lines.append(f"  clock {b.clock.value}: {b.clock.why}")
            if b.qemu.value:
                lines.append(f"  qemu {b.qemu.value}: {b.qemu.why}")
            lines.append(f"  image {b.image.value} ({b.image.why})")
            lines.append(f"  command line: {b.cmdline}")
            lines.append(f"  start {b.start.value}: {b.start.why}")
            if b.handover.value and b.start.value == "warm":
                lines.append(f"  payload over {b.handover.value}: {b.handover.why}")
        lines.append(f"  scenarios: {', '.join(k.scenarios)}")
    return lines
