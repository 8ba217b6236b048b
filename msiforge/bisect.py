"""`msiforge bisect`: find the first kernel whose verdict differs from the good one.

With ``--watch REGEX`` what is compared is not the verdict but what the
scenario saw: every match of REGEX in its KTAP diagnostics (the capture
group, if it has one), e.g. the parent domain of the driver's domain in
``domain-layout``, or how many interrupts an affinity move took.

Kernels between ``--good`` and ``--bad`` come from the Debian package index
(or ``--kernel``), ordered by version.  The good kernel is booted once for
the reference verdict; the search then assumes the bad one differs and
binary-searches the kernels after good, booting only midpoints (the bad
kernel itself is booted only if the search lands on it).  Every verdict is
cached per what was tested: the exact kernel release, the board, the
scenario and the content of the rendered driver tree (drivers and guest
script), so a repeated bisect boots nothing while a changed template is
tested again.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import progress
from . import kernels as kern
from . import runner
from .board import Board
from .cache import atomic_write, cache_root, usable_dir
from .errors import InputError
from .kspec import parse_spec
from .verdict import BAD, GOOD, SKIP


@dataclass
class Step:
    """One kernel tried during a bisect."""

    kernel: str  # spec
    release: str
    verdict: str
    observed: str  # what is compared: the verdict, or what --watch matched
    differs: bool
    seconds: float
    cached: bool
    log: str
    diagnostics: list[str] = field(default_factory=list)


@dataclass
class Bisection:
    board: str
    scenario: str
    good: str
    bad: str
    candidates: list[str]
    watch: str | None = None  # the regex whose matches are compared (None: the verdict)
    reference: str = ""
    first_different: str | None = None
    steps: list[Step] = field(default_factory=list)
    boots: int = 0
    seconds: float = 0.0

    @property
    def max_boots(self) -> int:
        """The bound: the reference boot, a binary search over the m kernels after good (at most
        floor(log2 m) midpoints when the answer is bad itself, or ceil(log2 m) otherwise), and
        the boot of bad when the search lands on it untested."""
        return math.floor(math.log2(max(1, len(self.candidates) - 1))) + 2

    def to_json(self) -> dict:
        d = asdict(self)
        d["max_boots"] = self.max_boots
        return d


def _board_key(board: Board) -> str:
    return hashlib.sha256(json.dumps(board.raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def verdict_key(board: Board, k: kern.DebianKernel, scenario: str) -> str:
    """The cache key of a verdict: kernel release, board, scenario and the rendered tree's content.

    The tree is rendered (in a temporary directory, a few milliseconds) for
    the fetched kernel exactly as the run would render it, so any change to
    the templates, the generator or the kernel's probed features changes it.
    """
    import tempfile

    from .generator import render

    board, _ = runner.select(board, None, [scenario])
    target = render.target_for(kern.fetch(k.spec))
    with tempfile.TemporaryDirectory(prefix="msiforge-key-") as tmp:
        tree = render.generate(board, [target], Path(tmp) / "gen")[target.release]
        digest = render.tree_digest(tree)
    parts = [k.release, _board_key(board), scenario, digest]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def _verdict_entry(board: Board, k: kern.DebianKernel, scenario: str) -> Path:
    return cache_root() / "verdicts" / f"{verdict_key(board, k, scenario)}.json"


def candidates(good: str, bad: str, explicit: list[str] | None = None) -> list[kern.DebianKernel]:
    """The kernels from good to bad inclusive, in version order."""
    available = kern.index()
    g, b = kern.resolve(good, available), kern.resolve(bad, available)
    if g.flavour != b.flavour:
        raise InputError(f"--good {good} and --bad {bad} are different flavours ({g.flavour}, {b.flavour})")
    if not g < b:
        raise InputError(f"--good {good} ({g.release}) must be older than --bad {bad} ({b.release})")
    if explicit:
        ordered = sorted({kern.resolve(s, available) for s in explicit})
        for k, name in ((g, good), (b, bad)):
            if k not in ordered:
                raise InputError(f"--kernel: the list must include {name} ({k.release})")
        return [k for k in ordered if g <= k <= b]
    return [k for k in available if k.flavour == g.flavour and g <= k <= b]


def verdict(board: Board, k: kern.DebianKernel, scenario: str, out: Path) -> tuple[str, float, bool, str, list[str]]:
    """(verdict, seconds, cached, log, diagnostics) of one scenario on one kernel, cached."""
    entry = _verdict_entry(board, k, scenario)
    if entry.exists():
        d = json.loads(entry.read_text())
        return d["verdict"], d["seconds"], True, d["log"], d["diagnostics"]
    start = time.monotonic()
    result = runner.run(board, [k.spec], [scenario], out / k.release, jobs=1)
    kr = result.kernels[0]
    scen = kr.scenarios[0]
    v = kr.verdict_of(scenario)
    secs = time.monotonic() - start
    log = kr.console_log
    if not v.cannot_say:  # the machine's fault, maybe, not the kernel's: tried again next time
        atomic_write(entry, json.dumps({"verdict": v, "seconds": secs, "log": log,
                                        "diagnostics": scen.diagnostics}) + "\n")
    return v, secs, False, log, scen.diagnostics


def compile_watch(watch: str | None) -> re.Pattern | None:
    """``--watch``'s regex, or a one-line InputError."""
    if watch is None:
        return None
    try:
        return re.compile(watch)
    except re.error as exc:
        raise InputError(f"--watch {watch!r}: not a regular expression ({exc})") from None


