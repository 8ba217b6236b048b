"""`msiforge run`: generate -> fetch -> build -> boot -> run, for each kernel of a board."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import hashlib
import json
import os
import re
import shlex
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from . import kernels as kern
from . import arches, plan, progress, reparse, reports
from . import verdict as verdicts
from .board import SCENARIOS, TWO_CPU_SCENARIOS, Board, scenario_mismatch
from .cache import atomic_write, cache_root, ensure_entry
from .errors import BuildError, InputError
from .generator import render
from .kmod import build as kbuild
from .kspec import parse_spec
from .results import KernelResult, RunResult, new_run_id, write_json
from .vmtests import console as vmconsole
from .vmtests import backends, ktap, qemu

EVENTS = reparse.EVENTS
#: Guest faults injected by the test-only fault module (kmod/fault).
FAULT_MODULE = ("panic", "oops", "bug", "warn", "call-trace", *verdicts.DEBUG_FAULTS)


def select(board: Board, specs: list[str] | None, scenarios: list[str] | None) -> tuple[Board, list[str]]:
    """Apply --kernel / --scenario overrides to a board, validating them."""
    specs = list(specs or [k.text for k in board.kernels])
    if any(parse_spec(s).many for s in specs):  # every spec is checked here, as before
        specs = kern.expand_specs(specs)  # debian:A..B and debian:all: every kernel they name
    if scenarios:
        for s in scenarios:
            if s not in SCENARIOS:
                raise InputError(f"--scenario {s!r}: unknown scenario (known: {', '.join(SCENARIOS)})")
            if s in TWO_CPU_SCENARIOS and board.cpus < 2:
                raise InputError(f"--scenario {s}: board {board.name} has {board.cpus} CPU, needs 2")
            why = scenario_mismatch(s, board.devices, board.arch)
            if why:
                raise InputError(f"--scenario {s}: board {board.name}: {why}")
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
            patches.check_supported(spec.patch_series, spec.series, arch)
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


def obtain(spec: str, available: list[kern.DebianKernel], arch: str = "x86_64",
           board: Board | None = None) -> kern.Kernel:
    """A bootable kernel for ``spec``: fetched (debian:) or built (source:, tree:; ``+in-tree`` with
    ``board``'s drivers)."""
    if parse_spec(spec).kind == "debian":
        with progress.step(f"fetch {spec}"):
            return kern.fetch(spec, available)
    from . import source_kernels

    return source_kernels.build(spec, arch, board)


def _obtained(specs: list[str], available: list[kern.DebianKernel], board: Board) -> Iterator[kern.Kernel]:
    """The kernels of ``specs`` in order, each as soon as it is fetched or built; a thread obtains
    the next ones meanwhile.  A failure is raised where that kernel would have come."""
    import queue

    if len(specs) == 1:
        yield obtain(specs[0], available, board.arch, board)
        return
    ready: queue.Queue = queue.Queue()
    stop = threading.Event()

    def producer() -> None:
        for s in specs:
            if stop.is_set():
                return
            try:
                ready.put((obtain(s, available, board.arch, board), None))
            except BaseException as exc:  # handed to the consumer, which raises it
                ready.put((None, exc))
                return

    # A daemon: an interrupted run does not wait for a download (the cache never trusts a half one).
    threading.Thread(target=producer, name="msiforge-fetch", daemon=True).start()
    try:
        for _ in specs:
            k, exc = ready.get()
            if exc is not None:
                raise exc
            yield k
    finally:
        stop.set()


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


def build_modules(tree: Path, kernel: kern.Kernel, work: Path, board: str = "") -> list[Path]:
    """Build a generated tree's modules; ``work`` gets a copy of its sources and the build log.

    The modules are cached per kernel release and source content: identical
    sources for the same kernel are built once.  Otherwise they are built in
    ``board``'s kept tree for this kernel (kmod/trees.py), so only the files
    that changed since its last build are compiled; with no ``board``, or
    while another process builds in that tree, in ``work`` itself.  A build
    failure leaves ``work`` (sources, build.log) for the user to look at.  A
    tree with a guest program (the vfio-platform scenario's) gets it built
    too, and returned after the modules.
    """
    from .generator.render import VFIO_PROGRAM
    from .kmod import userprog

    program = Path(VFIO_PROGRAM).stem
    h = hashlib.sha256(kernel.release.encode())
    for f in sorted(tree.iterdir()):
        if f.suffix in (".c", ".h") or f.name == "Kbuild":
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    entry = cache_root() / "modules" / f"{kernel.release}-{h.hexdigest()[:20]}"

    def _build(tmp: Path) -> None:
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(tree, work, ignore=shutil.ignore_patterns("run.sh"))
        for ko in compile_modules(work, kernel, board):
            shutil.copy2(ko, tmp / ko.name)
        if (work / f"{program}.c").is_file():
            userprog.build(work / f"{program}.c", kernel, tmp / program)

    ensure_entry(entry, _build)
    programs = [p for p in [entry / program] if p.is_file()]
    return sorted(entry.glob("*.ko")) + in_tree_modules(tree, kernel) + programs


def compile_modules(work: Path, kernel: kern.Kernel, board: str) -> list[Path]:
    """The modules of the sources in ``work``, built in the board's kept tree when it is free."""
    from .kmod import trees

    tc = toolchain_ident(kernel)
    probes = kbuild.probe_file(cache_root(), kernel.build_dir, kernel.arch, tc)

    def fresh() -> list[Path]:
        return kbuild.build(work, kernel.build_dir, arch=kernel.arch, toolchain=kernel.toolchain,
                            probes=probes).modules

    if not board:
        return fresh()
    kept = trees.slot(cache_root(), kernel.release, kernel.build_dir, kernel.arch, tc, board)
    with trees.claimed(kept) as mine:
        if not mine:
            return fresh()
        trees.sync(work, kept, skip=("build.log",))
        with trees.building(kept):
            modules = kbuild.build(kept, kernel.build_dir, arch=kernel.arch, toolchain=kernel.toolchain,
                                   shown=work, probes=probes).modules
    trees.prune(cache_root())
    return modules


def toolchain_ident(kernel: kern.Kernel) -> str:
    """What a kernel's module builds are made with, for cache keys (kept trees, compiler probes).

    A build root is named by its exact packages.  On the host, the compiler
    and its Debian version, and the binutils Kbuild runs (an upgrade replaces
    the files: their size and mtime change).
    """
    tc = kernel.toolchain
    if tc is not None and not tc.on_host:
        return tc.key
    cross = arches.get(kernel.arch).cross_compile
    names = [f"{cross}as", f"{cross}ld"] + ([tc.compiler.command] if tc is not None else [arches.get(kernel.arch).cc])
    stamps = []
    for name in names:
        path = shutil.which(name)
        st = os.stat(path) if path else None
        stamps.append(f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}" if st else f"{name}:none")
    compiler = "host" if tc is None else f"host {tc.compiler.command} {tc.compiler.version}"
    return " ".join([compiler, *stamps])


def in_tree_modules(tree: Path, kernel: kern.Kernel) -> list[Path]:
    """The drivers a ``+in-tree`` kernel built, after checking that the test modules were built
    against the same interface (each header in ``tree`` equals the kernel's)."""
    from .generator import intree

    for ko in kernel.in_tree:
        header = tree / ko.with_suffix(".h").name
        src = kernel.header_dirs[0] / intree.DIR / header.name
        if not ko.is_file():
            raise BuildError(f"the in-tree driver {ko.name} was not built in {kernel.build_dir}")
        if not src.is_file() or src.read_bytes() != header.read_bytes():
            raise BuildError(f"{header.name}: the kernel's in-tree copy ({src}) differs from the one the test "
                             "module was built with (the drivers went in-tree for other kernel features?)")
    return list(kernel.in_tree)


def build_fault_module(kernel: kern.Kernel, dest: Path) -> Path:
    """Build the test-only fault injector (kmod/fault) for ``kernel``."""
    src = Path(kbuild.__file__).parent / "fault" / "msiforge_fault.c"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest / src.name)
    (dest / "Kbuild").write_text("obj-m += msiforge_fault.o\n")
    (dest / "manifest.json").write_text('{"files": {"msiforge_fault.c": "kmod/fault/msiforge_fault.c"}}\n')
    probes = kbuild.probe_file(cache_root(), kernel.build_dir, kernel.arch, toolchain_ident(kernel))
    return kbuild.build(dest, kernel.build_dir, arch=kernel.arch, toolchain=kernel.toolchain,
                        probes=probes).modules[0]


