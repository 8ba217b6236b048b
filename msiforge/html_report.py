"""``report.html``: a run or a bisect as one self-contained page (no network, no external file).

A run's page has the board x kernel x scenario matrix (``table#matrix``, a
``data-verdict`` on every cell), boot and scenario times as an SVG bar chart,
each failure's diagnostics and links to the logs (relative to the run
directory, so the page works wherever the directory is copied).  A bisect's
page draws the kernel ladder from good to bad and the path its steps took.
A few lines of script count the matrix's cells into the summary line: a
browser that rendered the page shows them (the tests read them back through
headless Chromium).
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from .cache import atomic_write
from .results import RunResult
from .verdict import Verdict

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
td.v-pass { background: #c8f0c8; } td.v-fail, td.v-oops, td.v-panic, td.v-bug, td.v-warn, td.v-call-trace,
td.v-load-failed, td.v-missing, td.v-scenario-timeout { background: #f6c0c0; }
td.v-vm-crashed, td.v-boot-timeout, td.v-build-failed { background: #f6e0a0; }
.diag { font-family: monospace; white-space: pre-wrap; }
svg text { font: 11px sans-serif; }
"""

_SCRIPT = """
<script>
const cells = document.querySelectorAll('#matrix td[data-verdict]');
let pass = 0; cells.forEach(c => { if (c.dataset.verdict === 'pass') pass++; });
document.getElementById('summary').textContent =
  `rendered: ${cells.length} results, ${pass} pass, ${cells.length - pass} not`;
</script>
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _link(path: str, base: Path, text: str) -> str:
    if not path:
        return ""
    try:
        rel = os.path.relpath(Path(path).resolve(), base.resolve())
    except ValueError:
        rel = path
    return f'<a href="{_e(rel)}">{_e(text)}</a>'


def _page(title: str, body: list[str]) -> str:
    return "\n".join(["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                      f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
                      f"<h1>{_e(title)}</h1>", *body, _SCRIPT, "</body></html>", ""])


def _chart(rows: list[tuple[str, float | None, list[tuple[str, float]]]]) -> str:
    """Horizontal bars: per kernel the boot (grey) then each scenario (blue shades), in seconds."""
    if not rows:
        return ""
    total = max((b or 0) + sum(s for _, s in sc) for _, b, sc in rows) or 1.0
    width, label, bar_h = 900, 260, 16
    scale = (width - label - 60) / total
    out = [f'<svg id="times" xmlns="http://www.w3.org/2000/svg" width="{width}" '
           f'height="{len(rows) * (bar_h + 6) + 24}">']
    for i, (name, boot, scen) in enumerate(rows):
        y = i * (bar_h + 6) + 4
        out.append(f'<text x="0" y="{y + 12}">{_e(name)}</text>')
        x = label
        parts = ([("boot", boot)] if boot else []) + scen
        for j, (what, secs) in enumerate(parts):
            w = max(secs * scale, 0.5)
            color = "#999" if what == "boot" else ("#4a7ebb", "#7aa6d6")[j % 2]
            out.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}">'
                       f"<title>{_e(what)}: {secs:.2f} s</title></rect>")
            x += w
        out.append(f'<text x="{x + 4:.1f}" y="{y + 12}">{sum(s for _, s in parts):.1f} s</text>')
    out.append(f'<text x="{label}" y="{len(rows) * (bar_h + 6) + 18}">grey: boot to init; blue: each scenario '
               "(seconds, as the host saw them)</text></svg>")
    return "\n".join(out)


def run_page(result: RunResult) -> str:
    """The HTML of a run's report."""
    base = result.run_dir
    scen = result.scenario_names
    body = [f'<p>boards {_e(", ".join(result.boards))}; {_e(result.accel)}'
            f'{"; run " + _e(result.run_id) if result.run_id else ""}'
            f'{"; shard " + _e(result.shard) if result.shard else ""}'
            f'{"; merged from " + _e(len(result.merged_from)) + " runs" if result.merged_from else ""}; '
            f'<b>{"PASSED" if result.passed else "FAILED"}</b></p>', '<p id="summary"></p>',
            '<h2>Matrix</h2><table id="matrix"><thead><tr><th>board</th><th>kernel</th><th>release</th>',
            *(f"<th>{_e(s)}</th>" for s in scen), "<th>verdict</th><th>boot</th><th>logs</th></tr></thead><tbody>"]
    for k in result.kernels:
        board = k.board or result.board
        by = {s.name: s for s in k.scenarios}
        cells = []
        for name in scen:
            s = by.get(name)
            if s is None:
                cells.append("<td></td>")
                continue
            n = sum(s.interrupts.values())
            tip = "; ".join(s.diagnostics[:3]) or Verdict(s.status).meaning
            cells.append(f'<td class="v-{_e(s.status)}" data-board="{_e(board)}" data-release="{_e(k.release)}" '
                         f'data-scenario="{_e(name)}" data-verdict="{_e(s.status)}" title="{_e(tip)}">'
                         f'{_e(s.status)}{f" ({n} irqs)" if n else ""}</td>')
        boot = f"{k.boot_seconds:.1f} s" if k.boot_seconds is not None else "-"
        logs = " ".join(x for x in (_link(k.console_log, base, "console"), _link(k.ktap_log, base, "ktap"),
                                    _link(k.build_log, base, "build")) if x)
        body.append(f"<tr><td>{_e(board)}</td><td>{_e(k.spec)}</td><td>{_e(k.release)}</td>{''.join(cells)}"
                    f'<td class="v-{_e(k.verdict)}">{_e(k.verdict)}</td><td>{boot}</td><td>{logs}</td></tr>')
    body.append("</tbody></table>")
    body.append("<h2>Times</h2>")
    body.append(_chart([(f"{k.board or result.board} {k.release}", k.boot_seconds,
                         [(s.name, s.seconds) for s in k.scenarios if s.seconds]) for k in result.kernels]))
    failures = []
    for k in result.kernels:
        lines = [f"{s.name}: {s.status}: {d}" for s in k.scenarios if not s.passed for d in s.diagnostics]
        if k.detail:
            lines.append(f"{k.verdict}: {k.detail}")
        if lines or not k.passed:
            failures.append(f'<h3>{_e(k.board or result.board)} {_e(k.release)}: {_e(k.verdict)}</h3>'
                            f'<div class="diag">{_e(chr(10).join(lines) or Verdict(k.verdict).meaning)}</div>'
                            f"<p>{_link(k.console_log or k.build_log, base, 'the log')}</p>")
    body += ["<h2>Failures</h2>", *(failures or ["<p>none</p>"])]
    return _page(f"msiforge run: {', '.join(result.boards)}", body)


