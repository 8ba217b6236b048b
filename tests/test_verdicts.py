"""Verdicts decided offline: saved console logs and events of real boots (tests/data/verdicts), no boot here.

Each directory under tests/data/verdicts is one kernel's directory of a real
run (console.log, events.json), named after the verdict it must give (a
suffix after the verdict names a variant).  The logs come from msiforge's own
fault-injection runs (``--guest-fault``) and scenario runs on Debian 6.12, a
self-built arm64 6.12 and a self-built x86 6.12 debug kernel (``source:6.12+debug``:
kasan, atomic-sleep, lockdep; kmemleak from the leak mutant's churn).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from msiforge import reparse
from msiforge.verdict import BAD, GOOD, SKIP, Events, Verdict, decide, read_log

DATA = Path(__file__).parent / "data" / "verdicts"
CASES = sorted(p.name for p in DATA.iterdir() if p.is_dir())


def _expected(case: str) -> Verdict:
    names = sorted((v.value for v in Verdict), key=len, reverse=True)
    return Verdict(next(n for n in names if case == n or case.startswith(n + "-")))


def _decide(case: str):
    return decide(read_log(DATA / case / "console.log"), Events.load(DATA / case / "events.json"))


def test_every_verdict_has_a_saved_log():
    # "missing" is a scenario's verdict only (the kernel's is fail): fail-missing-scenario.
    assert {_expected(c) for c in CASES} == set(Verdict) - {Verdict.MISSING}


@pytest.mark.parametrize("case", CASES)
def test_saved_log_gives_its_verdict(case):
    d = _decide(case)
    assert d.verdict == _expected(case), d.detail
    assert len(d.scenarios) == len(Events.load(DATA / case / "events.json").scenarios)


# What each saved log must say besides its verdict.
DETAILS = {
    "panic": "Kernel panic - not syncing: Fatal exception in interrupt",
    "oops": "Oops: ",
    "bug": "BUG: scheduling while atomic",
    "kasan": "BUG: KASAN: slab-out-of-bounds in msiforge_fault_init",
    "atomic-sleep": "BUG: sleeping function called from invalid context at ",
    "lockdep": "WARNING: possible circular locking dependency detected",
    "kmemleak": "unreferenced object 0x",
    "warn": "WARNING: CPU: 0 PID: ",
    "call-trace": "Call Trace:",
    "boot-timeout": "no 'msiforge-guest: start' within 20 s",
    "scenario-timeout": "guest script not done within 20 s",
    "vm-crashed": "QEMU exited (status 6)",
    "load-failed": "did not bind its edu device",
    "build-failed": "module build failed: ",
}


@pytest.mark.parametrize("case", sorted(DETAILS))
def test_saved_log_detail(case):
    d = _decide(case)
    assert DETAILS[case] in d.detail
    assert "; then" not in d.detail  # no run ended in a hang after its report


def test_scenarios_of_saved_logs():
    by = {s.name: s for s in _decide("fail").scenarios}
    assert [by[n].status for n in ("deliver", "mask", "affinity", "groups", "unload")] == \
        ["fail", "fail", "fail", "fail", "pass"]
    assert any("failed" in d for d in by["deliver"].diagnostics)
    assert {s.status for s in _decide("load-failed").scenarios} == {"load-failed"}
    # The guest finished: an oops or WARN fails the kernel, its scenarios keep their own verdicts.
    assert {s.name: s.status for s in _decide("warn").scenarios}["unload"] == "fail"
    # A boot that never finished: every scenario gets the boot's verdict.
    assert {s.status for s in _decide("panic").scenarios} == {"panic"}
    assert {s.status for s in _decide("boot-timeout").scenarios} == {"boot-timeout"}
    missing = {s.name: s.status for s in _decide("fail-missing-scenario").scenarios}
    assert missing["stress"] == "missing" and missing["deliver"] == "pass"
    assert {s.name: s.seconds for s in _decide("pass").scenarios}["groups"] == 0.948


def _events(ending: str = "done", **kw) -> Events:
    return Events(ending=ending, scenarios=["deliver"], boot_timeout=20, scenario_timeout=30, **kw)


KTAP_OK = ["msiforge-guest: start", "KTAP version 1", "1..1", "ok 1 deliver", "msiforge-guest: done"]


def test_precedence():
    warn = "[    5.1] WARNING: CPU: 1 PID: 9 at x.c:1 f+0x1/0x2"
    bug = "[    5.2] BUG: kernel NULL pointer dereference, address: 0000000000000000"
    oops = "[    5.3] Oops: 0002 [#1] PREEMPT SMP NOPTI"
    assert decide(KTAP_OK, _events()).verdict == "pass"
    assert decide([warn, bug, *KTAP_OK], _events()).verdict == "bug"
    assert decide([warn, bug, oops, *KTAP_OK], _events()).verdict == "oops"
    # A debug kernel's reports: each its own verdict, over the generic BUG / WARN it also matches.
    kasan = "[    6.0] BUG: KASAN: slab-out-of-bounds in msiforge_fault_init+0x5f/0x100 [msiforge_fault]"
    sleep = "[    6.1] BUG: sleeping function called from invalid context at kernel/time/sleep_timeout.c:1"
    lockdep = "[    6.2] WARNING: possible circular locking dependency detected"
    rcu = "[    6.3] WARNING: suspicious RCU usage"
    leak = "    # kmemleak: 1 unreferenced object(s) from msiforge's modules: unreferenced object " \
           "0xffff888003a1c000 (size 64): from [<ffffffffc0001234>] msiforge_ims0_alloc+0x4/0x9 [msiforge_ims0]"
    for lines, verdict in [([kasan], "kasan"), ([sleep], "atomic-sleep"), ([lockdep], "lockdep"),
                           ([rcu], "lockdep"), ([leak], "kmemleak"), ([warn, lockdep], "lockdep"),
                           ([lockdep, bug], "bug"), ([leak, lockdep], "lockdep"), ([leak, warn], "kmemleak"),
                           ([sleep, kasan], "kasan"), ([kasan, oops], "oops")]:
        d = decide([*lines, *KTAP_OK], _events())
        assert d.verdict == verdict, (lines, d.detail)
    assert decide([lockdep, *KTAP_OK], _events()).detail == "WARNING: possible circular locking dependency detected"
    assert decide([kasan], _events()).detail.startswith("BUG: KASAN: slab-out-of-bounds in msiforge_fault_init")
    # A report outranks how the run ended; a hang after it stays in the detail.
    d = decide([oops], _events("timeout", started=True))
    assert (d.verdict, d.detail) == ("oops", "Oops: 0002 [#1] PREEMPT SMP NOPTI; then scenario-timeout: "
                                              "guest script not done within 30 s")
    assert decide([oops], _events("exited", exit_status=0)).detail == "Oops: 0002 [#1] PREEMPT SMP NOPTI"
    d = decide(["msiforge-guest: start"], _events("timeout", started=True))
    assert (d.verdict, d.scenarios[0].status) == ("scenario-timeout", "scenario-timeout")
    d = decide([], _events("build-failed", build_error="module build failed: x.c:1: error"))
    assert (d.verdict, d.detail, d.scenarios[0].status) == ("build-failed", "module build failed: x.c:1: error",
                                                            "build-failed")
    not_ok = [line.replace("ok 1", "not ok 1") for line in KTAP_OK]
    assert decide(not_ok, _events()).verdict == "fail"
    assert decide(KTAP_OK[:3], _events()).scenarios[0].status == "missing"


def test_severity_bisect_codes_and_junit_are_one_table():
    assert [v for v in sorted(Verdict, key=lambda v: v.rank)][0] is Verdict.PANIC
    assert len({v.rank for v in Verdict}) == len(Verdict)
    assert {v for v in Verdict if v.bisect_code == SKIP} == {"build-failed", "boot-timeout", "vm-crashed"}
    assert {v for v in Verdict if v.bisect_code == GOOD} == {Verdict.PASS}
    assert all(v.bisect_code in (GOOD, BAD, SKIP) for v in Verdict)
    assert {v for v in Verdict if v.junit == "error"} == {v for v in Verdict if v.cannot_say}
    assert Verdict.PASS.junit is None and Verdict.WARN.junit == "failure"
    assert json.dumps({"v": Verdict.OOPS}) == '{"v": "oops"}' and f"{Verdict.OOPS}" == "oops"


def _as_run(tmp_path: Path, cases: list[str]) -> Path:
    run = tmp_path / "run"
    for case in cases:
        shutil.copytree(DATA / case, run / case)
    return run


def test_parse_rederives_a_run_directory(tmp_path):
    run = _as_run(tmp_path, ["pass", "oops"])
    result, diffs = reparse.reparse(run)
    assert [(k.release, k.verdict) for k in result.kernels] == [("oops", "oops"), ("pass", "pass")]
    assert diffs == []
    # A results.json written by an older rule is reported, not trusted.
    (run / "results.json").write_text(json.dumps({"board": "b", "accel": "TCG", "kernels": [
        {"release": "pass", "spec": "debian:6.12", "verdict": "fail",
         "scenarios": [{"name": "deliver", "status": "fail"}]}]}))
    result, diffs = reparse.reparse(run)
    assert diffs == ["pass: results.json says fail, the log says pass",
                     "pass deliver: results.json says fail, the log says pass"]
    # The kernels come in the run's order (results.json), then any it does not list.
    assert [(k.release, k.spec) for k in result.kernels] == [("pass", "debian:6.12"), ("oops", "oops")]


def _msiforge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "msiforge.cli", *args], capture_output=True, text=True, timeout=60)


def test_msiforge_parse_command(tmp_path):
    run = _as_run(tmp_path, ["pass"])
    proc = _msiforge("parse", str(run))
    assert proc.returncode == 0, proc.stderr
    assert "PASSED" in proc.stdout and "deliver" in proc.stdout
    proc = _msiforge("parse", "--json", str(_as_run(tmp_path / "2", ["vm-crashed"])))
    assert proc.returncode == 1
    k = json.loads(proc.stdout)["kernels"][0]
    assert (k["verdict"], k["detail"]) == ("vm-crashed", "QEMU exited (status 6)")
    # One kernel's directory works too; a directory that is not a run is a one-line error, exit 2.
    assert _msiforge("parse", str(DATA / "warn")).returncode == 1
    proc = _msiforge("parse", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not a msiforge run directory" in proc.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "events.json").write_text('{"ending": "sideways", "scenarios": []}')
    proc = _msiforge("parse", str(bad))
    assert proc.returncode == 2 and "ending 'sideways'" in proc.stderr and "Traceback" not in proc.stderr


def test_readme_verdict_table_says_what_the_code_does():
    import re

    text = (Path(__file__).parent.parent / "README.md").read_text()
    rows = re.findall(r"^\| `([a-z-]+)` \| [^|]+ \| (\d+) \| ([a-z-]+) \|$", text, re.M)
    assert [(v, int(code), kind) for v, code, kind in rows] == \
        [(v.value, v.bisect_code, v.junit or "-") for v in sorted(Verdict, key=lambda v: v.rank)]
