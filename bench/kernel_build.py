"""Measure source kernel builds: cold (fresh O= dir, ccache disabled) and incremental (one-line change).

Usage: .venv/bin/python bench/kernel_build.py [SPEC]   (default source:6.12)

The cold build uses a fresh build slot with ccache disabled, so it is what a
fresh machine pays.  The incremental build then commits a one-line change to
kernel/irq/msi.c (what a one-line template change of a patch series does)
and rebuilds in the same slot.  The bench slot is removed afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time

from msiforge import source_kernels
from msiforge.cache import cache_root

#: The issue's budgets, in seconds.
COLD_BUDGET, INCREMENTAL_BUDGET = 600, 60


def _one_line_change(src_clone) -> str:
    """Commit a one-line change on top of the slot's checkout; return the new commit."""
    git = ["git", "-C", str(src_clone)]
    path = src_clone / "kernel" / "irq" / "msi.c"
    text = path.read_text()
    path.write_text(text.replace("#include <linux/slab.h>", "#include <linux/slab.h>\n/* msiforge bench */", 1))
    env = dict(os.environ, **source_kernels.PRISTINE_IDENTITY)
    subprocess.run([*git, "commit", "-qam", "bench: one-line change"], check=True, env=env)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--json"]
    spec = args[0] if args else "source:6.12"
    os.environ.setdefault("MSIFORGE_CACHE", os.path.expanduser("~/.cache/msiforge"))
    base = source_kernels.target(spec)
    tgt = dataclasses.replace(base, spec=f"{spec} (bench)", slot=f"bench-{os.getpid()}")
    slot_dirs = list((cache_root() / "kbuild").glob(f"{tgt.slot}-*"))
    assert not slot_dirs, slot_dirs
    os.environ["CCACHE_DISABLE"] = "1"
    try:
        start = time.monotonic()
        kernel = source_kernels.build_target(tgt)
        cold = time.monotonic() - start
        del os.environ["CCACHE_DISABLE"]
        slot = kernel.build_dir.parent
        changed = dataclasses.replace(tgt, spec=f"{spec} (bench, one-line change)",
                                      commit=_one_line_change(slot / "src"))
        start = time.monotonic()
        source_kernels.build_target(changed)
        incremental = time.monotonic() - start
    finally:
        os.environ.pop("CCACHE_DISABLE", None)
        for d in (cache_root() / "kbuild").glob(f"{tgt.slot}-*"):
            shutil.rmtree(d, ignore_errors=True) if d.is_dir() else d.unlink()
    if "--json" in sys.argv:
        print(json.dumps({"spec": spec, "cold_s": round(cold, 1), "incremental_s": round(incremental, 1),
                          "cold_budget_s": COLD_BUDGET, "incremental_budget_s": INCREMENTAL_BUDGET}))
    else:
        print(f"{spec}: cold build {cold:.0f} s (budget {COLD_BUDGET} s), "
              f"incremental after a one-line change {incremental:.1f} s (budget {INCREMENTAL_BUDGET} s), "
              f"{os.cpu_count()} CPUs, nice 19")
    return 0 if cold <= COLD_BUDGET and incremental <= INCREMENTAL_BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
