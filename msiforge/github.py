"""GitHub Actions: a step summary and annotations, only when ``GITHUB_ACTIONS=true``.

- ``$GITHUB_STEP_SUMMARY`` gets a Markdown board/kernel x scenario table and
  each failure's first diagnostics;
- build errors (and W=1 warnings, which fail a build) are ``::error``
  annotations at the generated file and line, naming the template the file
  came from (the tree's manifest.json);
- failed scenarios are ``::error`` annotations at the board file, on the
  line of the failing device when the file names it.

Elsewhere nothing changes: terminals and logs get no workflow commands.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .results import RunResult
from .verdict import Verdict

#: gcc's diagnostic lines in a build log: file:line:col: error|warning: message
_GCC = re.compile(r"^(?P<file>[^\s:]+\.[ch]):(?P<line>\d+):(?:(?P<col>\d+):)? (?P<kind>error|warning): (?P<msg>.*)$")


def active() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def _escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_prop(s: str) -> str:
    return _escape_data(s).replace(":", "%3A").replace(",", "%2C")


def command(kind: str, message: str, **props: str | int) -> str:
    """One workflow command line, e.g. ``::error file=a.c,line=3,title=T::message``."""
    p = ",".join(f"{k}={_escape_prop(str(v))}" for k, v in props.items() if v not in (None, ""))
    return f"::{kind}{' ' + p if p else ''}::{_escape_data(message)}"


def _shown(path: Path) -> str:
    """A path as GitHub matches it against the checkout: relative to the working directory if inside it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def board_file(board: str, board_path: str | None) -> Path | None:
    """The board's YAML file: the one given, or the built-in board's file in the package."""
    from .board import shipped_board_file

    if board_path and Path(board_path).is_file():
        return Path(board_path)
    return shipped_board_file(board)


def _device_line(path: Path, device: str) -> int:
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if re.match(rf"\s*-?\s*name:\s*['\"]?{re.escape(device)}['\"]?\s*$", line):
            return n
    return 1


def build_annotations(release: str, build_log: str) -> list[str]:
    """``::error`` lines for each compiler diagnostic in a failed build's log."""
    log = Path(build_log)
    if not log.is_file():
        return []
    tree = log.parent
    files = {}
    if (tree / "manifest.json").is_file():
        files = json.loads((tree / "manifest.json").read_text()).get("files", {})
    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = _GCC.match(line.strip())
        if not m:
            continue
        # The log names the files where they were built; the run directory may have moved since.
        src = tree / Path(m["file"]).name
        origin = files.get(src.name)
        msg = f"{m['kind']}: {m['msg']}" + (f" (generated from templates/{origin})" if origin else "")
        out.append(command("error", msg, file=_shown(src), line=m["line"], col=m["col"] or "",
                           title=f"W=1 build for {release}"))
    return out


def annotations(result: RunResult, board_path: str | None = None) -> list[str]:
    """Every annotation of a run: build errors at the generated files, failures at the board file."""
    out = []
    for k in result.kernels:
        board = k.board or result.board
        if Verdict(k.verdict) is Verdict.BUILD_FAILED:
            out += build_annotations(k.release, k.build_log) or [
                command("error", k.detail or "the modules did not build", title=f"W=1 build for {k.release}")]
            continue
        bf = board_file(board, board_path if board == result.board else None)
        for s in k.scenarios:
            if s.passed:
                continue
            failing = [d for d, st in s.devices.items() if st != "ok"]
            line = _device_line(bf, failing[0]) if bf and failing else 1
            why = "; ".join(s.diagnostics[:3]) or (k.detail or Verdict(s.status).meaning)
            out.append(command("error", f"{s.status}: {why}", file=_shown(bf) if bf else "", line=line,
                               title=f"{board} {s.name} on {k.release}"))
    return out


def summary(result: RunResult) -> str:
    """The step summary: the matrix as a Markdown table, then the failures."""
    scen = result.scenario_names
    icon = {True: "✅", False: "❌"}
    lines = [f"### msiforge: {', '.join(result.boards)} — {'PASSED' if result.passed else 'FAILED'}", "",
             f"{result.accel}" + (f"; shard {result.shard}" if result.shard else ""), "",
             "| board | kernel | " + " | ".join(scen) + " | verdict | boot |",
             "|---|---|" + "---|" * len(scen) + "---|---|"]
    for k in result.kernels:
        by = {s.name: s for s in k.scenarios}
        cells = [f"{icon[by[n].passed]} {by[n].status}" if n in by else "" for n in scen]
        boot = f"{k.boot_seconds:.1f} s" if k.boot_seconds is not None else "-"
        lines.append(f"| {k.board or result.board} | `{k.spec}` {k.release} | " + " | ".join(cells) +
                     f" | {icon[k.passed]} {k.verdict} | {boot} |")
    fails = [f"- **{k.board or result.board} {k.release} {s.name}**: {'; '.join(s.diagnostics[:2]) or s.status}"
             for k in result.kernels for s in k.scenarios if not s.passed]
    if fails:
        lines += ["", "Failures:", *fails[:50]]
    return "\n".join(lines) + "\n"


def report_run(result: RunResult, board_path: str | None = None) -> None:
    """Under GitHub Actions: print the annotations and append the step summary; else nothing."""
    if not active():
        return
    for line in annotations(result, board_path):
        print(line, flush=True)
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(summary(result) + "\n")