def bisect_page(bis, out: Path) -> str:
    """The HTML of a bisect's report: the kernel ladder and the path of its steps."""
    order = {r: i for i, r in enumerate(bis.candidates)}
    width, step_h = 900, 26
    n = max(1, len(bis.candidates) - 1)
    xs = {r: 20 + (width - 40) * i / n for r, i in order.items()}
    svg = [f'<svg id="ladder" xmlns="http://www.w3.org/2000/svg" width="{width}" '
           f'height="{(len(bis.steps) + 2) * step_h + 40}">']
    for r, x in xs.items():
        svg.append(f'<line x1="{x:.1f}" y1="10" x2="{x:.1f}" y2="{(len(bis.steps) + 1) * step_h}" stroke="#ddd">'
                   f"<title>{_e(r)}</title></line>")
    prev = None
    for i, st in enumerate(bis.steps, 1):
        x, y = xs.get(st.release, 20), i * step_h
        color = "#c33" if st.differs else "#3a3"
        if prev:
            svg.append(f'<line x1="{prev[0]:.1f}" y1="{prev[1]}" x2="{x:.1f}" y2="{y}" stroke="#555"/>')
        svg.append(f'<circle class="step" data-release="{_e(st.release)}" data-differs="{str(st.differs).lower()}" '
                   f'cx="{x:.1f}" cy="{y}" r="6" fill="{color}"><title>{_e(st.release)}: {_e(st.observed)}'
                   f"</title></circle>")
        svg.append(f'<text x="{x + 9:.1f}" y="{y + 4}">{i}. {_e(st.release)}</text>')
        prev = (x, y)
    svg.append("</svg>")
    rows = [f'<tr><td>{i}</td><td>{_e(st.release)}</td><td class="v-{_e(st.verdict)}" data-verdict="{_e(st.verdict)}">'
            f'{_e(st.verdict)}</td><td>{_e(st.observed)}</td><td>{"differs" if st.differs else "same"}</td>'
            f'<td>{"cached" if st.cached else f"{st.seconds:.1f} s"}</td><td>{_link(st.log, out, "console")}</td></tr>'
            for i, st in enumerate(bis.steps, 1)]
    answer = (f"first kernel that differs from {bis.good}: <b>{_e(bis.first_different)}</b>"
              if bis.first_different else f"no kernel from {_e(bis.good)} to {_e(bis.bad)} differs")
    body = [f"<p>{_e(len(bis.candidates))} kernels, {_e(bis.boots)} boots (bound {_e(bis.max_boots)}), "
            f"{_e(bis.seconds)} s; {answer}</p>", '<p id="summary"></p>',
            "<h2>The ladder, and the steps' path</h2>", *svg,
            '<h2>Steps</h2><table id="matrix"><thead><tr><th>step</th><th>kernel</th><th>verdict</th><th>seen</th>'
            "<th>vs good</th><th>time</th><th>log</th></tr></thead><tbody>", *rows, "</tbody></table>"]
    return _page(f"msiforge bisect: {bis.scenario} on {bis.board}", body)


def write_run(result: RunResult, path: Path) -> None:
    atomic_write(path, run_page(result))


def write_bisect(bis, out: Path) -> None:
    atomic_write(out / "report.html", bisect_page(bis, out))