def observe(verdict_: str, diagnostics: list[str], watch: re.Pattern | None) -> str:
    """What a step is compared by: the verdict, or every match of ``watch`` in the diagnostics."""
    if watch is None:
        return verdict_
    seen = []
    for line in diagnostics:
        for m in watch.finditer(line):
            seen.append(m.group(1) if watch.groups else m.group(0))
    if seen:
        return " | ".join(dict.fromkeys(seen))
    return f"nothing matched ({verdict_})"


def bisect(board: Board, scenario: str, good: str, bad: str, out: Path,
           explicit: list[str] | None = None, watch: str | None = None) -> Bisection:
    """Run the bisection; every step's result lands in ``out/bisect.json``.

    ``watch``: compare what the scenario saw (the matches of this regex in its
    diagnostics) instead of its verdict.
    """
    for s in (good, bad):
        parse_spec(s)
    pattern = compile_watch(watch)
    runner.select(board, None, [scenario])
    ks = candidates(good, bad, explicit)
    bis = Bisection(board=board.name, scenario=scenario, good=good, bad=bad,
                    candidates=[k.release for k in ks], watch=watch)
    start = time.monotonic()
    usable_dir(out, "output directory")
    tried: dict[int, bool] = {}

    def test(i: int) -> bool:
        k = ks[i]
        with progress.step(f"bisect: {scenario} on {k.release}"):
            v, secs, cached, log, diags = verdict(board, k, scenario, out)
        seen = observe(v, diags, pattern)
        if i == 0:
            bis.reference = seen
        differs = seen != bis.reference
        bis.steps.append(Step(kernel=k.spec, release=k.release, verdict=v, observed=seen, differs=differs,
                              seconds=round(secs, 1), cached=cached, log=log, diagnostics=diags))
        bis.boots += 0 if cached else 1
        tried[i] = differs
        atomic_write(out / "bisect.json", json.dumps(bis.to_json(), indent=2) + "\n")
        return differs

    test(0)
    lo, hi = 1, len(ks) - 1  # the answer is in [lo, hi]; ks[hi] (bad) is assumed to differ
    while lo < hi:
        mid = (lo + hi) // 2
        if test(mid):
            hi = mid
        else:
            lo = mid + 1
    if hi not in tried:
        test(hi)  # the search landed on bad without booting it: confirm
    bis.first_different = ks[hi].release if tried.get(hi) else None
    bis.seconds = round(time.monotonic() - start, 1)
    atomic_write(out / "bisect.json", json.dumps(bis.to_json(), indent=2) + "\n")
    from . import reports

    reports.write_bisect(bis, out)
    return bis


