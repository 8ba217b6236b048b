"""A newer QEMU than the host's, for the guests the host's cannot run well: unpacked into the cache, never installed.

Debian 12's QEMU is 7.2.  Under TCG with ``-icount`` its vCPUs take turns
without fairness: a vCPU that spins may keep the whole instruction budget.
Debian's 6.1 kernels bring CPU1 up with CPU0 looping in ``do_boot_cpu``'s
wait, so under 7.2 CPU1 never runs and the boot stalls; those kernels had to
run on real-time clocks, where every edu DMA costs 100 ms of real time.  QEMU
fixed it in 8.1 (commit 83ecdb18eb, "accel/tcg: ensure fairness with
icount"; docs/research/icount-6.1-ap-wait.md).  bookworm-backports carries
QEMU 10.0 built for Debian 12, so its packages run on the host's libraries:
msiforge downloads them through its own apt state (``suites.py``; each file
checked against the index), unpacks them into ``$MSIFORGE_CACHE/qemu/`` and
runs the binary through a small wrapper that points it at its own modules
and firmware.  A boot uses it only when the host's QEMU cannot boot the
kernel under ``-icount`` and this one can (``plan.boot_plan`` asks both).
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from .. import arches, debs, progress, suites
from ..kernels import version_key
from ..cache import cache_root, ensure_entry
from ..errors import EnvironmentProblem

#: Where the newer QEMU comes from: a suite built for the host's Debian release.
SUITE = "bookworm-backports"
#: What every arch's newer QEMU needs beside its own system package (the arch record names that one).
_COMMON_PACKAGES = ("qemu-system-common", "qemu-system-data", "seabios")
#: Bump when the entry's layout (the wrapper) changes.
_LAYOUT = 1

_WRAPPER = """#!/bin/sh
# msiforge: QEMU {version} from {suite}, unpacked here; its own modules and firmware first.
d=${{0%/bin/*}}
QEMU_MODULE_DIR="$d/root/usr/lib/x86_64-linux-gnu/qemu"
export QEMU_MODULE_DIR
exec "$d/root/usr/bin/{binary}" -L "$d/root/usr/share/qemu" -L "$d/root/usr/share/seabios" "$@"
"""


def available(arch: str) -> bool:
    """Whether the arch record names a newer QEMU package (verified per arch)."""
    return bool(arches.get(arch).newer_qemu)


def _candidates(arch: str) -> list[debs.Candidate]:
    suite = suites.get(SUITE)
    records = suites.packages(suite)
    out = []
    for name in (arches.get(arch).newer_qemu, *_COMMON_PACKAGES):
        found = [r for r in records if r["Package"] == name and r["Architecture"] in ("amd64", "all")]
        if not found:
            raise EnvironmentProblem(f"{SUITE} has no {name}: the newer QEMU cannot be fetched")
        rec = max(found, key=lambda r: version_key(r["Version"]))
        out.append(debs.Candidate(name, rec["Version"], rec["SHA256"], rec, SUITE))
    return out


def binary(arch: str) -> Path:
    """The newer QEMU for ``arch`` (its wrapper), fetched and unpacked first when the cache has none."""
    rec = arches.get(arch)
    cands = _candidates(arch)
    version = cands[0].version.split(":")[-1]
    entry = cache_root() / "qemu" / f"{rec.newer_qemu}-{version}-{_LAYOUT}"
    wrapper = entry / "bin" / rec.qemu
    if (entry / ".complete").is_file():
        return wrapper

    def build(tmp: Path) -> None:
        dl = tmp / "debs"
        dl.mkdir()
        for deb in debs.download(cands, dl):
            debs.unpack(deb, tmp / "root")
        (tmp / "bin").mkdir()
        w = tmp / "bin" / rec.qemu
        w.write_text(_WRAPPER.format(version=version, suite=SUITE, binary=rec.qemu))
        w.chmod(0o755)
        for deb in dl.iterdir():
            deb.unlink()
        dl.rmdir()
        # Its libraries are the host's (Debian 12): a missing one is a one-line error, not a failed boot.
        proc = subprocess.run([str(w), "--version"], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            line = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise EnvironmentProblem(f"QEMU {version} from {SUITE} does not run here: {line}")

    with progress.step(f"fetch QEMU {version} from {SUITE} (once, cached)"):
        ensure_entry(entry, build)
    return wrapper


@functools.lru_cache(maxsize=8)
def version(path: str | Path) -> str:
    """What a QEMU binary says its version is (``QEMU emulator version X``), "" if it does not say (asked once)."""
    proc = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=False)
    first = proc.stdout.splitlines()[0] if proc.stdout else ""
    return first.removeprefix("QEMU emulator version ").split()[0] if first else ""