def record_build_failure(board: Board, kdir: Path, error: str) -> verdicts.Events:
    """The events of a kernel whose modules did not build: nothing was booted."""
    events = verdicts.Events(ending="build-failed", scenarios=list(board.scenarios), build_error=error)
    write_events(events, kdir)
    (kdir / "console.log").write_text("")
    return events


def write_events(events: verdicts.Events, kdir: Path) -> None:
    atomic_write(kdir / EVENTS, json.dumps(events.to_json(), indent=2) + "\n")


def kernel_result(spec: str, kdir: Path, events: verdicts.Events, timing: str = "") -> KernelResult:
    """A kernel's result from its saved console log and events (``msiforge parse`` decides the same way)."""
    lines = None
    if events.ending != "build-failed":
        lines = verdicts.read_log(kdir / "console.log")
        doc = ktap.document(lines)
        (kdir / "ktap.txt").write_text("\n".join(doc) + ("\n" if doc else ""))
    return reparse.kernel_result(kdir, events, spec, timing, lines)


def boot_kernel(board: Board, kernel: kern.Kernel, tree: Path, kdir: Path, accel: qemu.Accel,
                fault: str | None = None, backend: str = "qemu",
                kplan: plan.KernelPlan | None = None) -> KernelResult:
    """Build, boot and test one kernel as its plan says; every failure becomes a verdict in the result.

    ``kplan`` is the kernel's part of the run's plan (made here, for ``accel``
    and ``backend``, when the caller has none).
    """
    kplan = kplan or plan.make(board, [kernel], accel, backend, fault, cache_root()).kernels[0]
    boot = kplan.boot
    # A warm guest starts while its modules build: it waits for them paused (resumed) or booting
    # (saved first).  A cold boot needs them in its initramfs first.
    build = ModuleBuild(board, kernel, tree, kdir, fault)
    how = f", {boot.clock.value}" if boot.accel.value == "tcg" else ""
    title = (f"boot {kernel.release} ({boot.backend}, {boot.accel.value.upper()}{how}, {boot.image.why}) "
             f"and run {', '.join(board.scenarios)}")
    events = None
    try:
        if boot.start.value == "warm":
            events = _resume_warm(board, kernel, boot, tree, kdir, build.modules, fault, title)
        if events is None:
            modules = build.modules()
            if boot.start.value == "warm":  # the snapshot could not be used: a cold boot, with the fault on its cmdline
                boot = dataclasses.replace(boot, cmdline=backends.get(boot.backend).cmdline(
                    board, fault, qemu.Accel(boot.accel.value, boot.accel.why)))
            argv, env = backends.get(boot.backend).command(board, boot, tree, kdir, modules)
            (kdir / "cmdline").write_text(shlex.join(argv) + "\n")
            with progress.step(title):
                events = vmconsole.run(argv, kdir / "console.log", board.boot_timeout, board.scenario_timeout,
                                       list(board.scenarios), env=env, cpus=board.cpus)
    except BuildError as exc:
        events = record_build_failure(board, kdir, str(exc))
        return kernel_result(kernel.spec, kdir, events)
    finally:
        build.join()
    write_events(events, kdir)
    timing = boot.clock.why if boot.accel.value == "tcg" else ""
    return kernel_result(kernel.spec, kdir, events, timing)


