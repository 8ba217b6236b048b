"""The kernel's scripts/checkpatch.pl, taken from Debian's linux-source package.

Only checkpatch.pl and its data files are extracted, once per kernel series,
into the cache.  6.12's is the default; code for a newer kernel is checked
with that kernel's (7.3's prefers ``kzalloc_obj()``, say).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .. import hostprogs
from ..cache import cache_root, ensure_entry
from ..debs import download
from ..errors import EnvironmentProblem

#: The series whose checkpatch.pl is used when none is asked for.
DEFAULT_SERIES = "6.12"
_FILES = ("scripts/checkpatch.pl", "scripts/spelling.txt", "scripts/const_structs.checkpatch")
_TOTAL = re.compile(r"total: (?P<e>\d+) errors, (?P<w>\d+) warnings, (?:(?P<c>\d+) checks, )?(?P<l>\d+) lines checked")


@dataclass
class Report:
    """checkpatch's verdict on one file."""

    path: Path
    errors: int
    warnings: int
    checks: int
    output: str


def _extract(tmp: Path, package: str) -> None:
    from ..source_kernels import source_candidate

    debs = download([source_candidate(package)], tmp)
    fsys = subprocess.run([hostprogs.require("dpkg-deb"), "--fsys-tarfile", str(debs[0])],
                          capture_output=True, check=True).stdout
    outer = tmp / "fsys.tar"
    outer.write_bytes(fsys)
    # Members are copied out by content (extractfile), never by the archive's own paths and
    # modes: safe without tarfile's extraction filters (Debian 12's Python 3.11.2 has none).
    inner_path = tmp / "linux-source.tar.xz"
    with tarfile.open(outer) as tf:
        inner = next(m for m in tf.getmembers() if m.isfile() and m.name.endswith(".tar.xz"))
        with tf.extractfile(inner) as fin, open(inner_path, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    found = 0
    with tarfile.open(inner_path, "r:xz") as src:
        for member in src:
            rel = member.name.split("/", 1)[-1]
            if rel in _FILES and member.isfile():
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with src.extractfile(member) as fin:
                    dest.write_bytes(fin.read())
                dest.chmod(0o755 if rel.endswith(".pl") else 0o644)
                found += 1
                if found == len(_FILES):
                    break
    if found != len(_FILES):
        raise EnvironmentProblem(f"{debs[0].name}: holds {found} of {', '.join(_FILES)}")
    for f in [*debs, outer, inner_path]:
        f.unlink()
    for d in sorted(tmp.iterdir()):
        if d.name != "scripts" and d.is_dir():
            shutil.rmtree(d)


def script(series: str = DEFAULT_SERIES) -> Path:
    """Path of the kernel series' checkpatch.pl (fetched into the cache on first use)."""
    package = f"linux-source-{series}"
    entry = ensure_entry(cache_root() / "tools" / package, lambda tmp: _extract(tmp, package))
    return entry / "scripts" / "checkpatch.pl"


def check_file(path: Path, series: str = DEFAULT_SERIES) -> Report:
    """Run the series' ``checkpatch.pl --strict --no-tree -f`` on one file."""
    cp = script(series)
    proc = subprocess.run(["perl", str(cp), "--strict", "--no-tree", "--show-types", "-f", str(path)],
                          capture_output=True, text=True, check=False, cwd=cp.parent.parent)
    m = _TOTAL.search(proc.stdout)
    if not m:
        raise EnvironmentProblem(f"checkpatch.pl gave no summary for {path}: {proc.stdout[-300:]}{proc.stderr[-300:]}")
    return Report(path=path, errors=int(m["e"]), warnings=int(m["w"]), checks=int(m["c"] or 0), output=proc.stdout)


def check_files(paths: list[Path], jobs: int | None = None, series: str = DEFAULT_SERIES) -> list[Report]:
    """``check_file`` on many files, one checkpatch.pl per core at a time (perl is slow: ~1 s a file)."""
    import concurrent.futures

    script(series)  # fetch once, before the workers race for it
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda p: check_file(p, series), paths))
