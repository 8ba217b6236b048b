"""Build generated module trees against a kernel with Kbuild (``W=1``).

Compiler diagnostics are mapped back to their origin: each message that
points into a generated file is annotated with the template it came from
(from the tree's ``manifest.json``).  Warnings are failures: generated code
must build warning-free.

A build may remember Kbuild's compiler probes between runs (``probes``,
kmod/probes.mk): a rebuild after a one-line edit then parses the kernel's
Makefile without starting the compiler 30 times first.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import arches, hostprogs
from ..errors import BuildError

#: The makefile that answers Kbuild's try-run from a probe file (make --eval, before the kernel's).
PROBES_MK = Path(__file__).with_name("probes.mk")

_DIAG = re.compile(r"^(?P<file>[^:\s]+\.[ch]):(?P<line>\d+):(?:(?P<col>\d+):)? (?P<kind>warning|error|note): (?P<msg>.*)$")


@dataclass
class BuildResult:
    """The modules built from one tree, and what the compiler said."""

    tree: Path
    modules: list[Path]
    log: str
    seconds: float


def annotate(output: str, tree: Path) -> tuple[list[str], list[str]]:
    """Return (errors, warnings) from compiler output, each naming file:line and template."""
    manifest = json.loads((tree / "manifest.json").read_text())
    files = manifest.get("files", {})
    errors, warnings = [], []
    for line in output.splitlines():
        m = _DIAG.match(line.strip())
        if not m or m["kind"] == "note":
            continue
        name = Path(m["file"]).name
        where = f"{tree / name}:{m['line']}" if name in files else f"{m['file']}:{m['line']}"
        origin = f" (generated from template {files[name]})" if name in files else ""
        text = f"{where}: {m['kind']}: {m['msg']}{origin}"
        (errors if m["kind"] == "error" else warnings).append(text)
    return errors, warnings


def probe_file(cache_dir: Path, build_dir: Path, arch: str, toolchain_ident: str) -> Path:
    """Where the compiler probes of one kernel build directory and toolchain are remembered.

    ``toolchain_ident`` must change with anything a probe's answer depends
    on besides its command line: the compiler and binutils binaries.
    """
    ident = "\0".join([str(build_dir.resolve()), arch, toolchain_ident])
    return cache_dir / "kbuild-probes" / f"{hashlib.sha256(ident.encode()).hexdigest()[:20]}.txt"


def _merge_probes(probes: Path, new: Path) -> None:
    """Add the answers of a successful build (``new``) to ``probes`` (atomically, under its lock)."""
    fresh = [ln for ln in new.read_text().splitlines() if ln[:2] in ("y ", "n ")] if new.is_file() else []
    if not fresh:
        return
    with open(probes.with_name(probes.name + ".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        known = probes.read_text().splitlines() if probes.is_file() else []
        lines = list(dict.fromkeys(known + fresh))
        fd, tmp = tempfile.mkstemp(prefix=f".{probes.name}.", dir=probes.parent)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        os.replace(tmp, probes)


def build(tree: Path, build_dir: Path, jobs: int | None = None, arch: str = "x86_64",
          toolchain=None, shown: Path | None = None, probes: Path | None = None) -> BuildResult:
    """Build the modules of ``tree`` against the kernel build directory ``build_dir``.

    ``arch`` is the kernel's board arch: other than x86_64, the modules are
    cross-built (ARCH=, CROSS_COMPILE= as for the kernel).  ``toolchain``
    (``toolchains.Toolchain``) is the kernel's own compiler: on the host, or
    in its build root; None builds with the host's (kernels built here).
    ``shown`` is where the user finds the sources (a copy of ``tree``, which
    is then a kept build tree, kmod/trees.py): build.log is written there too,
    and diagnostics name its files.  ``probes`` (``probe_file()``) remembers
    Kbuild's compiler probes: known answers are read from it, and what this
    build had to probe is added only when the build succeeded.

    Raises BuildError naming the first diagnostic (with file, line and
    template) on any error or warning, or on a failing make.
    """
    import time

    jobs = jobs or os.cpu_count() or 1
    tree = tree.resolve()  # Kbuild runs in the kernel's directory: M= must not be relative
    in_root = toolchain is not None and not toolchain.on_host
    cmd = ["make" if in_root else hostprogs.require("make"), "-s", f"-j{jobs}", "-C", str(build_dir),
           *arches.get(arch).make_vars, f"M={tree}", "W=1", "modules"]
    mounts = [_kernel_root(build_dir), tree]  # the whole kernel tree: its scripts/ and tools/ link into it
    new = None
    if probes is not None:
        probes.parent.mkdir(parents=True, exist_ok=True)
        new = probes.with_name(f".{probes.name}.{os.getpid()}.{time.monotonic_ns()}")
        cmd[1:1] = [f"--eval=include {PROBES_MK}", f"MSIFORGE_PROBES={probes}", f"MSIFORGE_PROBES_NEW={new}"]
        mounts += [probes.parent, PROBES_MK.parent]
    if in_root:
        cmd = toolchain.wrap(cmd, mounts)
    env = dict(os.environ, LC_ALL="C")
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        result = _outcome(proc, tree, shown or tree, time.monotonic() - start)
        if new is not None:
            _merge_probes(probes, new)  # only now: the build succeeded, warning-free
    finally:
        if new is not None:
            with contextlib.suppress(FileNotFoundError):
                new.unlink()
    return result


def _outcome(proc: subprocess.CompletedProcess, tree: Path, shown: Path, seconds: float) -> BuildResult:
    """The modules of a finished make, or BuildError naming its first diagnostic."""
    log = proc.stdout + proc.stderr
    for where in {tree, shown}:
        (where / "build.log").write_text(log)
    errors, warnings = annotate(log, shown)
    if errors or warnings or proc.returncode != 0:
        # Without a compiler diagnostic, the first line that is not make's own report says why.
        lines = [ln for ln in log.strip().splitlines() if not ln.startswith(("make", "  "))]
        first = (errors or warnings or lines[:1] or log.strip().splitlines()[-1:] or ["make failed"])[0]
        more = len(errors) + len(warnings) - 1
        extra = f" (+{more} more)" if more > 0 else ""
        if proc.returncode < 0:
            first = f"make was killed by signal {-proc.returncode}"
        raise BuildError(f"module build failed: {first}{extra}; log: {shown / 'build.log'}")
    modules = sorted(tree.glob("*.ko"))
    return BuildResult(tree=tree, modules=modules, log=log, seconds=seconds)


def _kernel_root(build_dir: Path) -> Path:
    """The top of an unpacked kernel package tree (above usr/src), or the build directory itself."""
    real = build_dir.resolve()
    return real.parents[2] if real.parent.name == "src" and real.parents[1].name == "usr" else real


def strip_for_guest(modules: list[Path], out_dir: Path, arch: str = "x86_64") -> list[Path]:
    """Copies of ``modules`` without debug information, for the guest's initramfs.

    The debug sections are most of a module (about 0.5 MB of 0.55 MB here);
    the guest need not unpack or load them.  The built modules keep them.
    """
    strip = arches.get(arch).strip
    out_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for ko in modules:
        dest = out_dir / ko.name
        proc = subprocess.run([hostprogs.require(strip), "--strip-debug", "-o", str(dest), str(ko)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BuildError(f"{strip} --strip-debug {ko.name}: {proc.stderr.strip()}")
        out.append(dest)
    return out
