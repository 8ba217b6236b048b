"""Every report of a run directory, written in one place from one :class:`RunResult`.

- ``results.json``: msiforge's own record (``msiforge parse`` re-derives it);
- ``junit.xml``: for GitLab and Jenkins (classname ``msiforge.<board>.<release>``);
- ``results.ktap``: the whole run as KTAP (the guest's own is ``<release>/ktap.txt``);
- ``kcidb.json``: KernelCI's KCIDB v5.3 (msiforge/kcidb.py);
- ``report.html``: one self-contained page (msiforge/html_report.py);
- under GitHub Actions, a step summary and annotations (msiforge/github.py).
"""

from __future__ import annotations

from . import github, html_report, kcidb
from .results import RunResult, write_json, write_junit, write_ktap

FILES = ("results.json", "junit.xml", "results.ktap", "kcidb.json", "report.html")


def write_all(result: RunResult, board_path: str | None = None, ci: bool = True) -> None:
    """Write every report of ``result`` into its run directory (each file atomically);
    with ``ci``, the CI's own (a GitHub step summary and annotations) too."""
    d = result.run_dir
    write_json(result, d / "results.json")
    write_junit(result, d / "junit.xml")
    write_ktap(result, d / "results.ktap")
    kcidb.write(kcidb.from_run(result), d / "kcidb.json")
    html_report.write_run(result, d / "report.html")
    if ci:
        github.report_run(result, board_path)


def write_bisect(bis, out) -> None:
    """A bisect's reports beside its bisect.json: kcidb.json and report.html."""
    kcidb.write(kcidb.from_bisect(bis, out), out / "kcidb.json")
    html_report.write_bisect(bis, out)