# --------------------------------------------------------------------------- git bisect run

#: `git bisect run` exit codes (GOOD, BAD, SKIP: anything from 1 to 127 but 125 means bad) and
#: which verdict gives which: msiforge/verdict.py.
__all__ = ["GOOD", "BAD", "SKIP", "bisect", "bisect_run", "bisect_series", "bisect_run_command"]


def bisect_run(board: Board, scenario: str, tree: Path, out: Path, fault: str | None = None) -> tuple[int, str]:
    """Test the kernel tree as checked out: (git bisect exit code, one-line reason).

    A kernel or module that does not build, a boot that hangs before init and
    a QEMU that dies are 125 (skip): they say nothing about the commit.  A
    panic, oops or WARN during the scenario, and a failing scenario, are bad.
    """
    from .errors import BuildError

    try:
        result = runner.run(board, [f"tree:{tree}"], [scenario], out, fault=fault, jobs=1)
    except BuildError as exc:
        return SKIP, f"skip (125): the kernel does not build: {exc}"
    k = result.kernels[0]
    v = k.verdict_of(scenario)
    if v.bisect_code == GOOD:
        return GOOD, f"good (0): {scenario} passed on {k.release}"
    if v.bisect_code == SKIP:
        return SKIP, f"skip (125): {v}: {k.detail}"
    return BAD, f"bad (1): {scenario}: {v} on {k.release}; log: {k.console_log}"


def bisect_run_command(board: Board, scenario: str, tree: Path) -> list[str]:
    """The `git bisect run` command line; it runs in the kernel tree, so every path in it is absolute."""
    import sys

    path = Path(board.path)
    where = str(path.resolve()) if path.is_file() else board.name  # a file, or a built-in board's name
    return [sys.executable, "-m", "msiforge.cli", "bisect-run", "--board", where, "--scenario", scenario,
            "--tree", str(tree.resolve())]


def bisect_series(board: Board, scenario: str, spec: str, work: Path) -> tuple[str | None, str]:
    """Bisect a generated patch series with `git bisect run` and `msiforge bisect-run`.

    ``spec`` is ``source:X.Y+SERIES``.  The series is checked out in a scratch
    clone under ``work``; `git bisect` walks it from the pristine source
    (good) to the series tip (bad).  Returns (first bad commit or None, git's report).
    """
    import subprocess

    from . import source_kernels

    ks = parse_spec(spec)
    if ks.kind != "source" or not ks.patch_series:
        raise InputError(f"--series {spec!r}: a series bisect needs source:X.Y+SERIES, e.g. source:6.12+pci-ims")
    if ks.in_tree:
        raise InputError(f"--series {spec!r}: a series bisect builds each commit as a tree: kernel, whose "
                         "drivers are out of tree; bisect the series without +in-tree")
    runner.select(board, None, [scenario])
    tip = source_kernels.target(ks).commit
    base = source_kernels.pristine(f"{ks.major}.{ks.minor}")
    tree = work / "linux"
    usable_dir(work, "output directory")

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, check=False)

    subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", str(base.tree), str(tree)], check=True)
    git("checkout", "-q", "-b", "series", tip)
    cmd = bisect_run_command(board, scenario, tree)
    # git bisect takes the tip as bad without testing it: make sure it is.
    with progress.step(f"test the series tip {tip[:12]}"):
        at_tip = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if at_tip.returncode != BAD:
        return None, f"the series tip is not bad, nothing to bisect:\n{at_tip.stderr.strip()}\n"
    git("bisect", "start", tip, base.commit)
    with progress.step(f"git bisect run over {ks.patch_series} on {base.package} (one kernel build per step)"):
        out = git("bisect", "run", *cmd)
    report = out.stdout + out.stderr
    git("bisect", "reset")
    first = None
    for line in out.stdout.splitlines():
        if line.endswith(" is the first bad commit"):
            first = line.split()[0]
    return first, report
