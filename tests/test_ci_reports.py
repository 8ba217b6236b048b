"""The reports CI reads, from saved logs of real boots (tests/data/verdicts): no boot here.

Every verdict's saved kernel directory becomes one kernel of a run; the
reports are written as a run writes them (msiforge.reports) and read back by
the tools CI uses: kcidb-io's own schema, junitparser, the kernel's
``kunit.py parse``, headless Chromium.  The real runs, shards, merges and
reproducers are in tests/test_ci_vm.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msiforge import github, kcidb, merge, reparse, reports, runner
from msiforge.errors import InputError
from msiforge.verdict import Verdict

DATA = Path(__file__).parent / "data" / "verdicts"
CASES = sorted(p.name for p in DATA.iterdir())


def make_run(tmp_path: Path, cases: list[str], board: str = "q35-ims", name: str = "run", **header) -> Path:
    """A run directory of saved kernel directories, with the results.json a run writes."""
    run = tmp_path / name
    for case in cases:
        shutil.copytree(DATA / case, run / case)
    kernels = [{"release": c, "spec": f"debian:{c}", "board": board} for c in cases]
    (run / "results.json").write_text(json.dumps({"board": board, "accel": "TCG (test)", "run_id": f"id-{name}",
                                                  "kernels": kernels, **header}))
    result, _ = reparse.reparse(run)
    reports.write_all(result, ci=False)
    return run


def validate_kcidb(path: Path) -> dict:
    from kcidb_io.schema import LATEST

    data = json.loads(path.read_text())
    LATEST.validate(data)
    assert (data["version"]["major"], data["version"]["minor"]) == (5, 3)
    return data


def test_kcidb_statuses_follow_the_verdict_model(tmp_path):
    run = make_run(tmp_path, CASES)
    data = validate_kcidb(run / "kcidb.json")
    builds = {b["id"].split(":")[-1]: b for b in data["builds"]}
    tests = {t["id"]: t for t in data["tests"]}
    assert set(builds) == set(CASES) and all(t["id"].startswith("msiforge:") for t in data["tests"])

    def status(case: str, path: str) -> str:
        return next(t["status"] for t in tests.values() if t["build_id"].split(":")[-1] == case and t["path"] == path)

    # A build failure is a failed build; nothing under it ran.
    assert builds["build-failed"]["status"] == "FAIL" and "error:" in builds["build-failed"]["log_excerpt"]
    assert status("build-failed", "msiforge.boot") == "MISS" and status("build-failed", "msiforge.deliver") == "MISS"
    # Init never started: the boot is ERROR (it ran, its outcome says nothing of the code), its scenarios MISS.
    assert status("boot-timeout", "msiforge.boot") == "ERROR"
    assert status("boot-timeout", "msiforge.deliver") == "MISS"
    assert status("vm-crashed", "msiforge.boot") in ("PASS", "ERROR")
    # The code is wrong: FAIL; a pass is PASS, with the boot time as its number.
    assert status("fail", "msiforge.deliver") == "FAIL" and status("scenario-timeout", "msiforge.boot") == "PASS"
    boot = next(t for t in tests.values() if t["build_id"].split(":")[-1] == "pass" and t["path"] == "msiforge.boot")
    assert boot["status"] == "PASS" and boot["number"]["unit"] == "s" and boot["number"]["value"] > 0
    for case in ("panic", "oops", "bug", "warn", "call-trace", "kasan", "atomic-sleep", "lockdep"):
        assert builds[case]["status"] == "PASS"
    for t in tests.values():
        if t["path"].count(".") == 1 and t["path"] != "msiforge.boot":
            assert t["status"] == Verdict(t["misc"]["verdict"]).kcidb


def test_kcidb_numbers_are_the_interrupts_the_guest_counted(tmp_path):
    """The guest says "DEV: interrupts: N" after each step; the test's number is their sum."""
    run = make_run(tmp_path, ["pass"])
    log = run / "pass" / "console.log"
    lines = log.read_text().split("\n")
    start = next(i for i, line in enumerate(lines) if "# Subtest: deliver" in line)
    first = next(i for i in range(start, len(lines)) if re.match(r"\s+ok 1 \S+", lines[i]))
    dev = lines[first].split()[-1]
    # As run.sh.j2 prints it, before the device's result line.
    lines.insert(first, f"    # {dev}: interrupts: 96\r")
    log.write_text("\n".join(lines))
    result, _ = reparse.reparse(run)
    deliver = next(s for s in result.kernels[0].scenarios if s.name == "deliver")
    assert deliver.interrupts and sum(deliver.interrupts.values()) == 96
    assert not any("interrupts:" in d for d in deliver.diagnostics)
    data = kcidb.from_run(result)
    t = next(t for t in data["tests"] if t["path"] == "msiforge.deliver")
    assert t["number"] == {"value": 96, "unit": "interrupts"}


