"""Progress on long steps: a live spinner on a terminal, one line per finished step always."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from rich.console import Console
from rich.status import Status

console = Console(stderr=True, highlight=False, soft_wrap=True)
_live = True
#: The live spinner shown now, if any: rich shows one at a time, so a step that runs beside
#: another (a module build beside a guest's resume) prints only its closing line.
_shown: list[Status] = []
_shown_lock = threading.Lock()


def live(enabled: bool) -> None:
    """Turn the live spinner on or off (off while several steps run at once)."""
    global _live
    _live = enabled


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    """Show ``title`` with a spinner while the block runs, then a ✓/✗ line with its duration."""
    start = time.monotonic()
    status: Status | None = None
    if console.is_terminal and _live:
        with _shown_lock:
            if not _shown:
                status = console.status(title)
                _shown.append(status)
                status.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        if status:
            with _shown_lock:
                status.stop()
                _shown.remove(status)
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        console.print(f"{mark} {title} [dim]({time.monotonic() - start:.1f} s)[/]")


def info(text: str) -> None:
    console.print(text)
