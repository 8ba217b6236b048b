"""The download and build cache: location, locks and atomic entries.

An entry is a directory that appears only complete: it is built in a
temporary sibling and renamed into place, under an exclusive file lock, so
that two msiforge processes never build the same entry twice and a killed
process never leaves an entry that a later run would trust.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


_usable: set[Path] = set()


def usable_dir(path: Path, what: str) -> Path:
    """Make ``path`` (and its parents) and prove it writable, or raise a one-line InputError naming it.

    ``what`` says which directory it is ("output directory", "cache directory
    (MSIFORGE_CACHE)").  Checked once per process and path.
    """
    from .errors import InputError

    if path in _usable:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".msiforge-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError(f"{what} {path}: cannot be created or written ({reason})") from None
    _usable.add(path)
    return path


def cache_root() -> Path:
    """The cache directory: $MSIFORGE_CACHE, else $XDG_CACHE_HOME/msiforge, else ~/.cache/msiforge."""
    env = os.environ.get("MSIFORGE_CACHE")
    if env:
        return usable_dir(Path(env), "cache directory (MSIFORGE_CACHE)")
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return usable_dir(Path(xdg) / "msiforge", "cache directory")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a lock file beside the entry)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_entry(entry: Path, build: Callable[[Path], None], marker: str = ".complete") -> Path:
    """Return ``entry``, building it first with ``build(tmpdir)`` if it is not complete.

    ``build`` fills a fresh temporary directory; it is renamed to ``entry``
    only when ``build`` returns.  A marker file records completeness, so an
    entry without it (from an older, interrupted layout) is rebuilt.
    """
    if (entry / marker).exists():
        return entry
    entry.parent.mkdir(parents=True, exist_ok=True)
    with locked(entry.with_name(entry.name + ".lock")):
        if (entry / marker).exists():
            return entry  # another process built it while we waited
        # Under the lock, any temporary sibling is left over from a killed build.
        for stale in entry.parent.glob(f".{entry.name}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
        try:
            build(tmp)
            (tmp / marker).write_text("ok\n")
            if entry.exists():
                shutil.rmtree(entry)
            os.rename(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return entry


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write a file via a temporary sibling and rename, so readers never see half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
