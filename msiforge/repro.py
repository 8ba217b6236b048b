"""`msiforge repro RUN_DIR [--kernel R] -o FILE.tar.gz`: one kernel's run, packed to rerun elsewhere.

The bundle is what a syzbot report gives a kernel developer, for one
(board, kernel) of a run:

- ``board.yaml``: the board exactly as the run read it;
- ``kernel.json``: the spec that names exactly this kernel, its release, its
  suite and Debian version with each package's SHA256 (or the linux-source
  tree and patch series it was built from), the compiler of its modules;
- ``config``: the kernel's .config;
- ``gen/``: the generated sources (drivers, test modules, guest script);
- ``cmdline``: the QEMU command line; ``console.log``, ``events.json``,
  ``ktap.txt``: what the run saw;
- ``expected.json``: the verdicts to reproduce;
- ``repro.sh``: reruns that kernel's boot and scenarios with msiforge (the
  same scenarios, the same injected fault) and says whether the verdict is
  the same.  Exit 0: reproduced; 1: another verdict; 2: it could not rerun
  (another kernel resolved, msiforge missing).

The archive is written to a temporary name and renamed.
"""

from __future__ import annotations

import io
import json
import shlex
import tarfile
import tempfile
from pathlib import Path

from . import reparse
from .cache import cache_root
from .errors import InputError
from .kspec import parse_spec
from .results import KernelResult, RunResult

REPRO_SH = """\
#!/bin/sh
# Reproduce: board {board}, kernel {release} ({spec}), expected verdict {verdict}.
# Usage: ./repro.sh [OUT_DIR]   (msiforge from $MSIFORGE, else from PATH)
set -u
here=$(cd "$(dirname "$0")" && pwd)
msiforge=${{MSIFORGE:-msiforge}}
out=${{1:-$here/rerun}}
command -v "$msiforge" >/dev/null 2>&1 || {{ echo "repro: $msiforge not found (set MSIFORGE)" >&2; exit 2; }}
rm -rf "$out"
"$msiforge" run "$here/board.yaml" --kernel {spec_q} {scenarios} {fault}--jobs 1 --out "$out"
"$msiforge" repro --check "$here/expected.json" "$out"
"""


def _pick(result: RunResult, release: str | None) -> KernelResult:
    if release is None:
        failing = [k for k in result.kernels if not k.passed]
        if len(result.kernels) == 1 or failing:
            return (failing or result.kernels)[0]
        raise InputError(f"{result.run_dir}: every kernel passed; say which with --kernel RELEASE "
                         f"({', '.join(k.release for k in result.kernels)})")
    for k in result.kernels:
        if release in (k.release, k.spec):
            return k
    raise InputError(f"--kernel {release}: not in {result.run_dir} "
                     f"(it has {', '.join(k.release for k in result.kernels)})")


def kernel_facts(k: KernelResult, plan: dict, board_file: Path) -> tuple[dict, bytes | None]:
    """What names this kernel exactly, and its .config (from the cache, fetching nothing new)."""
    from . import kernels as kern

    facts = {"spec": k.spec, "exact_spec": k.spec, "release": k.release, "arch": plan.get("arch", "x86_64"),
             "suite": plan.get("suite", ""), "compiler": (plan.get("compiler") or {}).get("value", ""),
             "patch_series": plan.get("patch_series")}
    config = None
    spec = parse_spec(k.spec)
    if spec.kind == "debian":
        entry = cache_root() / "kernels" / "debian" / k.release
        meta = json.loads((entry / "meta.json").read_text()) if (entry / "meta.json").is_file() else {}
        facts.update({"debian_version": meta.get("version", ""), "packages_sha256": meta.get("packages", {})})
        dk = next((d for d in kern.index() if d.release == k.release), None)
        if dk is not None:
            facts["exact_spec"] = dk.spec
        cfg = entry / "root" / "usr/src" / f"linux-headers-{k.release}" / ".config"
        config = cfg.read_bytes() if cfg.is_file() else None
    else:
        from . import runner

        from .board import load_board

        board = load_board(str(board_file)) if board_file.is_file() else None
        built = runner.obtain(k.spec, [], facts["arch"], board)  # cached: the run built it
        if spec.kind == "source":
            from . import source_kernels

            src = source_kernels.pristine(f"{spec.major}.{spec.minor}")
            meta = json.loads((src.tree.parent / "meta.json").read_text())
            facts["source"] = {"package": src.package, "version": src.version, "sha256": meta.get("sha256", ""),
                               "pristine_commit": src.commit}
        cfg = built.build_dir / ".config"
        config = cfg.read_bytes() if cfg.is_file() else None
        facts["vmlinuz"] = str(built.vmlinuz)
    return facts, config


