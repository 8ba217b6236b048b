"""`msiforge run --watch`: an edit loop.  Run, then run again each time the board or a template changes.

A kernel developer's loop is: change the driver template (or the board), see
the verdict.  The watcher runs once, then polls the board file and every file
under the templates (size and modification time, twice a second) and reruns
when any of them changed, printing the verdict table each time.  A board that
no longer validates is one line, and the watcher waits for the next change;
it never exits on bad input.  Ctrl-C ends it with the last run's status.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from . import progress
from .errors import InputError

#: Seconds between two looks at the watched files.
INTERVAL = 0.5


def template_files() -> list[Path]:
    """Every file of the templates msiforge renders (the driver, the test module, the guest script)."""
    root = Path(str(resources.files("msiforge.templates")))
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def snapshot(paths: list[Path]) -> dict[Path, tuple[int, int] | None]:
    """Size and modification time of each path (None: it does not exist now)."""
    out: dict[Path, tuple[int, int] | None] = {}
    for p in paths:
        try:
            st = p.stat()
            out[p] = (st.st_size, st.st_mtime_ns)
        except OSError:
            out[p] = None
    return out


def changed(before: dict, after: dict) -> list[Path]:
    """The paths whose snapshot differs (added, removed or rewritten)."""
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


def loop(run_once: Callable[[int], int], watched: Callable[[], list[Path]], runs: int | None = None,
         interval: float = INTERVAL, sleep: Callable[[float], None] = time.sleep) -> int:
    """Call ``run_once(n)`` (n = 1, 2, ...) now and after each change of the ``watched()`` files
    (asked for once per run).

    ``run_once`` returns the run's exit status; an InputError it raises (a
    board that no longer validates) is printed as one line and counts as
    status 2.  With ``runs`` the loop ends after that many runs (the tests);
    else at Ctrl-C.  Returns the last run's status.
    """
    status, n = 2, 0
    try:
        while True:
            paths = watched()  # once per run: the polls below only stat them
            before = snapshot(paths)
            n += 1
            try:
                status = run_once(n)
            except InputError as exc:
                progress.console.print(f"msiforge: error: {exc}", markup=False)
                status = 2
            if runs is not None and n >= runs:
                return status
            progress.info(f"[dim]watching {len(before)} file(s) (the board and the templates); Ctrl-C ends[/]")
            while not (what := changed(before, snapshot(paths))):
                sleep(interval)
            shown = ", ".join(str(p) for p in what[:3]) + (f" (+{len(what) - 3} more)" if len(what) > 3 else "")
            progress.info(f"changed: {shown}")
    except KeyboardInterrupt:
        return status
