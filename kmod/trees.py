"""Module trees kept between runs, so that an edit rebuilds only what it changed.

A developer's loop regenerates the board's tree after each edit; building
that fresh tree compiles every module again (four of them for the default
board: 3.8 s here), although a one-line template edit changed one or two
files.  So each (kernel, toolchain, board) has one build tree in the cache
(``$MSIFORGE_CACHE/modtrees/``), and a build first brings it up to date with
the generated tree: a file whose content changed is rewritten (a new mtime,
which is what Kbuild looks at), an unchanged one is left alone with its
objects.  Kbuild's own dependency files (``.*.cmd``: the command line and
every header a file included) decide the rest, as in any kernel tree.

What makes a kept tree untrustworthy, it is emptied for:

- a build that did not succeed: killed or interrupted (an object it was
  writing may look newer than its source), or failed (a W=1 warning fails
  the build but leaves its object, which a rebuild would not compile again,
  so the warning would not be seen).  A marker (``.building``) is written
  before Kbuild starts and removed only after it succeeds; a tree found with
  it is emptied.
- a different set of files (a device added or removed): the objects and
  ``.ko`` files of the old set would linger beside the new ones.

One build at a time uses a tree (a file lock).  When another process holds
it, the caller builds a fresh copy instead of waiting: two runs of the same
board on one kernel at once are rare, and waiting would serialise them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: How many kept trees the cache holds (least recently used go first); each is a few MB.
KEPT = 16
_BUILDING = ".building"
_SOURCES = ".sources"


def slot(cache_dir: Path, release: str, build_dir: Path, arch: str, toolchain_key: str, board: str) -> Path:
    """The kept tree of one board's modules for one kernel build directory and toolchain."""
    ident = "\0".join([release, str(build_dir.resolve()), arch, toolchain_key, board])
    return cache_dir / "modtrees" / f"{release}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"


def _same(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()
    except FileNotFoundError:
        return False


def sync(src: Path, kept: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """Make ``kept``'s sources those of ``src`` (files named in ``skip`` left out); return what changed.

    Only files whose content differs are written (through a temporary
    sibling and a rename); a tree whose file set differs, or whose last
    build did not succeed, is emptied first.
    """
    names = sorted(f.name for f in src.iterdir() if f.is_file() and f.name not in skip)
    listing = "\n".join(names) + "\n"
    record = kept / _SOURCES
    if (kept / _BUILDING).exists() or not record.is_file() or record.read_text() != listing:
        shutil.rmtree(kept, ignore_errors=True)
    kept.mkdir(parents=True, exist_ok=True)
    changed = []
    for name in names:
        if _same(src / name, kept / name):
            continue
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=kept)
        with os.fdopen(fd, "wb") as fh:
            fh.write((src / name).read_bytes())
        os.replace(tmp, kept / name)
        changed.append(name)
    record.write_text(listing)
    return changed


@contextlib.contextmanager
def building(kept: Path) -> Iterator[None]:
    """Mark ``kept`` as being built for the duration: a tree left marked is emptied by the next sync.

    The mark goes only when the build succeeds.  After a failure it stays,
    even for a compile error (whose target Kbuild deletes): W=1 warnings fail
    a build but leave their object, and a rebuild that found it up to date
    would not print them again.
    """
    (kept / _BUILDING).write_text("")
    yield
    (kept / _BUILDING).unlink()


@contextlib.contextmanager
def claimed(kept: Path) -> Iterator[bool]:
    """Hold ``kept``'s lock if no other process does: True, or False (build elsewhere, do not wait)."""
    kept.parent.mkdir(parents=True, exist_ok=True)
    with open(kept.with_name(kept.name + ".lock"), "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            os.utime(fh.fileno())  # its last use, for prune()
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def prune(cache_dir: Path, keep: int = KEPT) -> list[Path]:
    """Remove all but the ``keep`` most recently used kept trees (those no build holds); return them."""
    root = cache_dir / "modtrees"
    locks = sorted(root.glob("*.lock"), key=lambda p: p.stat().st_mtime_ns, reverse=True) if root.is_dir() else []
    removed = []
    for lock in locks[keep:]:
        tree = lock.with_suffix("")
        with open(lock, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(tree, ignore_errors=True)
            lock.unlink()
        removed.append(tree)
    return removed
