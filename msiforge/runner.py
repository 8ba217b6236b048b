"""`msiforge run`: generate -> fetch -> build -> boot -> run, for each kernel of a board."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import hashlib
import os
import re
import shlex
import shutil
from pathlib import Path

from . import kernels as kern
from . import progress
from .board import SCENARIOS, TWO_CPU_SCENARIOS, Board
from .cache import cache_root, ensure_entry
from .errors import BuildError, InputError
from .generator import render
from .kmod import build as kbuild
from .kspec import parse_spec
from .results import FAIL, PASS, KernelResult, RunResult, ScenarioResult, write_json, write_junit
from .vmtests import console as vmconsole
from .vmtests import initramfs, ktap, qemu, vng


def select(board: Board, specs: list[str] | None, scenarios: list[str] | None) -> tuple[Board, list[str]]:
    """Apply --kernel / --scenario overrides to a board, validating them."""
    specs = list(specs or [k.text for k in board.kernels])
    for s in specs:
        parse_spec(s)
    if scenarios:
        for s in scenarios:
            if s not in SCENARIOS:
                raise InputError(f"--scenario {s!r}: unknown scenario (known: {', '.join(SCENARIOS)})")
            if s in TWO_CPU_SCENARIOS and board.cpus < 2:
                raise InputError(f"--scenario {s}: board {board.name} has {board.cpus} CPU, needs 2")
        board = dataclasses.replace(board, scenarios=tuple(s for s in SCENARIOS if s in scenarios))
    return board, list(dict.fromkeys(specs))


def check_specs(specs: list[str], arch: str = "x86_64") -> list[kern.DebianKernel]:
    """Check every spec so that bad ones fail before anything is written; return the Debian index.

    debian: specs are resolved against the package index; source:X.Y+SERIES
    specs must name a series that supports X.Y.
    """
    from .generator import patches

    from . import source_kernels

    parsed = {s: parse_spec(s) for s in specs}
    for spec in parsed.values():
        source_kernels.check_spec(spec)  # source: series and tree: paths, without fetching anything
        if spec.kind == "source" and spec.patch_series:
            patches.check_supported(spec.patch_series, spec.series)
    debian = [s for s, spec in parsed.items() if spec.kind == "debian"]
    if debian and arch != "x86_64":
        # Debian's arm64 headers carry arm64 build tools (fixdep, modpost): modules for those
        # kernels cannot be built on this x86_64 host from the packages alone.
        raise InputError(f"kernel {debian[0]}: Debian prebuilt kernels are used on x86_64 boards only; "
                         f"an {arch} board takes source: or tree: kernels (cross-built)")
    available = kern.index() if debian else []
    for s in debian:
        kern.resolve(s, available)
    return available


def obtain(spec: str, available: list[kern.DebianKernel], arch: str = "x86_64") -> kern.Kernel:
    """A bootable kernel for ``spec``: fetched (debian:) or built (source:, tree:)."""
    if parse_spec(spec).kind == "debian":
        with progress.step(f"fetch {spec}"):
            return kern.fetch(spec, available)
    from . import source_kernels

    return source_kernels.build(spec, arch)


def new_run_dir(board: Board, out: Path | None) -> Path:
    """``out`` (made if needed), or a new directory under runs/; a one-line error if it cannot be written."""
    from .cache import usable_dir

    if out is not None:
        return usable_dir(out, "run directory")
    usable_dir(Path("runs"), "runs directory")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{stamp}-{board.name}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


def build_modules(tree: Path, kernel: kern.Kernel) -> list[Path]:
    """Build a tree's modules, reusing a cached build of identical sources for the same kernel."""
    h = hashlib.sha256(kernel.release.encode())
    for f in sorted(tree.iterdir()):
        if f.suffix == ".c" or f.name == "Kbuild":
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    entry = cache_root() / "modules" / f"{kernel.release}-{h.hexdigest()[:20]}"

    def _build(tmp: Path) -> None:
        for ko in kbuild.build(tree, kernel.build_dir, arch=kernel.arch).modules:
            shutil.copy2(ko, tmp / ko.name)

    ensure_entry(entry, _build)
    for ko in entry.glob("*.ko"):
        shutil.copy2(ko, tree / ko.name)
    return sorted(entry.glob("*.ko"))


def build_fault_module(kernel: kern.Kernel, dest: Path) -> Path:
    """Build the test-only fault injector (kmod/fault) for ``kernel``."""
    src = Path(kbuild.__file__).parent / "fault" / "msiforge_fault.c"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest / src.name)
    (dest / "Kbuild").write_text("obj-m += msiforge_fault.o\n")
    (dest / "manifest.json").write_text('{"files": {"msiforge_fault.c": "kmod/fault/msiforge_fault.c"}}\n')
    return kbuild.build(dest, kernel.build_dir, arch=kernel.arch).modules[0]


def scenario_results(board: Board, root: ktap.TestResult, boot: vmconsole.Console) -> list[ScenarioResult]:
    """Map the guest's KTAP tree to one result per board scenario."""
    by_name = {t.name: t for t in root.subtests}
    load = by_name.get("load")
    out = []
    for name in board.scenarios:
        test = by_name.get(name)
        diags = [d for sub in (test.subtests if test else []) for d in sub.diagnostics]
        devices = {sub.name: sub.status for sub in (test.subtests if test else [])}
        if load is not None and load.status == "not ok":
            status = "load-failed"
            diags = [d for sub in load.subtests for d in sub.diagnostics]
        elif test is None or test.status == "missing":
            status = boot.verdict if boot.verdict != "completed" else "missing"
        elif test.ok:
            status = PASS
        else:
            status = FAIL
        out.append(ScenarioResult(name=name, status=status, devices=devices, diagnostics=diags,
                                  seconds=boot.step_seconds.get(name)))
    return out


