"""`msiforge mutants` (make mutants): do the scenarios catch real driver bugs?

Each mutant is a small file, ``templates/module/mutants/<name>.yaml``: a
plausible bug in the generated driver (or its test module) as one exact
substitution in the rendered C of one device: ``find`` -> ``replace``, with
``{p}`` / ``{P}`` standing for the device's prefix.  Optional: ``board`` (a
built-in board's name, or a board inline; default q35-ims), ``kernel``
(default debian:6.12.117+deb12), ``scenarios`` (default: the board's).

For each (board, kernel) the unmutated drivers first run the scenarios and
must pass: a kill means something only against a passing baseline.  Then
each mutant is rendered, applied (a find that does not match exactly once is
an error in the mutant), built W=1 (a mutant that does not build is reported,
not counted) and booted; the scenarios that fail killed it.  Every mutant
must be killed: a survivor names a scenario to strengthen.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from . import progress
from .errors import InputError

DEFAULT_KERNEL = "debian:6.12.117+deb12"
DEFAULT_BOARD = "q35-ims"


@dataclass(frozen=True)
class Mutant:
    """One bug, as a substitution in one device's rendered C."""

    name: str
    summary: str
    module: str  # driver | test: msiforge_<dev>.c or msiforge_<dev>_test.c
    device: str
    find: str
    replace: str
    board: str | dict = DEFAULT_BOARD
    kernel: str = DEFAULT_KERNEL
    scenarios: tuple[str, ...] = ()
    path: str = ""

    @property
    def board_key(self) -> str:
        """What its board run depends on: the board and the scenarios (mutants alike share a baseline)."""
        return json.dumps([self.board, list(self.scenarios)], sort_keys=True)


@dataclass
class Outcome:
    """What became of one mutant."""

    name: str
    summary: str
    status: str  # killed | survived | did-not-build | baseline-failed
    killed_by: list[str] = field(default_factory=list)
    verdict: str = ""
    detail: str = ""
    seconds: float = 0.0


FIELDS = {"mutant", "summary", "module", "device", "find", "replace", "board", "kernel", "scenarios"}


def parse(text: str, path: str) -> Mutant:
    """One mutant file; a one-line InputError naming the file and field when it is not one."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a mutant is a mapping")
    for key in data:
        if key not in FIELDS:
            raise InputError(f"{path}: {key}: unknown field (known: {', '.join(sorted(FIELDS))})")
    for key in ("mutant", "summary", "module", "device", "find", "replace"):
        if not isinstance(data.get(key), str) or (key != "replace" and not data[key]):
            raise InputError(f"{path}: {key}: required, a string")
    if data["module"] not in ("driver", "test"):
        raise InputError(f"{path}: module: {data['module']!r} is not driver or test")
    if Path(path).stem != data["mutant"]:
        raise InputError(f"{path}: mutant: {data['mutant']!r} differs from the file's name")
    board = data.get("board", DEFAULT_BOARD)
    if not isinstance(board, (str, dict)):
        raise InputError(f"{path}: board: a built-in board's name or a board mapping")
    return Mutant(name=data["mutant"], summary=data["summary"], module=data["module"], device=data["device"],
                  find=data["find"], replace=data["replace"], board=board,
                  kernel=data.get("kernel", DEFAULT_KERNEL), scenarios=tuple(data.get("scenarios") or ()),
                  path=path)


def discover() -> list[Mutant]:
    """Every mutant shipped with msiforge, by name."""
    directory = resources.files("msiforge.templates").joinpath("module", "mutants")
    found = [parse(f.read_text(), f"templates/module/mutants/{f.name}")
             for f in directory.iterdir() if f.name.endswith(".yaml")]
    return sorted(found, key=lambda m: m.name)


def load_board(m: Mutant):
    """The mutant's board, with its scenarios."""
    from . import runner
    from .board import load_board as load, validate

    board = load(m.board) if isinstance(m.board, str) else validate(m.board, f"{m.path}: board")
    board, _ = runner.select(board, None, list(m.scenarios) or None)
    return board


def apply(m: Mutant, tree: Path) -> Path:
    """Apply ``m`` to its device's source in a rendered ``tree``; the file it changed."""
    prefix = m.device
    name = f"msiforge_{m.device}.c" if m.module == "driver" else f"msiforge_{m.device}_test.c"
    src = tree / name
    if not src.is_file():
        raise InputError(f"{m.path}: device: no {name} in the rendered tree (is {m.device} on the board?)")
    find = m.find.replace("{p}", prefix).replace("{P}", prefix.upper())
    replace = m.replace.replace("{p}", prefix).replace("{P}", prefix.upper())
    text = src.read_text()
    n = text.count(find)
    if n != 1:
        raise InputError(f"{m.path}: find: matches {n} times in {name} (must match exactly once)")
    src.write_text(text.replace(find, replace))
    return src


