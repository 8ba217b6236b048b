"""A KTAP (v1) parser for the guest's output, in the spirit of kunit_parser.

It takes console lines (which may carry kernel messages in between), finds
the KTAP document, and returns a tree of tests with their status and the
diagnostic lines that preceded each result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_VERSION = re.compile(r"^(?P<indent>\s*)(?:KTAP|TAP) version \d+\s*$")
_PLAN = re.compile(r"^\s*1\.\.(?P<n>\d+)\s*$")
_RESULT = re.compile(r"^(?P<indent>\s*)(?P<ok>ok|not ok) (?P<num>\d+)(?: -)?(?: (?P<name>[^#]*?))?\s*(?:#\s*(?P<directive>.*))?$")
_DIAG = re.compile(r"^\s*#\s?(?P<text>.*)$")
_SUBTEST = re.compile(r"^\s*# Subtest: (?P<name>.*)$")


@dataclass
class TestResult:
    """One KTAP test: its name, status (ok / not ok / skip / missing) and children."""

    name: str
    status: str = "missing"
    number: int = 0
    directive: str = ""
    diagnostics: list[str] = field(default_factory=list)
    subtests: list["TestResult"] = field(default_factory=list)
    plan: int | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "skip")


def _strip(line: str) -> str:
    return line.replace("\r", "").rstrip("\n")


def parse(lines: list[str]) -> TestResult:
    """Parse KTAP from console ``lines``; the root holds the top-level tests.

    Tests announced by the plan but never reported have status ``missing``.
    """
    lines = [_strip(line) for line in lines]
    start = next((i for i, line in enumerate(lines) if _VERSION.match(line) and not line[0].isspace()), None)
    root = TestResult(name="main", status="missing")
    if start is None:
        return root
    stack: list[tuple[int, TestResult]] = [(0, root)]
    pending_diag: list[str] = []
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" \t"))
        if _VERSION.match(line):
            if indent > stack[-1][0]:
                stack.append((indent, TestResult(name="")))
            continue
        if m := _SUBTEST.match(line):
            name = m["name"].strip()
            if indent > stack[-1][0]:  # a subtest header without a version line
                stack.append((indent, TestResult(name=name)))
            elif len(stack) > 1 and indent == stack[-1][0] and not stack[-1][1].name:
                stack[-1][1].name = name
            continue
        if m := _PLAN.match(line):
            for depth, node in reversed(stack):
                if depth == indent:
                    node.plan = int(m["n"])
                    break
            continue
        if m := _RESULT.match(line):
            # Close deeper levels: a result at this indent ends their subtest.
            finished: TestResult | None = None
            while len(stack) > 1 and stack[-1][0] > indent:
                finished = stack.pop()[1]
            parent = stack[-1][1]
            directive = (m["directive"] or "").strip()
            status = "ok" if m["ok"] == "ok" else "not ok"
            if directive.upper().startswith("SKIP"):
                status = "skip"
            name = (m["name"] or "").strip()
            test = finished if finished is not None and finished.name in ("", name) else TestResult(name=name)
            test.name = name or test.name
            test.status = status
            test.number = int(m["num"])
            test.directive = directive
            test.diagnostics = pending_diag + test.diagnostics
            pending_diag = []
            parent.subtests.append(test)
            continue
        if m := _DIAG.match(line):
            pending_diag.append(m["text"])
            continue
    # Anything still open was cut short (the guest died mid-test).
    while len(stack) > 1:
        node = stack.pop()[1]
        stack[-1][1].subtests.append(node)
    _fill_missing(root)
    root.status = "ok" if root.subtests and all(t.ok for t in root.subtests) and not _missing(root) else "not ok"
    return root


_KMSG = re.compile(r"^\[\s*\d+\.\d+\] ")


def document(lines: list[str], end: str = "msiforge-guest: done") -> list[str]:
    """The guest's KTAP document from console ``lines``, without the kernel messages printed in between."""
    out, inside = [], False
    for line in lines:
        if line.startswith("KTAP version"):
            inside = True
        if inside:
            if line.startswith(end):
                break
            if not _KMSG.match(line):
                out.append(line)
    return out


def _missing(node: TestResult) -> bool:
    return node.plan is not None and len(node.subtests) < node.plan


def _fill_missing(node: TestResult) -> None:
    for t in node.subtests:
        _fill_missing(t)
    if node.plan is not None:
        for i in range(len(node.subtests), node.plan):
            node.subtests.append(TestResult(name=f"#{i + 1}", status="missing", number=i + 1))
