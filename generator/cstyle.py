"""Kernel-style layout fixes applied to rendered C.

Templates substitute identifiers of varying length (``{{ p }}_alloc`` is
``ims0_alloc`` on one board and ``netdev_queue_alloc`` on another), so a
continuation line aligned by hand in the template is misaligned after
rendering.  ``align_continuations`` re-aligns every continuation line to the
innermost open parenthesis, as checkpatch.pl --strict expects.
"""

from __future__ import annotations

TAB = 8


def _columns(line: str) -> list[int]:
    """Display column (tabs expanded) of every character of ``line``."""
    cols, col = [], 0
    for ch in line:
        cols.append(col)
        col = (col // TAB + 1) * TAB if ch == "\t" else col + 1
    return cols


def _scan(line: str, stack: list[int], in_comment: bool) -> bool:
    """Update the stack of open-paren columns with ``line``; return whether a /* comment is open."""
    cols = _columns(line)
    i, quote = 0, ""
    while i < len(line):
        ch = line[i]
        if in_comment:
            if line.startswith("*/", i):
                in_comment = False
                i += 1
        elif quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif line.startswith("/*", i):
            in_comment = True
            i += 1
        elif line.startswith("//", i):
            break
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            stack.append(cols[i] + 1)
        elif ch == ")" and stack:
            stack.pop()
        i += 1
    return in_comment


def _indent(col: int) -> str:
    return "\t" * (col // TAB) + " " * (col % TAB)


def align_continuations(text: str) -> str:
    """Align lines that continue an open parenthesis under the column after it."""
    out = []
    stack: list[int] = []
    in_comment = False
    for line in text.split("\n"):
        stripped = line.lstrip(" \t")
        if stack and not in_comment and stripped and not stripped.startswith("#"):
            line = _indent(stack[-1]) + stripped
        if stripped.startswith("#") and not stack:
            out.append(line)
            continue
        in_comment = _scan(line, stack, in_comment)
        out.append(line)
    return "\n".join(out)