def scenario_limit(board, baseline: Path) -> int:
    """A mutant's scenario timeout: 4 times the baseline's measured scenario phase, at least 60 s.

    A mutant that hangs the guest (a corrupted irq descriptor, a lost
    completion) then costs minutes, not the board's whole timeout.
    """
    from .verdict import Events

    ev = Events.load(baseline / "events.json")
    phase = ev.seconds - (ev.boot_seconds or 0.0)
    return min(board.scenario_timeout, max(60, math.ceil(4 * phase)))


def _boot(board, kernel, tree: Path, kdir: Path, accel):
    from .runner import boot_kernel

    kdir.mkdir(parents=True, exist_ok=True)
    return boot_kernel(board, kernel, tree, kdir, accel)


def run(mutants: list[Mutant], out: Path) -> list[Outcome]:
    """Run each mutant (after its board and kernel's baseline); write ``out/mutants.json``."""
    from . import kernels as kern
    from . import runner
    from .cache import atomic_write, cache_root, usable_dir
    from .generator import render
    from .verdict import Verdict
    from .vmtests import qemu

    usable_dir(out, "output directory")
    boards = {m.board_key: load_board(m) for m in mutants}  # every board checked before any boot
    kernels: dict[str, kern.Kernel] = {}
    available = runner.check_specs(sorted({m.kernel for m in mutants}))
    for spec in sorted({m.kernel for m in mutants}):
        kernels[spec] = runner.obtain(spec, available)
    accel = qemu.choose_accel("auto", next(iter(kernels.values())).vmlinuz, cache_root() / "probes")
    baselines: dict[tuple[str, str], object] = {}
    limited: dict[tuple[str, str], object] = {}  # the board with the mutants' scenario timeout
    outcomes: list[Outcome] = []
    for i, m in enumerate(mutants, 1):
        board, kernel = boards[m.board_key], kernels[m.kernel]
        key = (m.board_key, m.kernel)
        if key not in baselines:
            with progress.step(f"baseline: {board.name} on {kernel.release}"):
                tree = render.generate(board, [render.target_for(kernel)], out / "baseline" / board.name)
                baselines[key] = _boot(board, kernel, tree[kernel.release], out / "baseline" / board.name / "k",
                                       accel)
            # A mutant may hang the guest: its scenarios get a few times what the baseline took.
            limited[key] = dataclasses.replace(
                board, scenario_timeout=scenario_limit(board, out / "baseline" / board.name / "k"))
        base = baselines[key]
        start = time.monotonic()
        if not base.passed:
            outcomes.append(Outcome(m.name, m.summary, "baseline-failed", verdict=str(base.verdict),
                                    detail=f"the unmutated drivers fail on {kernel.release}: {base.verdict}"))
            progress.info(f"  {m.name}: not run, {outcomes[-1].detail}")
            continue
        work = out / m.name
        tree = render.generate(board, [render.target_for(kernel)], work / "gen")[kernel.release]
        apply(m, tree)
        with progress.step(f"mutant {i}/{len(mutants)}: {m.name}"):
            result = _boot(limited[key], kernel, tree, work / "k", accel)
        secs = round(time.monotonic() - start, 1)
        if Verdict(result.verdict) is Verdict.BUILD_FAILED:
            outcomes.append(Outcome(m.name, m.summary, "did-not-build", verdict="build-failed",
                                    detail=result.detail, seconds=secs))
            progress.info(f"  {m.name}: did not build: {result.detail}")
            continue
        killed = [s.name for s in result.scenarios if not s.passed]
        if not killed and not result.passed:  # the kernel's own verdict (a WARN, an oops) caught it
            killed = [str(result.verdict)]
        # A kernel report (KASAN, kmemleak, a WARN, ...) says it best; else the first failed check.
        why = result.detail if result.detail and Verdict(result.verdict) is not Verdict.FAIL else \
            next((d for s in result.scenarios if not s.passed for d in s.diagnostics), result.detail)
        outcomes.append(Outcome(m.name, m.summary, "killed" if killed else "survived", killed, str(result.verdict),
                                why, secs))
        progress.info(f"  {m.name}: " + (f"killed by {', '.join(killed)}" if killed else f"SURVIVED: {why or 'every scenario passed'}"))
        atomic_write(out / "mutants.json", json.dumps([asdict(o) for o in outcomes], indent=2) + "\n")
    atomic_write(out / "mutants.json", json.dumps([asdict(o) for o in outcomes], indent=2) + "\n")
    return outcomes


def select(names: list[str] | None) -> list[Mutant]:
    """The shipped mutants, or those named (a one-line error for an unknown name)."""
    every = discover()
    if not names:
        return every
    by_name = {m.name: m for m in every}
    for n in names:
        if n not in by_name:
            raise InputError(f"--only {n}: no such mutant (known: {', '.join(by_name)})")
    return [by_name[n] for n in names]