def bundle(run_dir: Path, release: str | None, out: Path) -> Path:
    """Write the reproducer of one kernel of ``run_dir`` to ``out`` (a .tar.gz)."""
    result, _ = reparse.reparse(run_dir)
    k = _pick(result, release)
    kdir = Path(k.directory)
    plans = json.loads((run_dir / "plan.json").read_text()) if (run_dir / "plan.json").is_file() else {}
    plan = next((p for p in plans.get("kernels", []) if p["release"] == k.release), {})
    if not (run_dir / "board.yaml").is_file():
        raise InputError(f"{run_dir}: no board.yaml (a run of an older msiforge): rerun it to bundle it")
    facts, config = kernel_facts(k, plan, run_dir / "board.yaml")
    board = k.board or result.board
    scenarios = " ".join(f"--scenario {shlex.quote(s.name)}" for s in k.scenarios)
    fault = f"--guest-fault {shlex.quote(result.fault)} " if result.fault else ""
    expected = {"board": board, "release": k.release, "spec": facts["exact_spec"], "verdict": k.verdict,
                "scenarios": {s.name: s.status for s in k.scenarios}, "fault": result.fault,
                "run_id": result.run_id}
    script = REPRO_SH.format(board=board, release=k.release, spec=facts["exact_spec"], verdict=k.verdict,
                             spec_q=shlex.quote(facts["exact_spec"]), scenarios=scenarios, fault=fault)
    top = f"msiforge-repro-{board}-{k.release}"
    members: list[tuple[str, bytes, int]] = [
        ("board.yaml", (run_dir / "board.yaml").read_bytes(), 0o644),
        ("kernel.json", (json.dumps(facts, indent=2) + "\n").encode(), 0o644),
        ("expected.json", (json.dumps(expected, indent=2) + "\n").encode(), 0o644),
        ("repro.sh", script.encode(), 0o755),
    ]
    if config is not None:
        members.append(("config", config, 0o644))
    for name in ("cmdline", "console.log", "events.json", "ktap.txt"):
        if (kdir / name).is_file():
            members.append((name, (kdir / name).read_bytes(), 0o644))
    gen = run_dir / "gen" / k.release
    if gen.is_dir():
        for f in sorted(p for p in gen.rglob("*") if p.is_file()):
            members.append((f"gen/{f.relative_to(gen)}", f.read_bytes(), 0o755 if f.name == "run.sh" else 0o644))
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with open(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w:gz") as tar:
            for name, data, mode in members:
                info = tarfile.TarInfo(f"{top}/{name}")
                info.size, info.mode = len(data), mode
                tar.addfile(info, io.BytesIO(data))
        tmp.rename(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def check(expected_file: Path, rerun: Path) -> tuple[int, str]:
    """Compare a rerun with a bundle's expected verdicts: (exit status, what to say)."""
    expected = json.loads(expected_file.read_text())
    if not (rerun / "results.json").is_file():
        return 2, f"repro: the rerun wrote no results ({rerun})"
    result, _ = reparse.reparse(rerun)
    if not result.kernels:
        return 2, "repro: the rerun tested no kernel"
    k = result.kernels[0]
    if k.release != expected["release"]:
        return 2, f"repro: {expected['spec']} is {k.release} here, not {expected['release']}: another kernel"
    got = {s.name: str(s.status) for s in k.scenarios}
    if k.verdict == expected["verdict"] and got == expected["scenarios"]:
        return 0, f"repro: reproduced: {k.release} {k.verdict} (" + \
            ", ".join(f"{n} {v}" for n, v in got.items()) + ")"
    return 1, (f"repro: NOT reproduced: {k.release} {k.verdict}, expected {expected['verdict']}; scenarios "
               f"{got}, expected {expected['scenarios']}")