def test_junit_reads_back_with_junitparser(tmp_path):
    from junitparser import Error, Failure, JUnitXml

    run = make_run(tmp_path, ["pass", "fail", "build-failed", "scenario-timeout"])
    xml = JUnitXml.fromfile(str(run / "junit.xml"))
    cases = {}
    for suite in xml:
        for case in suite:
            cases[(case.classname, case.name)] = case
    assert ("msiforge.q35-ims.pass", "deliver") in cases
    assert len(cases) == sum(len(json.loads((DATA / c / "events.json").read_text())["scenarios"])
                             for c in ["pass", "fail", "build-failed", "scenario-timeout"])
    fail = [r for r in cases[("msiforge.q35-ims.fail", "deliver")].result if isinstance(r, Failure)]
    # The message starts with what the failing device said, not a passing one's report.
    assert fail and fail[0].message.startswith("fail: pmsi0: 'burst 0 8 24' failed"), fail[0].message
    err = [r for r in cases[("msiforge.q35-ims.build-failed", "deliver")].result if isinstance(r, Error)]
    assert err and err[0].type == "build-failed"
    assert all(c.time is not None for c in cases.values())


def test_results_ktap_uses_directives_and_kunit_parses_it(tmp_path):
    from msiforge import source_kernels

    run = make_run(tmp_path, ["pass", "fail", "build-failed", "scenario-timeout", "boot-timeout"])
    text = (run / "results.ktap").read_text()
    assert text.startswith("KTAP version 1\n1..5\n")
    assert re.search(r"not ok \d+ \S+ # TIMEOUT guest script not done within", text)
    assert re.search(r"not ok \d+ deliver # ERROR module build failed", text)
    assert re.search(r"not ok \d+ deliver # ERROR no 'msiforge-guest: start'", text)
    # Diagnostics come before the result they explain.
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if "handler count" in line or "expected" in line)
    assert re.match(r"\s+(not )?ok ", next(line for line in lines[i:] if "ok " in line))
    kunit = source_kernels.pristine("6.12").tree / "tools" / "testing" / "kunit" / "kunit.py"
    proc = subprocess.run([sys.executable, str(kunit), "parse", str(run / "results.ktap")],
                          capture_output=True, text=True, timeout=120)
    assert "[ERROR]" not in proc.stdout and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert "Ran " in proc.stdout and proc.returncode == 1  # failed tests: kunit's own exit status
    ok = make_run(tmp_path, ["pass"], name="ok")
    proc = subprocess.run([sys.executable, str(kunit), "parse", str(ok / "results.ktap")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "[PASSED] deliver" in proc.stdout, proc.stdout


def test_report_html_renders_in_headless_chromium_and_the_matrix_reads_back(tmp_path):
    run = make_run(tmp_path, ["pass", "fail", "oops"])
    chromium = shutil.which("chromium")
    assert chromium, "chromium: make test's set-up installs it (hostprogs tests_only)"
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                           (run / "report.html").resolve().as_uri()], capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    # The page's script ran in the browser: it counted the matrix's cells.
    assert re.search(r'id="summary">rendered: \d+ results, \d+ pass, \d+ not<', dom), dom[:2000]
    cells = re.findall(r'data-release="([^"]+)" data-scenario="([^"]+)" data-verdict="([^"]+)"', dom)
    result, _ = reparse.reparse(run)
    want = [(k.release, s.name, str(s.status)) for k in result.kernels for s in k.scenarios]
    assert sorted(cells) == sorted(want)
    assert '<svg id="times"' in dom and 'href="fail/console.log"' in dom


def test_github_actions_summary_and_annotations(tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path, ["pass", "fail"])
    result, _ = reparse.reparse(run)
    github.report_run(result)
    assert capsys.readouterr().out == ""  # not under GitHub Actions: nothing changes
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    github.report_run(result)
    out = capsys.readouterr().out.splitlines()
    text = summary.read_text()
    assert "| board | kernel | deliver" in text and "❌ fail" in text and "✅ pass" in text
    errors = [line for line in out if line.startswith("::error ")]
    assert errors and all("file=" in e and "line=" in e for e in errors)
    board = github.board_file("q35-ims", None)
    assert board is not None and board.is_file() and f"file={github._escape_prop(github._shown(board))}" in errors[0]
    line = int(re.search(r"line=(\d+)", errors[0])[1])
    failing = next(s for s in result.kernels[1].scenarios if not s.passed)
    dev = next(d for d, st in failing.devices.items() if st != "ok")
    assert re.search(rf"name:\s*{dev}\b", board.read_text().splitlines()[line - 1])


def test_build_errors_are_annotated_at_the_generated_file_and_name_the_template(tmp_path, monkeypatch):
    """The build log of a real failed build (a broken template, tests/test_vm.py) names file:line."""
    kdir = tmp_path / "k"
    (kdir / "build").mkdir(parents=True)
    (kdir / "build" / "manifest.json").write_text(json.dumps(
        {"files": {"msiforge_ims0.c": "module/driver/backends/module-local.c.j2"}}))
    (kdir / "build" / "build.log").write_text(
        "  CC [M]  /x/build/msiforge_ims0.o\n"
        "/x/build/msiforge_ims0.c:121:9: error: expected specifier-qualifier-list before 'static'\n"
        "  121 |         static int x;\n")
    monkeypatch.chdir(tmp_path)
    out = github.build_annotations("6.12.117+deb12-amd64", str(kdir / "build" / "build.log"))
    assert out == ["::error file=k/build/msiforge_ims0.c,line=121,col=9,title=W=1 build for 6.12.117+deb12-amd64::"
                   "error: expected specifier-qualifier-list before 'static' "
                   "(generated from templates/module/driver/backends/module-local.c.j2)"]
    assert github.command("warning", "a\nb%", title="x:y,z") == "::warning title=x%3Ay%2Cz::a%0Ab%25"


@given(st.integers(1, 40), st.integers(1, 9))
def test_shards_are_disjoint_cover_the_matrix_and_keep_its_order(n_items, n):
    items = [f"k{i}" for i in range(n_items)]
    slices = [runner.shard_of(items, (k, n)) for k in range(1, n + 1)]
    assert sorted(x for s in slices for x in s) == sorted(items)
    assert sum(len(s) for s in slices) == n_items
    assert all(s == sorted(s, key=items.index) for s in slices)
    assert max(map(len, slices)) - min(map(len, slices)) <= 1


def test_shard_argument_errors():
    for bad in ("0/2", "3/2", "1", "a/b", "1/0"):
        with pytest.raises(InputError, match="--shard"):
            runner.parse_shard(bad)
    assert runner.parse_shard("2/4") == (2, 4)


def test_merge_keeps_the_matrix_order_and_refuses_gaps_and_duplicates(tmp_path):
    matrix = ["debian:pass", "debian:fail", "debian:oops", "debian:warn"]
    a = make_run(tmp_path, ["pass", "oops"], name="a", shard="1/2", matrix=matrix)
    b = make_run(tmp_path, ["fail", "warn"], name="b", shard="2/2", matrix=matrix)
    out = tmp_path / "merged"
    result = merge.merge([b, a], out)
    assert [k.release for k in result.kernels] == ["pass", "fail", "oops", "warn"]
    for f in reports.FILES:
        assert (out / f).is_file(), f
    validate_kcidb(out / "kcidb.json")
    again, diffs = reparse.reparse(out)
    assert diffs == [] and [k.verdict for k in again.kernels] == ["pass", "fail", "oops", "warn"]
    assert json.loads((out / "results.json").read_text())["merged_from"] == [str(b.resolve()), str(a.resolve())]
    # Each kernel keeps its shard's KCIDB ids.
    ids = {x["id"] for x in json.loads((out / "kcidb.json").read_text())["builds"]}
    shard_ids = {x["id"] for d in (a, b) for x in json.loads((d / "kcidb.json").read_text())["builds"]}
    assert ids == shard_ids
    with pytest.raises(InputError, match="shard.*2/2 missing"):
        merge.merge([a], tmp_path / "m2")
    with pytest.raises(InputError, match="in both"):
        merge.merge([a, a, b], tmp_path / "m3")
    with pytest.raises(InputError, match="exists already"):
        merge.merge([a, b], out)
    assert not (tmp_path / "m2").exists() and not list(tmp_path.glob(".m*"))


def test_merge_of_two_boards_nests_their_kernels(tmp_path):
    a = make_run(tmp_path, ["pass"], board="q35-ims", name="a")
    b = make_run(tmp_path, ["pass"], board="q35-remap", name="b")
    result = merge.merge([a, b], tmp_path / "m")
    assert [(k.board, k.release) for k in result.kernels] == [("q35-ims", "pass"), ("q35-remap", "pass")]
    assert (tmp_path / "m" / "q35-remap" / "pass" / "console.log").is_file()
    data = validate_kcidb(tmp_path / "m" / "kcidb.json")
    assert len(data["builds"]) == 2 and len({b["id"] for b in data["builds"]}) == 2
    proc = subprocess.run([sys.executable, "-m", "msiforge.cli", "parse", str(tmp_path / "m")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "q35-remap" in proc.stdout, proc.stdout + proc.stderr
