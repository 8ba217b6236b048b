"""The KTAP parser, on guest output with kernel messages mixed in."""

from msiforge.vmtests import ktap

GOOD = """\
[    1.2] some boot line
msiforge-guest: start
KTAP version 1
1..2
    KTAP version 1
    # Subtest: load
    1..2
[    1.9] msiforge_ims0: loading out-of-tree module taints kernel.
    # ims0: strategy module-local
    ok 1 ims0
    ok 2 pmsi0
ok 1 load
    KTAP version 1
    # Subtest: deliver
    1..2
    # ims0: slot 3 handler count: got 2, expected 3
    not ok 1 ims0
    ok 2 pmsi0 # SKIP not supported
not ok 2 deliver
msiforge-guest: done
"""


def test_results_names_and_diagnostics():
    root = ktap.parse(GOOD.splitlines())
    assert [t.name for t in root.subtests] == ["load", "deliver"]
    load, deliver = root.subtests
    assert load.status == "ok" and [s.status for s in load.subtests] == ["ok", "ok"]
    assert load.subtests[0].diagnostics == ["ims0: strategy module-local"]
    assert deliver.status == "not ok"
    assert deliver.subtests[0].diagnostics == ["ims0: slot 3 handler count: got 2, expected 3"]
    assert deliver.subtests[1].status == "skip"
    assert root.status == "not ok"


def test_cut_short_output_marks_missing_tests():
    cut = GOOD.split("    KTAP version 1\n    # Subtest: deliver")[0]
    root = ktap.parse(cut.splitlines())
    assert [t.name for t in root.subtests][0] == "load"
    assert root.subtests[1].status == "missing"
    assert root.status == "not ok"


def test_crlf_and_no_ktap():
    assert ktap.parse(["no ktap here\r"]).subtests == []
    root = ktap.parse([line + "\r" for line in GOOD.splitlines()])
    assert root.subtests[0].name == "load"