class ModuleBuild:
    """One kernel's module build (build_modules, and the fault module a fault needs), in a thread of its own.

    Started at once; ``modules()`` waits for it and returns the modules, or
    raises its BuildError (or whatever else stopped it).
    """

    def __init__(self, board: Board, kernel: kern.Kernel, tree: Path, kdir: Path, fault: str | None) -> None:
        self._result: list[Path] = []
        self._error: BaseException | None = None

        def work() -> None:
            try:
                with progress.step(f"build modules for {kernel.release} (W=1)"):
                    modules = build_modules(tree, kernel, kdir / "build", board.name)
                if fault in FAULT_MODULE:
                    modules = modules + [build_fault_module(kernel, kdir / "fault")]
                self._result = modules
            except BaseException as exc:  # raised in the thread that asks for the modules
                self._error = exc

        self._thread = threading.Thread(target=work, name=f"msiforge-build-{kernel.release}", daemon=True)
        self._thread.start()

    def modules(self) -> list[Path]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result

    def join(self) -> None:
        """Wait for the build to end, whatever became of it (a run never leaves one behind)."""
        self._thread.join()


def _resume_warm(board: Board, kernel: kern.Kernel, boot: plan.BootPlan, tree: Path, kdir: Path,
                 modules: Callable[[], list[Path]], fault: str | None, title: str) -> verdicts.Events | None:
    """Run the scenarios in a guest resumed from the kernel's warm snapshot, or in one that saves it.

    The first warm run of a kernel and machine boots the base guest and saves
    it at its ready point on the way (a pause, not a boot); later runs resume
    it.  A resumed guest that reports a kernel problem before its payload
    (QEMU 7.2's restore rarely corrupts a CPU's flags; the state itself had
    resumed cleanly after the save) is resumed once more.  None when a
    snapshot does not resume (a state QEMU refuses, a payload that does not
    arrive, a second misbehaving resume): it is removed from the cache and
    the caller boots cold.  ``modules`` gives the modules (waiting for their
    build): the guest is started first, and takes them when they are there.
    """
    from .vmtests import snapshot

    base_argv, payload = backends.get(boot.backend).warm(board, boot, tree, kdir, modules)
    snap = snapshot.lookup(base_argv, cache_root())
    for attempt in (1, 2):
        if snap is None:
            handover = snapshot.SaveFirst(base_argv, cache_root(), payload, fault, board.boot_timeout,
                                          boot.handover.value)
            how, prefix = " (warm: saving its snapshot)", ""
        else:
            handover = snapshot.Resume(snap, payload, fault, board.boot_timeout, boot.handover.value)
            how, prefix = " (warm)" if attempt == 1 else " (warm, second try)", snap.boot_log
        argv = handover.argv(base_argv)
        (kdir / "cmdline").write_text(shlex.join(argv) + "\n")
        try:
            with progress.step((title.replace("boot ", "resume ", 1) if snap else title) + how):
                events = vmconsole.run(argv, kdir / "console.log", board.boot_timeout, board.scenario_timeout,
                                       list(board.scenarios), cpus=board.cpus, handover=handover, log_prefix=prefix)
            break
        except snapshot.Unusable as exc:
            again = snap is not None and attempt == 1 and isinstance(exc, snapshot.Misbehaved)
            # Kept for a look at what went wrong: warm-1-* before a second try, warm-* before a cold boot.
            tag = "warm-1" if again else "warm"
            (kdir / f"{tag}-failed.txt").write_text(f"{exc}\n")
            for name in ("console.log", "cmdline"):
                if (kdir / name).exists():
                    os.replace(kdir / name, kdir / f"{tag}-{name}")
            if again:
                progress.info(f"warm start of {kernel.release} failed ({exc}): resuming once more")
                continue
            if snap is not None:
                snap.discard()
            progress.info(f"warm start of {kernel.release} failed ({exc}): booting cold")
            return None
    if getattr(handover, "save_error", ""):
        progress.info(f"no warm snapshot of {kernel.release} was saved: {handover.save_error}")
    return events