def boot_kernel(board: Board, kernel: kern.Kernel, tree: Path, kdir: Path, accel: qemu.Accel,
                fault: str | None = None, backend: str = "qemu") -> KernelResult:
    """Build, boot and test one kernel; every failure becomes a verdict in the result."""
    result = KernelResult(spec=kernel.spec, release=kernel.release, verdict=PASS)
    try:
        with progress.step(f"build modules for {kernel.release} (W=1)"):
            modules = build_modules(tree, kernel)
    except BuildError as exc:
        result.verdict, result.detail = "build-failed", str(exc)
        result.scenarios = [ScenarioResult(name=s, status="build-failed") for s in board.scenarios]
        return result
    icount = False
    if accel.name == "tcg" and board.tcg_clock == "auto":
        icount, result.timing = qemu.probe_icount(kernel.vmlinuz, cache_root() / "probes", board.arch)
    elif accel.name == "tcg":
        result.timing = "real-time clocks (the board's tcg_clock)"
    env = None
    clock = ", icount" if icount else ""
    if backend == "vng":
        argv, env = vng.command(board, accel, kernel.vmlinuz, tree, icount)
    else:
        if fault in ("panic", "oops", "warn"):
            modules = modules + [build_fault_module(kernel, kdir / "fault")]
        guest_modules = kbuild.strip_for_guest(modules, kdir / "modules", board.arch)
        initrd = initramfs.build(kdir / "initramfs.cpio", guest_modules, tree / "run.sh",
                                 initramfs.busybox_for(board.arch))
        image = kernel.vmlinuz
        if board.arch == "x86_64":
            image, how = qemu.boot_image(kernel.vmlinuz, accel, icount, cache_root())
            if image != kernel.vmlinuz:
                clock += f", {how}"
        argv = qemu.command(board, accel, image, initrd, qemu.kernel_cmdline(fault, board.arch), icount)
    (kdir / "cmdline").write_text(shlex.join(argv) + "\n")
    log = kdir / "console.log"
    title = f"boot {kernel.release} ({backend}, {accel.name.upper()}{clock}) and run {', '.join(board.scenarios)}"
    with progress.step(title):
        boot = vmconsole.run(argv, log, board.boot_timeout, board.scenario_timeout, env=env)
    lines = boot.lines
    root = ktap.parse(lines)
    ktap_lines = _ktap_lines(lines)
    (kdir / "ktap.txt").write_text("\n".join(ktap_lines) + ("\n" if ktap_lines else ""))
    result.console_log, result.ktap_log = str(log), str(kdir / "ktap.txt")
    result.boot_seconds = boot.boot_seconds
    result.seconds = boot.seconds
    result.scenarios = scenario_results(board, root, boot)
    if boot.verdict != "completed":
        result.verdict, result.detail = boot.verdict, boot.detail
    elif any(s.status == "load-failed" for s in result.scenarios):
        result.verdict = "load-failed"
        result.detail = "; ".join(result.scenarios[0].diagnostics[:2])
    elif not all(s.passed for s in result.scenarios):
        result.verdict = FAIL
    return result


_KMSG = re.compile(r"^\[\s*\d+\.\d+\] ")


def _ktap_lines(lines: list[str]) -> list[str]:
    """The guest's KTAP document, without the kernel messages printed in between."""
    out, inside = [], False
    for line in lines:
        if line.startswith("KTAP version"):
            inside = True
        if inside:
            if line.startswith(vmconsole.DONE):
                break
            if not _KMSG.match(line):
                out.append(line)
    return out


def run(board: Board, specs: list[str] | None = None, scenarios: list[str] | None = None,
        out: Path | None = None, fault: str | None = None, backend: str = "qemu",
        jobs: int | None = None) -> RunResult:
    """Run a board on its kernels (or ``specs``) and write the run directory.

    ``backend`` is ``qemu`` (our own initramfs) or ``vng`` (virtme-ng);
    ``jobs`` kernels are built and booted at once (default: one per core).
    """
    board, specs = select(board, specs, scenarios)
    if fault and backend != "qemu":
        raise InputError("--guest-fault needs the qemu backend (it is injected by msiforge's own init)")
    if backend != "qemu" and board.arch != "x86_64":
        raise InputError(f"--backend {backend}: board {board.name} is {board.arch}; only the qemu backend "
                         "boots foreign-arch guests")
    available = check_specs(specs, board.arch)
    cache_root()  # a cache that cannot be written is a one-line error before the run directory exists
    run_dir = new_run_dir(board, out)
    progress.info(f"run directory: {run_dir}")
    fetched = []
    for s in specs:
        fetched.append(obtain(s, available, board.arch))
    with progress.step("probe the accelerator"):
        accel = qemu.choose_accel(board.accel, fetched[0].vmlinuz, cache_root() / "probes")
    progress.info(f"accelerator: {accel.describe()}")
    targets = [render.target_for(k) for k in fetched]
    with progress.step(f"generate {len(board.devices)} driver(s) x {len(fetched)} kernel(s)"):
        trees = render.generate(board, targets, run_dir / "gen")
    result = RunResult(board=board.name, run_dir=run_dir, accel=accel.describe())
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(fetched)))
    if jobs > 1:
        progress.live(False)  # several steps at once: plain lines, no spinner

    def one(k: kern.Kernel) -> KernelResult:
        kdir = run_dir / k.release
        kdir.mkdir(parents=True, exist_ok=True)
        return boot_kernel(board, k, trees[k.release], kdir, accel, fault, backend)

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(one, k) for k in fetched]
        for fut in futures:  # results keep the order of the kernels asked for
            result.kernels.append(fut.result())
            write_json(result, run_dir / "results.json")
    write_junit(result, run_dir / "junit.xml")
    return result
