"""Progress on long steps: a live spinner on a terminal, one line per finished step always."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console
from rich.status import Status

console = Console(stderr=True, highlight=False, soft_wrap=True)
_live = True


def live(enabled: bool) -> None:
    """Turn the live spinner on or off (off while several steps run at once)."""
    global _live
    _live = enabled


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    """Show ``title`` with a spinner while the block runs, then a ✓/✗ line with its duration."""
    start = time.monotonic()
    status: Status | None = console.status(title) if console.is_terminal and _live else None
    if status:
        status.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        if status:
            status.stop()
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        console.print(f"{mark} {title} [dim]({time.monotonic() - start:.1f} s)[/]")


def info(text: str) -> None:
    console.print(text)