def board_yaml(board: Board) -> str:
    """The board's YAML as read (its file's text, or the built-in board's)."""
    import yaml

    from .board import board_file

    path = board_file(board)
    return path.read_text() if path is not None else yaml.safe_dump(board.raw, sort_keys=False)


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` (1 <= K <= N) as (K, N), or a one-line InputError."""
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not 1 <= int(m[1]) <= int(m[2]):
        raise InputError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. 2/4")
    return int(m[1]), int(m[2])


def shard_of(items: list, shard: tuple[int, int]) -> list:
    """The K-th of N deterministic slices of ``items``: every N-th item from the K-th.

    Round-robin, so neighbouring kernels (similar build and boot times) spread
    over the shards; the slices of one matrix are disjoint and cover it.
    """
    k, n = shard
    return [x for i, x in enumerate(items) if i % n == k - 1]


def run(board: Board, specs: list[str] | None = None, scenarios: list[str] | None = None,
        out: Path | None = None, fault: str | None = None, backend: str = "qemu",
        jobs: int | None = None, shard: tuple[int, int] | None = None, cold: bool = False) -> RunResult:
    """Run a board on its kernels (or ``specs``) and write the run directory.

    ``backend`` is ``qemu`` (our own initramfs) or ``vng`` (virtme-ng);
    ``jobs`` kernels are built and booted at once (default: one per core);
    ``shard`` (K, N): only the K-th of N slices of the kernels (``msiforge merge``
    puts the shards' run directories back together); ``cold``: boot every
    kernel, resuming no warm snapshot (plan.start_choice).
    """
    board, specs = select(board, specs, scenarios)
    matrix = list(specs) if shard is not None else []
    if shard is not None:
        picked = shard_of(specs, shard)
        if not picked:
            raise InputError(f"--shard {shard[0]}/{shard[1]}: this slice of the {len(specs)} kernel(s) is empty")
        specs = picked
    backends.get(backend).check(board, fault)
    if fault in verdicts.DEBUG_FAULTS and (plain := [s for s in specs if not parse_spec(s).debug]):
        raise InputError(f"--guest-fault {fault}: only a debug kernel reports it; "
                         f"{plain[0]} is not one (use source:SERIES+debug, e.g. source:6.12+debug)")
    available = check_specs(specs, board.arch)
    for s in specs:
        if parse_spec(s).kind == "debian":
            backends.get(backend).check_kernel(s, kern.resolve(s, available))
    cache_root()  # a cache that cannot be written is a one-line error before the run directory exists
    if not cold and backend == "qemu":
        from .vmtests import snapshot

        snapshot.kept()  # so is a bad MSIFORGE_SNAPSHOTS_KEPT, not only when a snapshot is saved
    run_dir = new_run_dir(board, out)
    progress.info(f"run directory: {run_dir}")
    run_id, started = new_run_id(), datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    result = RunResult(board=board.name, run_dir=run_dir, accel="", run_id=run_id, started=started,
                       shard=f"{shard[0]}/{shard[1]}" if shard else "", matrix=matrix, fault=fault or "")
    # The board as this run read it: a reproducer bundle (msiforge repro) reruns exactly this.
    atomic_write(run_dir / "board.yaml", board_yaml(board))
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(specs)))
    if len(specs) > 1:
        progress.live(False)  # fetches and boots overlap: plain lines, no spinner
    kplans: dict[int, plan.KernelPlan] = {}
    plan_lock = threading.Lock()
    futures: list[concurrent.futures.Future] = []

    def one(i: int, k: kern.Kernel) -> KernelResult:
        # Planning probes boot the kernel (-icount, PVH): it runs in the pool, so --jobs N
        # also bounds those boots.
        with progress.step(f"plan {k.release}: strategies, clock mode and boot image"):
            own = plan.make(board, [k], accel, backend, fault, cache_root(), cold)
        kplan = own.kernels[0]
        with plan_lock:
            kplans[i] = kplan
            the_plan = dataclasses.replace(own, kernels=tuple(kplans[j] for j in sorted(kplans)))
            atomic_write(run_dir / "plan.json", json.dumps(the_plan.to_json(), indent=2) + "\n")
        with progress.step(f"generate {len(board.devices)} driver(s) for {k.release}"):
            tree = render.add_tree(board, render.target_for(k), run_dir / "gen", the_plan)
        kdir = run_dir / k.release
        kdir.mkdir(parents=True, exist_ok=True)
        kr = boot_kernel(board, k, tree, kdir, accel, fault, backend, kplan)
        kr.board = board.name
        progress.info(f"verdict {k.spec} ({k.release}): {kr.verdict}")
        return kr

    def collect(block: bool) -> None:
        # Results keep the order of the kernels asked for; results.json grows as they come.
        while len(result.kernels) < len(futures) and (block or futures[len(result.kernels)].done()):
            result.kernels.append(futures[len(result.kernels)].result())
            write_json(result, run_dir / "results.json")

    # Stages overlap: the next kernel is fetched (or built) while earlier ones boot,
    # so a matrix's first verdict comes after one kernel's fetch, not after all of them.
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        try:
            for i, k in enumerate(_obtained(specs, available, board)):
                if i == 0:
                    with progress.step("probe the accelerator"):
                        accel = qemu.choose_accel(board.accel, k.vmlinuz, cache_root() / "probes")
                    progress.info(f"accelerator: {accel.describe()}")
                    result.accel = accel.describe()
                futures.append(pool.submit(one, i, k))
                collect(block=False)
        except Exception:
            collect(block=True)  # a later kernel's fetch failed: the ones that booted keep their results
            raise
        collect(block=True)
    reports.write_all(result, board.path)
    return result
